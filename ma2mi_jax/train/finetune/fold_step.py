"""One fold's training step and inference, as pure functions of device-resident data.

Every leaf of a `FoldState` may carry a leading fold axis F (the runner stacks or vmaps over it).
A fold's step reads its batch from the data set kept on the device (`fold_data`): it gathers the
pairs of its batch indices, warps each pair by the transform the host drew for it
(`data.device_augment`) and takes one optimisation step. When the model registers its pairs
(model.register_iterations > 0), every pair is registered once, before training (`fold_data`):
the data set then holds each pair's registered difference ("motion"), the step warps it with the
same transform as the frames and the action encoder reads it, so no step registers anything
(docs/decisions.md#registration-once-per-fine-tuning-pair).
The random key of fold f at step s (dropout) is fold_in(fold_key(seed, f), s). With
`finetune.aux_rec_weight > 0` a fold's params also hold the pre-trained DiT ("dit", trained per
fold) and the frozen VAE's parameters are the frozen inputs.

Frozen encoders (finetune.freeze_position / freeze_action) get zero updates and no optimiser state
(`optim.make_optimizer(..., trainable)`), and their BatchNorm layers run in inference mode: they
normalise with the stored running statistics, which therefore stay exactly as initialised. A frozen
encoder is then the same function in training and at test time. `finetune.freeze_bn` (the
default) puts both encoders' BatchNorm layers in that inference mode while their parameters still
train, when they start from a pre-training (`inference_bn_modules`). With
`finetune.l2sp_weight > 0` the loss adds the L2-SP penalty (weight / 2) * ||w - w_start||^2 over
both encoders' parameters (`l2sp_penalty`); w_start, the same for every fold, travels with the
frozen inputs ({"aux": ..., "l2sp_start": ...}).
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

from ma2mi_jax.data import device_augment
from ma2mi_jax.models import register

PyTree = Any
# Encoder module names inside MIACClassifier.miacnet, keyed by the finetune.freeze_* switch.
FREEZABLE = {"freeze_position": "position_encoder", "freeze_action": "action_encoder"}

# (params {"classifier", "dit", ...}, condition c [B,C], frames batch, key, frozen inputs) -> scalar
AuxLoss = Callable[[PyTree, jax.Array, dict, jax.Array, PyTree], jax.Array]
# (state, frames batch, fold key, frozen inputs) -> (state, metrics)
FrameStep = Callable[["FoldState", dict, jax.Array, PyTree], tuple["FoldState", dict]]


class FoldState(flax.struct.PyTreeNode):
    """Training state of one fold, or of F folds when every leaf has a leading fold axis."""

    step: jax.Array  # int32[] (stacked: int32[F])
    params: PyTree  # {"classifier": MIACClassifier params, optional "dit": DiT params}
    batch_stats: PyTree  # MIACClassifier batch statistics
    opt_state: PyTree


# Fixed-point steps per grey level of a stored registered difference: int16 holds +-511 grey levels,
# and bilinear samples of integers with 1/32 weights stay exact in float32 (`resample`;
# docs/decisions.md#fixed-point-motion).
MOTION_SCALE = 64.0


def fold_data(
    pairs: np.ndarray, labels: np.ndarray, register_iterations: int = 0, batch_size: int = 32
) -> dict[str, np.ndarray]:
    """The data set as the step reads it: {"frames": uint8[N,H,W,6] (onset | apex), "labels": int32[N]}.

    With register_iterations > 0 also "motion": int16[N,H,W,3], each pair's registered apex - onset
    (`register.registered_motion`, `batch_size` pairs at a time) in 1/MOTION_SCALE grey levels.
    """
    n, two, h, w, c = pairs.shape  # [N,2,H,W,3]
    frames = np.ascontiguousarray(pairs.transpose(0, 2, 3, 1, 4).reshape(n, h, w, two * c))
    data = {"frames": frames, "labels": np.asarray(labels, np.int32)}
    if register_iterations > 0:
        data["motion"] = registered_motion_fixed(pairs, register_iterations, batch_size)
    return data


def registered_motion_fixed(pairs: np.ndarray, iterations: int, batch_size: int) -> np.ndarray:
    """Pairs uint8[N,2,H,W,3] -> registered apex - onset, int16[N,H,W,3] in 1/MOTION_SCALE grey levels."""
    fn = jax.jit(lambda a, b: jnp.round(register.registered_motion(a, b, iterations) * MOTION_SCALE))
    n = len(pairs)
    out = np.empty((n, *pairs.shape[2:]), np.int16)  # [N,H,W,3]
    for start in range(0, n, batch_size):
        chunk = pairs[start : start + batch_size]  # [b,2,H,W,3]
        pad = batch_size - len(chunk)  # one program for every chunk: pad the last with its first pair
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], pad, axis=0)])
        d = np.asarray(fn(chunk[:, 0], chunk[:, 1]))[: batch_size - pad]  # [b,H,W,3]
        out[start : start + len(d)] = np.clip(d, -32767, 32767).astype(np.int16)
    return out


def frozen_modules(finetune_cfg: Any) -> tuple[str, ...]:
    """Names of the encoders to freeze from finetune.freeze_position / freeze_action."""
    return tuple(name for key, name in FREEZABLE.items() if bool(finetune_cfg.get(key, False)))


def trainable_outside(frozen: Sequence[str]) -> Callable[[tuple[str, ...]], bool]:
    """`trainable(path)` for `optim.make_optimizer`: False for parameters under a frozen module."""
    frozen = tuple(frozen)
    return lambda path: not any(name in path for name in frozen)


def encoder_path(path: tuple[str, ...]) -> bool:
    """True for a parameter of either encoder (finetune.head_only_epochs holds these at first)."""
    return any(name in path for name in FREEZABLE.values())


def inference_bn_modules(finetune_cfg: Any, pretrained: bool) -> tuple[str, ...]:
    """Encoders whose BatchNorm runs in inference mode: both with finetune.freeze_bn when they start
    from trained statistics (`pretrained`; a random start has none to keep), else the frozen ones."""
    if pretrained and bool(finetune_cfg.get("freeze_bn", False)):
        return tuple(FREEZABLE.values())
    return frozen_modules(finetune_cfg)


def encoder_params(classifier_params: PyTree) -> dict[str, PyTree]:
    """{encoder name: its parameters} of a classifier's params (the model's encoders only)."""
    miac = classifier_params["miacnet"]
    return {name: miac[name] for name in FREEZABLE.values() if name in miac}


def l2sp_penalty(classifier_params: PyTree, start: dict[str, PyTree]) -> jax.Array:
    """Sum over both encoders' parameters of (w - w_start)^2; `start` is `encoder_params` of the start."""
    now = encoder_params(classifier_params)
    terms = [
        jnp.sum(jnp.square(w.astype(jnp.float32) - w0.astype(jnp.float32)))
        for name in start
        for w, w0 in zip(jax.tree.leaves(now[name]), jax.tree.leaves(start[name]), strict=True)
    ]
    return sum(terms, jnp.zeros((), jnp.float32))


