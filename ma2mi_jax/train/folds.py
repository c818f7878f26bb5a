"""Cross-validation folds trained together: fold-stacked state, one vmapped jit step, sequential mode.

Every leaf of a `FoldState` carries a leading fold axis F. The per-fold step is a pure function of
(state, batch, fold key, frozen inputs shared by all folds); `FoldGroupRunner` either `jax.vmap`s
it over the F folds of a group (one compiled step for all of them, the fold axis sharded over a
"fold" mesh axis when there are several devices), or, in sequential mode, calls the un-vmapped step
on one fold at a time. Both modes see the same per-fold batches and keys, so they give the same
numbers up to float rounding. With `finetune.aux_rec_weight > 0` a fold's params also hold the
pre-trained DiT ("dit", trained per fold) and the frozen VAE's parameters are the frozen inputs.

Frozen encoders (finetune.freeze_position / freeze_action) get zero updates and no optimiser state
(`optim.make_optimizer(..., trainable)`), and their BatchNorm layers run in inference mode: they
normalise with the stored running statistics, which therefore stay exactly as initialised. A frozen
encoder is then the same function in training and at test time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

PyTree = Any
FOLD_AXIS = "fold"
# Encoder module names inside MIACClassifier.miacnet, keyed by the finetune.freeze_* switch.
FREEZABLE = {"freeze_position": "position_encoder", "freeze_action": "action_encoder"}


class FoldState(flax.struct.PyTreeNode):
    """Training state of one fold, or of F folds when every leaf has a leading fold axis."""

    step: jax.Array  # int32[] (stacked: int32[F])
    params: PyTree  # {"classifier": MIACClassifier params, optional "dit": DiT params}
    batch_stats: PyTree  # MIACClassifier batch statistics
    opt_state: PyTree


def frozen_modules(finetune_cfg: Any) -> tuple[str, ...]:
    """Names of the encoders to freeze from finetune.freeze_position / freeze_action."""
    return tuple(name for key, name in FREEZABLE.items() if bool(finetune_cfg.get(key, False)))


def trainable_fn(frozen: Sequence[str]) -> Callable[[tuple[str, ...]], bool]:
    """`trainable(path)` for `optim.make_optimizer`: False for parameters under a frozen module."""
    frozen = tuple(frozen)
    return lambda path: not any(name in path for name in frozen)


@contextlib.contextmanager
def frozen_batchnorm(frozen: Sequence[str]) -> Iterator[None]:
    """Within this context, BatchNorm layers under a frozen module normalise with running statistics.

    Flax's BatchNorm takes `use_running_average` from its constructor, so the interceptor computes
    the inference-mode normalisation itself, (x - mean) / sqrt(var + eps) * scale + bias, and never
    writes the running statistics.
    """
    frozen = tuple(frozen)

    def interceptor(next_fun, args, kwargs, context):
        mod = context.module
        if not (
            frozen
            and isinstance(mod, nn.BatchNorm)
            and context.method_name == "__call__"
            and any(name in mod.path for name in frozen)
            and not mod.is_initializing()
        ):
            return next_fun(*args, **kwargs)
        x = args[0]  # [..., C]
        mean = mod.get_variable("batch_stats", "mean")
        var = mod.get_variable("batch_stats", "var")
        y = (x.astype(jnp.float32) - mean) * jax.lax.rsqrt(var + mod.epsilon)
        if mod.use_scale:
            y = y * mod.get_variable("params", "scale")
        if mod.use_bias:
            y = y + mod.get_variable("params", "bias")
        return y.astype(mod.dtype or x.dtype)

    if not frozen:
        yield
        return
    with nn.intercept_methods(interceptor):
        yield


def broadcast_folds(tree: PyTree, num_folds: int) -> PyTree:
    """Copy a single-fold pytree F times along a new leading axis."""
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (num_folds, *jnp.shape(x))), tree)


def take_fold(tree: PyTree, index: int) -> PyTree:
    """Leaf-wise `x[index]`: one fold out of a stacked pytree."""
    return jax.tree.map(lambda x: x[index], tree)


def stack_folds(trees: Sequence[PyTree]) -> PyTree:
    """Stack single-fold pytrees along a new leading fold axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def fold_key(seed: int, fold_index: int) -> jax.Array:
    """The random key of fold `fold_index` (its index among all folds of the run); per step: fold_in(step)."""
    return jax.random.fold_in(jax.random.key(seed), fold_index)


