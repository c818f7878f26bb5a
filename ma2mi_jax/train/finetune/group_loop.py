"""One group of folds trained: run and evaluate its epochs, checkpoint, resume.

`train_group` drives a `group_build.GroupTrainer` from the latest checkpoint to the last epoch and
returns the group's evaluation history, with the "transfer" rows at the start (epoch 0) and at
every evaluated or probed epoch (`results` pools them).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import ml_collections
import numpy as np

from ma2mi_jax import checkpoints
from ma2mi_jax.errors import DivergedError
from ma2mi_jax.train import observe, preemption
from ma2mi_jax.train.finetune import workdir_files
from ma2mi_jax.train.finetune.fold_execution import GroupState
from ma2mi_jax.train.finetune.group_build import GroupTrainer

log = logging.getLogger(__name__)


def eval_epochs(epochs: int, every: int) -> set[int]:
    """Epochs (1-based) at multiples of `every`, plus always the last."""
    every = max(1, every)
    return {e for e in range(1, epochs + 1) if e % every == 0} | {epochs}


def check_finite(stats: dict, group: str, epoch: int) -> None:
    """Stop with a clear message on a NaN/inf loss (checkpoints already written stay valid)."""
    bad = {k: v for k, v in stats.items() if not math.isfinite(v)}
    if bad:
        raise DivergedError(
            f"{group}, epoch {epoch}: non-finite training statistics {bad}; lower train.lr, set "
            "train.grad_clip, or check the data. Earlier checkpoints are kept."
        )


def _record_evaluation(
    trainer: GroupTrainer,
    history: dict,
    epoch: int,
    probabilities: list[np.ndarray],
    validation: list[np.ndarray],
) -> float:
    """Append the epoch's test (and validation) predictions to `history`; returns the held-out accuracy."""
    history["epochs"].append(epoch)
    correct = total = 0
    for f, p, v in zip(trainer.real, probabilities, validation, strict=True):
        pred = p.argmax(-1)
        history["predictions"][f.name].append(pred.tolist())
        if len(f.validation_indices):
            history.setdefault("validation_predictions", {}).setdefault(f.name, []).append(
                v.argmax(-1).tolist()
            )
        correct += int((pred == trainer.labels[f.test_indices]).sum())
        total += len(pred)
    return correct / max(total, 1)


def _epoch_line(group: str, epoch: int, epochs: int, stats: dict) -> str:
    line = f"{group} epoch {epoch}/{epochs}: loss {stats['loss']:.4f} acc {stats['accuracy']:.3f}"
    if "rec" in stats:
        line += f" (ce {stats['ce']:.4f}, rec {stats['rec']:.4f})"
    return line


def _describe(trainer: GroupTrainer) -> str:
    """One line: the group's folds, steps per epoch and fold mode."""
    runner, group = trainer.runner, trainer.group
    mode = "sequential" if runner.sequential else "vmapped"
    if runner.sequential and runner.fold_threads > 1:
        mode += f", {runner.fold_threads} folds at once"
    if runner.mesh is not None:
        mode += f" over {runner.mesh.devices.size} devices"
    names = ", ".join(f.name for f in trainer.real)
    return f"{group.name}: {len(trainer.real)} fold(s) [{names}], {group.steps_per_epoch} steps/epoch, {mode}"


def _resume(trainer: GroupTrainer, ckpt: checkpoints.Checkpoints) -> tuple[GroupState, dict, dict, int]:
    """(state, history, checkpoint meta, epochs done) from the latest checkpoint, or a fresh start."""
    found = None
    if ckpt.all_steps():
        found = ckpt.restore_latest(trainer.runner.stacked(trainer.initial_state(fitted=False)))
    if found is None:
        history = {"epochs": [], "predictions": {f.name: [] for f in trainer.real}, "train": []}
        return trainer.initial_state(), history, {}, 0
    start, stacked, items = found
    meta = items["meta"]
    log.info("%s: resumed at epoch %d", trainer.group.name, start)
    return trainer.runner.group_state(stacked), meta["history"], meta, start