@jax.jit
def encoder_distances(classifier_params: PyTree, start: dict[str, PyTree]) -> dict[str, jax.Array]:
    """{encoder name: ||w - w_start|| / ||w_start|| over all its parameters} of ONE fold, f32[] each."""
    now = encoder_params(classifier_params)
    out = {}
    for name, tree in start.items():
        pairs = zip(jax.tree.leaves(now[name]), jax.tree.leaves(tree), strict=True)
        diff = sum(jnp.sum(jnp.square(w.astype(jnp.float32) - w0.astype(jnp.float32))) for w, w0 in pairs)
        norm = sum(jnp.sum(jnp.square(w0.astype(jnp.float32))) for w0 in jax.tree.leaves(tree))
        out[name] = jnp.sqrt(diff) / jnp.maximum(jnp.sqrt(norm), jnp.finfo(jnp.float32).tiny)
    return out


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
    variables: dict, tx: optax.GradientTransformation, extra_params: dict | None = None
) -> FoldState:
    """One fold's state at step 0 from the classifier variables (and extra params, e.g. the DiT)."""
    params = {"classifier": variables["params"], **(extra_params or {})}
    return FoldState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
    )


Objective = Callable[..., tuple[jax.Array, tuple[jax.Array, PyTree, dict]]]


def make_objective(
    model: nn.Module,
    loss_fn: Callable[[jax.Array, jax.Array], jax.Array],
    frozen: Sequence[str] = (),
    aux_loss: AuxLoss | None = None,
    aux_weight: float = 0.0,
    l2sp_weight: float = 0.0,
) -> Objective:
    """One fold's loss: (params, batch_stats, batch, key, frozen_inputs) -> (total, (logits, stats, parts)).

    The loss `make_frame_step` differentiates: `loss_fn(logits, labels)` plus `aux_weight` times
    `aux_loss(params, c, batch, key, frozen_inputs)` when given, BatchNorm of the `frozen`
    encoders in inference mode; parts holds "ce" (and "rec"). With l2sp_weight > 0 the frozen
    inputs are {"aux": the aux loss's, "l2sp_start": `encoder_params` of the start} and the loss
    adds l2sp_weight / 2 * `l2sp_penalty` (parts["l2sp"]: the penalty, unweighted).
    """

    def objective(params, batch_stats, batch, key, frozen_inputs):
        start = None
        if l2sp_weight > 0:
            start, frozen_inputs = frozen_inputs["l2sp_start"], frozen_inputs["aux"]
        variables = {"params": params["classifier"], "batch_stats": batch_stats}
        with frozen_batchnorm(frozen):
            (logits, c), new_vars = model.apply(
                variables,
                batch["frame0"],
                batch["frame1"],
                train=True,
                return_features=True,
                motion=batch.get("motion"),
                mutable=["batch_stats"],
                rngs={"dropout": key},
            )  # logits f32[B,N], c [B,C]
        ce = loss_fn(logits, batch["label"])
        total, parts = ce, {"ce": ce}
        if aux_loss is not None:
            rec = aux_loss(params, c, batch, key, frozen_inputs)
            total = ce + aux_weight * rec
            parts["rec"] = rec
        if start is not None:
            penalty = l2sp_penalty(params["classifier"], start)
            total = total + 0.5 * l2sp_weight * penalty
            parts["l2sp"] = penalty
        return total, (logits, new_vars["batch_stats"], parts)

    return objective