def init_fold_state(
    variables: dict, tx: optax.GradientTransformation, num_folds: int, extra_params: dict | None = None
) -> FoldState:
    """Every fold starts from the same classifier variables (and extra params, e.g. the DiT)."""
    params = {"classifier": variables["params"], **(extra_params or {})}
    single = FoldState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
    )
    return broadcast_folds(single, num_folds)


# (params {"classifier", "dit", ...}, condition c [B,C], batch, key, frozen inputs) -> scalar loss
AuxLoss = Callable[[PyTree, jax.Array, dict, jax.Array, PyTree], jax.Array]


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    loss_fn: Callable[[jax.Array, jax.Array], jax.Array],
    frozen: Sequence[str] = (),
    aux_loss: AuxLoss | None = None,
    aux_weight: float = 0.0,
) -> Callable[[FoldState, dict, jax.Array, PyTree], tuple[FoldState, dict]]:
    """One optimisation step of ONE fold: (state, batch, fold key, frozen inputs) -> (state, metrics).

    batch: {"frame0": onset uint8[B,H,W,3], "frame1": apex uint8[B,H,W,3], "label": int32[B]}.
    `aux_loss(params, c, batch, key, frozen)` (optional) adds `aux_weight` times an auxiliary loss
    on the condition vector c, e.g. L_rec through the pre-trained DiT; `frozen` (e.g. the VAE's
    parameters, shared by all folds) is never differentiated nor updated.
    """

    def step(
        state: FoldState, batch: dict, key: jax.Array, frozen_inputs: PyTree = None
    ) -> tuple[FoldState, dict]:
        step_key = jax.random.fold_in(key, state.step)
        labels = batch["label"]  # int32[B]
        frozen_inputs = jax.lax.stop_gradient(frozen_inputs)

        def objective(params):
            variables = {"params": params["classifier"], "batch_stats": state.batch_stats}
            with frozen_batchnorm(frozen):
                (logits, c), new_vars = model.apply(
                    variables,
                    batch["frame0"],
                    batch["frame1"],
                    train=True,
                    return_features=True,
                    mutable=["batch_stats"],
                    rngs={"dropout": step_key},
                )  # logits f32[B,N], c [B,C]
            ce = loss_fn(logits, labels)
            total = ce
            parts = {"ce": ce}
            if aux_loss is not None:
                rec = aux_loss(params, c, batch, step_key, frozen_inputs)
                total = ce + aux_weight * rec
                parts["rec"] = rec
            return total, (logits, new_vars["batch_stats"], parts)

        (loss, (logits, batch_stats, parts)), grads = jax.value_and_grad(objective, has_aux=True)(
            state.params
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss,
            "accuracy": jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32)),
            **parts,
        }
        new_state = state.replace(
            step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
        )
        return new_state, metrics

    return step


def make_predict(model: nn.Module) -> Callable[[PyTree, PyTree, jax.Array, jax.Array], jax.Array]:
    """Inference of ONE fold: (classifier params, batch_stats, onset, apex) -> probabilities f32[B,N]."""

    def predict(params: PyTree, batch_stats: PyTree, onset: jax.Array, apex: jax.Array) -> jax.Array:
        logits = model.apply({"params": params, "batch_stats": batch_stats}, onset, apex, train=False)
        return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

    return predict


def runs_sequentially(finetune_cfg: Any) -> bool:
    """`finetune.sequential`, or when unset: True on CPU (vmapped grouped convolutions are slow there)."""
    if finetune_cfg.sequential is None:
        return jax.default_backend() == "cpu"
    return bool(finetune_cfg.sequential)


def fold_mesh() -> Mesh | None:
    """A 1-d mesh over all devices with axis "fold", or None on a single device."""
    devices = jax.devices()
    return Mesh(np.asarray(devices), (FOLD_AXIS,)) if len(devices) > 1 else None