def _evaluate_into(
    trainer: GroupTrainer, state: GroupState, history: dict, epoch: int
) -> tuple[list[np.ndarray], float, str]:
    """Evaluate every real fold, record its predictions: (probabilities per fold, accuracy, log text)."""
    probabilities, validation = trainer.evaluate(state)
    accuracy = _record_evaluation(trainer, history, epoch, probabilities, validation)
    n = sum(len(f.test_indices) for f in trainer.real)
    return probabilities, accuracy, f" | held-out acc {accuracy:.3f} ({n} samples)"


def _save(
    ckpt: checkpoints.Checkpoints,
    trainer: GroupTrainer,
    state: GroupState,
    history: dict,
    epoch: int,
    probabilities: list[np.ndarray] | None,
) -> None:
    """Checkpoint the group after `epoch`, with the last epoch's probabilities when given."""
    meta = {"epoch": epoch, "history": history}
    if probabilities is not None:
        meta["probabilities"] = {f.name: p for f, p in zip(trainer.real, probabilities, strict=True)}
    ckpt.save(epoch, trainer.runner.stacked(state), meta=meta)


def train_group(
    trainer: GroupTrainer,
    *,
    config: ml_collections.ConfigDict,
    workdir: Path,
    scalars: observe.Scalars,
) -> dict:
    """Train (or resume) one group of folds to the last epoch; returns its evaluation history.

    history = {"epochs": [e...], "predictions": {fold: [[pred per test sample] per eval epoch]}, "train":
    [...], "probabilities": {fold: f32[n_test, N] at the last epoch}, "transfer": [its transfer_row's]}.
    """
    group, real, epochs = trainer.group, trainer.real, int(config.train.epochs)
    ckpt = workdir_files.group_checkpoints(workdir, group.name, int(config.train.keep_checkpoints))
    state, history, meta, start = _resume(trainer, ckpt)
    evaluate_at = eval_epochs(epochs, int(config.train.log_every))
    save_at = eval_epochs(epochs, int(config.train.checkpoint_every))
    log.info("%s", _describe(trainer))
    tested = any(len(f.test_indices) for f in real)
    if start == 0 and tested:
        history["transfer"] = [trainer.transfer_row(state, 0, trainer.evaluate(state)[0])]
    probabilities = (
        [np.asarray(meta["probabilities"][f.name]) for f in real] if "probabilities" in meta else None
    )
    n = len(trainer.padded)
    if start < epochs:
        trainer.check_memory(state, float(config.device_memory_gb))
    progress = observe.Progress(epochs * n, start * n, desc=group.name, unit="fold-epoch")
    try:
        for epoch in range(start + 1, epochs + 1):
            t0 = time.perf_counter()
            state, stats = trainer.run_epoch(
                state, epoch, on_fold=lambda k, e=epoch: progress.update(k, epoch=e)
            )
            check_finite(stats, group.name, epoch)
            history["train"].append({"epoch": epoch, **stats})
            scalars.write(epoch, {f"{group.name}/train_{k}": v for k, v in stats.items()})
            line = _epoch_line(group.name, epoch, epochs, stats)
            if epoch in evaluate_at and tested:
                probabilities, accuracy, said = _evaluate_into(trainer, state, history, epoch)
                line += said
                scalars.write(epoch, {f"{group.name}/test_accuracy": accuracy})
            if tested and (epoch in evaluate_at or trainer.probes_at(epoch)):
                history.setdefault("transfer", []).append(trainer.transfer_row(state, epoch))
            log.info("%s (%.1fs)", line, time.perf_counter() - t0)
            stopping = epoch < epochs and preemption.requested()
            if epoch in save_at or stopping:
                _save(ckpt, trainer, state, history, epoch, probabilities if epoch == epochs else None)
            if stopping:
                ckpt.wait()
                raise preemption.stop(f"in {group.name} after epoch {epoch} of {epochs}", ckpt.directory)
    finally:
        progress.close()
        ckpt.close()
    history["probabilities"] = (
        {f.name: np.asarray(p).tolist() for f, p in zip(real, probabilities, strict=True)}
        if probabilities
        else {}
    )
    return history