def make_frame_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    loss_fn: Callable[[jax.Array, jax.Array], jax.Array],
    frozen: Sequence[str] = (),
    aux_loss: AuxLoss | None = None,
    aux_weight: float = 0.0,
    l2sp_weight: float = 0.0,
) -> FrameStep:
    """One optimisation step of ONE fold on frames: (state, batch, key, frozen) -> (state, metrics).

    batch: {"frame0": onset uint8[B,H,W,3], "frame1": apex uint8[B,H,W,3], "label": int32[B]} and,
    when the pairs were registered beforehand, "motion" f32[B,H,W,3] (`fold_data`).
    `aux_loss(params, c, batch, key, frozen)` (optional) adds `aux_weight` times an auxiliary loss
    on the condition vector c, e.g. L_rec through the pre-trained DiT; `frozen` (e.g. the VAE's
    parameters, shared by all folds) is never differentiated nor updated; with l2sp_weight > 0 it
    also holds the encoders' start (`make_objective`). `frozen` names the encoders whose BatchNorm
    runs in inference mode (`inference_bn_modules`).
    """
    objective = make_objective(model, loss_fn, frozen, aux_loss, aux_weight, l2sp_weight)

    def step(state: FoldState, batch: dict, key: jax.Array, frozen_inputs: PyTree = None):
        step_key = jax.random.fold_in(key, state.step)
        frozen_inputs = jax.lax.stop_gradient(frozen_inputs)
        (loss, (logits, batch_stats, parts)), grads = jax.value_and_grad(objective, has_aux=True)(
            state.params, state.batch_stats, batch, step_key, frozen_inputs
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss,
            "accuracy": jnp.mean((jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)),
            **parts,
        }
        new_state = state.replace(
            step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
        )
        return new_state, metrics

    return step


def _pair_batch(frames: jax.Array, labels: jax.Array, motion: jax.Array | None) -> dict[str, jax.Array]:
    """frames [B,H,W,6] (onset | apex channels), labels int32[B], motion [B,H,W,3] (fixed point) or
    None -> the step's batch dict ("motion" f32 in grey levels, only when given)."""
    batch = {"frame0": frames[..., :3], "frame1": frames[..., 3:], "label": labels}
    if motion is not None:
        batch["motion"] = motion.astype(jnp.float32) / MOTION_SCALE  # exact: a power of two
    return batch


def gather_batch(data: dict, indices: jax.Array) -> dict[str, jax.Array]:
    """Onset/apex frames uint8[B,H,W,3], labels int32[B] (and motion) of the samples `indices` int32[B]."""
    motion = data["motion"][indices] if "motion" in data else None  # [B,H,W,3]
    return _pair_batch(data["frames"][indices], data["labels"][indices], motion)  # frames [B,H,W,6]


def augmented_batch(data: dict, batch: dict, aug: device_augment.PairAugment) -> dict:
    """`gather_batch` of batch["indices"] int32[B], each pair warped by batch["warp"] f32[B,2,3].

    The registered difference (when the data set has one) is warped by the same transform, unrounded.
    """
    indices, warp = batch["indices"], batch["warp"]
    frames = device_augment.augment_frames(data["frames"][indices], warp, aug)  # [B,H,W,6]
    motion = None
    if "motion" in data:
        motion = device_augment.augment_motion(data["motion"][indices], warp, aug)  # f32[B,H,W,3]
    return _pair_batch(frames, data["labels"][indices], motion)


def make_fold_step(
    frame_step: FrameStep, aug: device_augment.PairAugment
) -> Callable[[FoldState, dict, jax.Array, dict, PyTree], tuple[FoldState, dict]]:
    """The whole step of ONE fold: (state, {"indices","warp"}, key, data, frozen) -> (state, metrics)."""

    def step(state: FoldState, batch: dict, key: jax.Array, data: dict, frozen_inputs: PyTree = None):
        return frame_step(state, augmented_batch(data, batch, aug), key, frozen_inputs)

    return step


def make_fold_predict(model: nn.Module) -> Callable[[PyTree, PyTree, jax.Array, dict], jax.Array]:
    """Inference of ONE fold: (params, batch_stats, indices int32[B], data) -> probabilities f32[B,N]."""

    def predict(params: PyTree, batch_stats: PyTree, indices: jax.Array, data: dict) -> jax.Array:
        batch = gather_batch(data, indices)
        logits = model.apply(
            {"params": params, "batch_stats": batch_stats},
            batch["frame0"],
            batch["frame1"],
            train=False,
            motion=batch.get("motion"),
        )
        return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

    return predict