def padded_group_size(num_folds: int, mesh: Mesh | None) -> int:
    """Group size rounded up to a multiple of the mesh size (the extra folds are discarded copies)."""
    if mesh is None:
        return num_folds
    n = mesh.devices.size
    return -(-num_folds // n) * n


def _index(tree: PyTree, i: jax.Array) -> PyTree:
    """Leaf-wise `x[i]` for a traced fold index (no per-leaf dispatch from Python)."""
    return jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, i, keepdims=False), tree)


def _one_fold(train_step: Callable[..., tuple[FoldState, dict]]) -> Callable[..., tuple[FoldState, dict]]:
    """Sequential mode: step fold `i` of the stacked state and write it back in place (one compile)."""

    def step(state: FoldState, batch: dict, keys: jax.Array, frozen: PyTree, i: jax.Array):
        new, metrics = train_step(_index(state, i), _index(batch, i), keys[i], frozen)
        state = jax.tree.map(lambda x, y: jax.lax.dynamic_update_index_in_dim(x, y, i, 0), state, new)
        return state, metrics

    return step


def _one_fold_predict(predict: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    """Sequential mode: inference of fold `i` of the stacked parameters on its own inputs."""

    def fold_predict(params: PyTree, batch_stats: PyTree, onset: jax.Array, apex: jax.Array, i: jax.Array):
        return predict(_index(params, i), _index(batch_stats, i), onset[i], apex[i])

    return fold_predict


class FoldGroupRunner:
    """Runs the train step and inference for a group of F folds, vmapped or one fold at a time.

    `frozen_inputs` (e.g. the frozen VAE's parameters) go to every step un-stacked: one copy shared
    by all folds (replicated over the mesh), an argument of the compiled step, never updated.
    """

    def __init__(
        self,
        train_step: Callable[..., tuple[FoldState, dict]],
        predict: Callable[[PyTree, PyTree, jax.Array, jax.Array], jax.Array],
        sequential: bool = False,
        mesh: Mesh | None = None,
        frozen_inputs: PyTree = None,
    ) -> None:
        self.sequential = sequential
        self.mesh = None if sequential else mesh
        if sequential:
            self._step = jax.jit(_one_fold(train_step), donate_argnums=0)
            self._predict = jax.jit(_one_fold_predict(predict))
        else:
            self._step = jax.jit(jax.vmap(train_step, in_axes=(0, 0, 0, None)), donate_argnums=0)
            self._predict = jax.jit(jax.vmap(predict))
        if frozen_inputs is not None and self.mesh is not None:
            frozen_inputs = jax.device_put(frozen_inputs, NamedSharding(self.mesh, PartitionSpec()))
        elif frozen_inputs is not None:
            frozen_inputs = jax.tree.map(jnp.asarray, frozen_inputs)
        self.frozen_inputs = frozen_inputs

    def place(self, tree: PyTree) -> PyTree:
        """Put a fold-stacked pytree on the devices, its fold axis sharded over the mesh."""
        if self.mesh is None:
            return jax.tree.map(jnp.asarray, tree)
        sharding = NamedSharding(self.mesh, PartitionSpec(FOLD_AXIS))
        return jax.device_put(tree, sharding)

    def train_step(self, state: FoldState, batch: dict, keys: jax.Array) -> tuple[FoldState, dict]:
        """state [F,...], batch leaves [F,B,...], keys [F] -> (state, metrics f32[F])."""
        if not self.sequential:
            return self._step(state, self.place(batch), keys, self.frozen_inputs)
        batch = self.place(batch)
        metrics = []
        for i in range(int(keys.shape[0])):  # one compiled call per fold, state updated in place
            state, m = self._step(state, batch, keys, self.frozen_inputs, jnp.int32(i))
            metrics.append(m)
        return state, stack_folds(metrics)

    def predict(self, state: FoldState, onset: np.ndarray, apex: np.ndarray) -> np.ndarray:
        """onset/apex uint8[F,B,H,W,3] -> probabilities f32[F,B,N], each fold through its own model."""
        params = state.params["classifier"]
        if not self.sequential:
            probs = self._predict(params, state.batch_stats, self.place(onset), self.place(apex))
            return np.asarray(probs)
        onset, apex = jnp.asarray(onset), jnp.asarray(apex)
        return np.stack(
            [
                np.asarray(self._predict(params, state.batch_stats, onset, apex, jnp.int32(i)))
                for i in range(onset.shape[0])
            ]
        )
