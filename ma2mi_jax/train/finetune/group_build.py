"""One group of folds, set up: its trainer (`GroupTrainer`), optimiser, compiled steps and starts.

`build_group` returns a `GroupTrainer` (the runner, the folds' batch streams and keys, the
optimiser, the optional probe-fitted heads and re-estimated BatchNorm statistics), which
`group_loop.train_group`, the benchmark and the tests drive. Its "transfer" rows follow where the
pre-trained start goes: each fold's relative distance of each encoder's weights from their start,
||w - w0|| / ||w0||, and with `finetune.probe_every` a linear probe of each fold's current encoder
scored on its held-out subjects (`head_init.current_probe_predictions`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ma2mi_jax import losses
from ma2mi_jax.data.device_augment import PairAugment
from ma2mi_jax.train import device_memory, optim
from ma2mi_jax.train.finetune.aux_rec import AuxReconstruction
from ma2mi_jax.train.finetune.fold_execution import (
    FoldGroupRunner,
    GroupState,
    fold_mesh,
    padded_group_size,
    runs_sequentially,
)
from ma2mi_jax.train.finetune.fold_step import (
    broadcast_folds,
    encoder_params,
    encoder_path,
    fold_key,
    frozen_modules,
    inference_bn_modules,
    init_fold_state,
    make_fold_predict,
    make_fold_step,
    make_frame_step,
    trainable_outside,
)
from ma2mi_jax.train.finetune.head_init import current_probe_predictions, fold_starts
from ma2mi_jax.train.finetune.inputs import FoldBatches, eval_index_batches, fold_seed
from ma2mi_jax.train.finetune.plan import FoldSpec, Group
from ma2mi_jax.train.finetune.starting_point import starts_pretrained

# What else lowers the fine-tuning step's memory, named in the warning when it does not fit the device.
SMALLER_FOLD_STEP = ("--config.dtype=bfloat16", "a smaller --config.train.batch_size")

log = logging.getLogger(__name__)

# (the group's padded folds, steps per epoch, config) -> their training batches; tests pass their own.
BatchSource = Callable[[Sequence[FoldSpec], int, ml_collections.ConfigDict], FoldBatches]


def fold_batches(
    folds: Sequence[FoldSpec], steps_per_epoch: int, config: ml_collections.ConfigDict
) -> FoldBatches:
    """The default batches: one stream per fold, seeded by (config.seed, the fold's global index)."""
    return FoldBatches(
        [f.train_indices for f in folds],
        [fold_seed(int(config.seed), f.index) for f in folds],
        int(config.train.batch_size),
        steps_per_epoch,
        PairAugment.from_config(config.data.augment),
        int(config.data.image_size),
    )


@dataclasses.dataclass
class GroupTrainer:
    """Everything one group's training needs; `real` folds are reported, `padded` ones also run."""

    group: Group
    real: list[FoldSpec]
    padded: list[FoldSpec]
    runner: FoldGroupRunner
    tx: optax.GradientTransformation
    batches: FoldBatches
    keys: Any  # key[F] of the padded folds
    fresh: Any  # one fold's state at step 0 (FoldState)
    labels: np.ndarray  # int32[N], for the held-out accuracy line
    eval_batch_size: int
    # finetune.head_init="probe": fits {"kernel" [F,D,N], "bias" [F,N]}, a head per padded fold
    fit_heads: Callable[[], dict] | None = None
    # finetune.bn_reestimate: MIACNet's batch statistics re-estimated per padded fold, leaves [F,...]
    fit_batch_stats: Callable[[], dict] | None = None
    # finetune.probe_every > 0: (one fold's classifier variables, its spec) -> test predictions int64[n]
    probe_fold: Callable[[dict, FoldSpec], np.ndarray] | None = None
    probe_every: int = 0
    # The encoders' parameters at step 0 (`encoder_params`), placed on the devices once for `weight_distances`
    distance_start: dict | None = None

    def initial_state(self, fitted: bool = True) -> GroupState:
        """Every fold at step 0 from the same variables (and its own fitted head and BatchNorm
        statistics, with `fit_heads` and `fit_batch_stats`).

        fitted=False skips the fits: a resumed run's restore template only needs the shapes.
        """
        state = broadcast_folds(self.fresh, len(self.padded))
        if self.fit_heads is not None and fitted:
            classifier = {
                **state.params["classifier"],
                "head": {k: jnp.asarray(v) for k, v in self.fit_heads().items()},
            }
            state = state.replace(params={**state.params, "classifier": classifier})
        if self.fit_batch_stats is not None and fitted:
            miacnet = jax.tree.map(jnp.asarray, self.fit_batch_stats())  # leaves [F,...]
            state = state.replace(batch_stats={**state.batch_stats, "miacnet": miacnet})
        return self.runner.group_state(state)

    def weight_distances(self, state: GroupState) -> list[dict[str, float]]:
        """Per real fold: {encoder name: ||w - w0|| / ||w0||} from the run's start (`encoder_distances`)."""
        distances = self.runner.encoder_distances(state, self.distance_start)
        return [{k: float(v[i]) for k, v in distances.items()} for i in range(len(self.real))]

    def probes_at(self, epoch: int) -> bool:
        """Whether the finetune.probe_every probe runs at `epoch` (0 = the start)."""
        return self.probe_fold is not None and self.probe_every > 0 and epoch % self.probe_every == 0

    def transfer_row(self, state: GroupState, epoch: int, start_probabilities: list | None = None) -> dict:
        """The "transfer" row of `epoch`: weight distances, the probe when due, and at epoch 0 the
        start's held-out predictions (`start_probabilities`, f32[n_test, N] per real fold)."""
        names = [f.name for f in self.real]
        row: dict[str, Any] = {
            "epoch": epoch,
            "distance": dict(zip(names, self.weight_distances(state), strict=True)),
        }
        if start_probabilities is not None:
            row["predictions"] = {
                n: np.asarray(p).argmax(-1).tolist() for n, p in zip(names, start_probabilities, strict=True)
            }
        if self.probes_at(epoch):
            row["probe"] = {
                f.name: self.probe_fold(self.runner.fold_variables(state, i), f).tolist()
                for i, f in enumerate(self.real)
            }
        return row

    def run_epoch(
        self, state: GroupState, epoch: int, on_fold: Callable[[int], None] | None = None
    ) -> tuple[GroupState, dict[str, float]]:
        """Train every fold for epoch `epoch` (1-based); mean training statistics over the real folds."""
        state, metrics = self.runner.run_epoch(state, self.batches.epoch(epoch), self.keys, on_fold)  # [S,F]
        return state, {k: float(np.mean(v[:, : len(self.real)])) for k, v in metrics.items()}

    def check_memory(self, state: GroupState, device_memory_gb: float) -> str | None:
        """Compile the first step ahead and warn when the folds stepped at once need more than the
        device's memory, by XLA's estimate, naming how many would fit (nothing to check, and nothing
        compiled ahead, where no limit is known: a CPU by default)."""
        limit = device_memory.device_limit_bytes(device_memory_gb)
        if limit is None:
            return None
        batch = {k: v[0] for k, v in self.batches.epoch(1).items()}  # step 1 of epoch 1 [F,B,...]
        step = device_memory.estimate_bytes(self.runner.compiled_step(state, batch, self.keys))
        if step is None:
            return None
        runner = self.runner
        shared = device_memory.tree_bytes((runner.data, runner.frozen_inputs))  # one copy per device
        devices = 1 if runner.mesh is None else runner.mesh.size
        # Sequential: the compiled step is one fold's and fold_threads of them run at once; vmapped:
        # it holds this device's share of the group's folds.
        in_step = 1 if runner.sequential else len(self.padded) // devices
        at_once = runner.fold_threads if runner.sequential else in_step
        per_fold = device_memory.fold_memory(step, shared, in_step)
        fit = device_memory.folds_that_fit(limit, shared, per_fold)
        if runner.sequential:
            what = f"the fine-tuning step of {at_once} fold(s) at once (finetune.fold_threads)"
            knob = f"--config.finetune.fold_threads={fit} (folds stepped at once)"
        else:
            what = f"the fine-tuning step of {at_once} fold(s) at once on each of {devices} device(s)"
            knob = f"--config.finetune.folds_per_step={fit * devices} (folds trained at once)"
        overrides = ((knob,) if fit < at_once else ()) + SMALLER_FOLD_STEP
        return device_memory.warn_if_over(shared + per_fold * at_once, limit, what, overrides)

    def evaluate(self, state: GroupState) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Probabilities of every real fold's held-out samples through its own model.

        Returns (test f32[n_test, N] per fold, validation f32[n_validation, N] per fold).
        """
        held = [np.concatenate([f.test_indices, f.validation_indices]) for f in self.padded]
        idx, mask = eval_index_batches(held, self.eval_batch_size)
        probs = self.runner.predict(state, idx)  # [nb,F,B,N]
        per_fold = [probs[:, f][mask[:, f]] for f in range(len(self.real))]  # [n_test + n_validation, N]
        cut = [len(f.test_indices) for f in self.real]
        return [p[:n] for p, n in zip(per_fold, cut, strict=True)], [
            p[n:] for p, n in zip(per_fold, cut, strict=True)
        ]


def build_group(
    group: Group,
    *,
    config: ml_collections.ConfigDict,
    model: Any,
    variables: dict,
    data: dict,
    aux: AuxReconstruction | None = None,
    batch_source: BatchSource = fold_batches,
    shared: dict | None = None,
) -> GroupTrainer:
    """The trainer of one group: `data` is `step.fold_data(pairs, labels)` on the host.

    `shared` (a dict kept by the caller across the groups of one run) reuses the optimiser and the
    compiled steps of an earlier group with the same schedule and group size.
    """
    ft = config.finetune
    sequential = runs_sequentially(ft)
    mesh = None if sequential else fold_mesh()
    real = list(group.folds)
    padded = real + [real[0]] * (padded_group_size(len(real), mesh) - len(real))
    # Groups of one pass share their optimiser and compiled steps (same schedule, same shapes):
    # `shared` keeps them, so the next group does not compile them again.
    shared = {} if shared is None else shared
    key = (int(config.train.epochs), group.steps_per_epoch, len(padded))
    if key not in shared:
        shared[key] = _optimiser_and_runner(group, config, model, variables, data, aux, sequential, mesh)
    tx, runner = shared[key]
    keys = jnp.stack([fold_key(int(config.seed), f.index) for f in padded])
    extra = None if aux is None else {"dit": aux.dit_params}
    fit_heads = fit_batch_stats = None
    heads, stats = str(ft.head_init) == "probe", bool(ft.bn_reestimate)
    if heads or stats:
        starts = functools.cache(
            functools.partial(_fit_fold_starts, config, variables, data, padded, group.name, heads, stats)
        )
        fit_heads = (lambda: starts()["head"]) if heads else None
        fit_batch_stats = (lambda: starts()["batch_stats"]) if stats else None
    probe_fold = None
    if int(ft.probe_every) > 0:
        probe_fold = functools.partial(_probe_fold, config, data)
    return GroupTrainer(
        group=group,
        real=real,
        padded=padded,
        runner=runner,
        tx=tx,
        batches=batch_source(padded, group.steps_per_epoch, config),
        keys=keys if sequential else runner.place(keys),
        fresh=init_fold_state(variables, tx, extra),
        labels=np.asarray(data["labels"]),
        eval_batch_size=int(config.train.batch_size),
        fit_heads=fit_heads,
        fit_batch_stats=fit_batch_stats,
        probe_fold=probe_fold,
        probe_every=int(ft.probe_every),
        distance_start=runner.replicate(encoder_params(variables["params"])),
    )


def _optimiser_and_runner(
    group: Group,
    config: ml_collections.ConfigDict,
    model: Any,
    variables: dict,
    data: dict,
    aux: AuxReconstruction | None,
    sequential: bool,
    mesh: Any,
) -> tuple[optax.GradientTransformation, FoldGroupRunner]:
    """The group's optimiser (its schedule) and the runner of its jitted fold step and prediction."""
    ft = config.finetune
    frozen = frozen_modules(ft)
    hold_steps = int(ft.head_only_epochs) * group.steps_per_epoch
    tx = optim.make_optimizer(
        config.train,
        int(config.train.epochs) * group.steps_per_epoch,
        trainable_outside(frozen) if frozen else None,
        held=encoder_path,
        hold_steps=hold_steps,
        held_scale=optim.scaled_warmup(
            float(ft.encoder_lr_scale), hold_steps, int(ft.encoder_warmup_epochs) * group.steps_per_epoch
        ),
    )
    l2sp_weight = float(ft.l2sp_weight)
    frame_step = make_frame_step(
        model,
        tx,
        losses.cross_entropy,
        inference_bn_modules(ft, starts_pretrained(config)),
        aux_loss=None if aux is None else aux.loss,
        aux_weight=float(ft.aux_rec_weight),
        l2sp_weight=l2sp_weight,
    )
    frozen_inputs = None if aux is None else aux.frozen_inputs()
    if l2sp_weight > 0:
        frozen_inputs = {"aux": frozen_inputs, "l2sp_start": encoder_params(variables["params"])}
    runner = FoldGroupRunner(
        make_fold_step(frame_step, PairAugment.from_config(config.data.augment)),
        make_fold_predict(model),
        data,
        sequential=sequential,
        mesh=mesh,
        frozen_inputs=frozen_inputs,
        fold_threads=int(ft.fold_threads),
    )
    return tx, runner


def _pairs(data: dict, indices: np.ndarray | None = None) -> np.ndarray:
    """Onset/apex pairs uint8[n,2,H,W,3] of the data set's frames (all, or those of `indices`)."""
    frames = np.asarray(data["frames"])  # [N,H,W,6]
    if indices is not None:
        frames = frames[np.asarray(indices)]
    return np.stack([frames[..., :3], frames[..., 3:]], axis=1)


def _fit_fold_starts(
    config: ml_collections.ConfigDict,
    variables: dict,
    data: dict,
    padded: list[FoldSpec],
    name: str,
    heads: bool,
    batch_stats: bool,
) -> dict:
    """finetune.head_init="probe" / finetune.bn_reestimate: each padded fold's head and BatchNorm
    statistics from its training pairs (`fold_starts`)."""
    train = [f.train_indices for f in padded]
    labels = np.asarray(data["labels"])
    starts = fold_starts(config, variables, _pairs(data), labels, train, heads=heads, batch_stats=batch_stats)
    if heads:
        log.info("%s: heads started at a linear probe of each fold's training subjects", name)
    if batch_stats:
        log.info("%s: BatchNorm statistics re-estimated on each fold's training pairs", name)
    return starts


def _probe_fold(config: ml_collections.ConfigDict, data: dict, variables: dict, fold: FoldSpec) -> np.ndarray:
    """finetune.probe_every: the probe of one fold's current encoder, its test predictions int64[n_test]."""
    used = np.concatenate([fold.train_indices, fold.test_indices])  # only this fold's pairs are read
    n_train = len(fold.train_indices)
    labels = np.asarray(data["labels"])[used]
    return current_probe_predictions(
        config,
        variables,
        _pairs(data, used),
        labels,
        np.arange(n_train),
        np.arange(n_train, len(used)),
    )
