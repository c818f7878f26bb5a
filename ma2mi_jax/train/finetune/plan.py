"""The run plan: the protocol's folds, their grouping, and the plan a resumed run must match."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import ml_collections
import numpy as np

from ma2mi_jax import files
from ma2mi_jax.data import protocols
from ma2mi_jax.data.media.frames import natural_key
from ma2mi_jax.data.records import DataError, MicroSample
from ma2mi_jax.errors import ConfigError, WorkdirError
from ma2mi_jax.train.finetune import workdir_files
from ma2mi_jax.train.finetune.starting_point import starts_pretrained
from ma2mi_jax.train.finetune.workdir_files import FINAL_FOLD

log = logging.getLogger(__name__)

_VALIDATION_STREAM = 7  # separates the validation draw's random stream from the folds' batch streams


@dataclasses.dataclass(frozen=True)
class FoldSpec:
    """One fold of the run: its global index, name, held-out subjects and sample indices."""

    index: int
    name: str
    test_subjects: tuple[str, ...]
    train_indices: np.ndarray
    test_indices: np.ndarray
    # finetune.validation_subjects > 0: training subjects held out to choose the epoch (not trained on)
    validation_subjects: tuple[str, ...] = ()
    validation_indices: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))


@dataclasses.dataclass(frozen=True)
class Group:
    """Folds trained together (one vmapped step); `steps_per_epoch` is shared by all of them."""

    name: str
    folds: tuple[FoldSpec, ...]
    steps_per_epoch: int


def make_groups(
    fold_specs: Sequence[FoldSpec], folds_per_step: int, batch_size: int, final: FoldSpec | None
) -> list[Group]:
    """Cross-validation folds in groups of `folds_per_step` (0 = all), then the final model alone.

    Every cross-validation fold gets the same number of steps per epoch (enough for the largest
    training set to be seen once), so a fold's training does not depend on how folds are grouped.
    """
    steps = math.ceil(max(len(f.train_indices) for f in fold_specs) / batch_size)
    size = len(fold_specs) if folds_per_step <= 0 else folds_per_step
    groups = [
        Group(f"group_{g:03d}", tuple(fold_specs[i : i + size]), steps)
        for g, i in enumerate(range(0, len(fold_specs), size))
    ]
    if final is not None:
        groups.append(Group(FINAL_FOLD, (final,), math.ceil(len(final.train_indices) / batch_size)))
    return groups


def plan_dict(
    config: ml_collections.ConfigDict, groups: Sequence[Group], samples: Sequence[MicroSample]
) -> dict:
    """What must not change between a run and its resumption."""
    aux_weight = float(config.finetune.aux_rec_weight)
    # Only when on, so that the plans of runs without the auxiliary loss keep their keys.
    aux_plan = {"aux_rec_weight": aux_weight} if aux_weight > 0 else {}
    held = int(config.finetune.validation_subjects)
    validation_plan = {"validation_subjects": held} if held > 0 else {}
    ft = config.finetune
    # How the encoders train, each only when it changes the paper's fine-tuning: a run resumed with
    # another setting would mix two trainings (plans written before these keys keep their form).
    changed = {
        "bn_reestimate": bool(ft.bn_reestimate),
        "encoder_lr_scale": float(ft.encoder_lr_scale) if float(ft.encoder_lr_scale) != 1.0 else None,
        "encoder_warmup_epochs": int(ft.encoder_warmup_epochs) or None,
        "l2sp_weight": float(ft.l2sp_weight) or None,
        "freeze_bn": bool(ft.freeze_bn) and starts_pretrained(config),
    }
    training_plan = {k: v for k, v in changed.items() if v}
    return {
        "dataset": config.data.name,
        "num_samples": len(samples),
        "class_names": list(config.data.class_names),
        "seed": int(config.seed),
        "epochs": int(config.train.epochs),
        "batch_size": int(config.train.batch_size),
        **aux_plan,
        **validation_plan,
        **training_plan,
        "groups": [
            {
                "name": g.name,
                "steps_per_epoch": g.steps_per_epoch,
                "folds": [
                    {
                        "name": f.name,
                        "test_subjects": list(f.test_subjects),
                        "num_train": len(f.train_indices),
                        "num_test": len(f.test_indices),
                        **_validation_entry(f),
                    }
                    for f in g.folds
                ],
            }
            for g in groups
        ],
    }


def _validation_entry(fold: FoldSpec) -> dict:
    """The fold's validation subjects for plan.json (nothing when it has none)."""
    if not fold.validation_subjects:
        return {}
    return {
        "validation_subjects": list(fold.validation_subjects),
        "num_validation": len(fold.validation_indices),
    }


def check_or_write_plan(workdir: Path, plan: dict) -> None:
    """Write plan.json, or check that a resumed run has the same plan."""
    path = workdir_files.plan_path(workdir)
    if path.exists():
        old = json.loads(path.read_text())
        diff = [k for k in sorted(set(old) | set(plan)) if old.get(k) != plan.get(k)]
        if diff:
            raise WorkdirError(
                f"{workdir} holds a run with a different plan ({', '.join(diff)} differ; see {path}). "
                "Resume with the same config (seed, epochs, batch size, folds_per_step, data, the "
                "finetune switches) or use a new --workdir."
            )
        return
    files.write_json(path, plan)


def fold_specs_from_protocol(
    config: ml_collections.ConfigDict, samples: Sequence[MicroSample]
) -> list[FoldSpec]:
    """The protocol's folds as FoldSpecs, checked for subject overlap and empty training sets."""
    folds = protocols.make_folds(
        samples, config.protocol.name, int(config.protocol.num_folds), int(config.seed)
    )
    log.info("%s", protocols.describe(folds))
    specs = []
    subjects = np.asarray([s.subject for s in samples])
    for i, f in enumerate(folds):
        train = np.asarray(f.train_indices, np.int64)
        test = np.asarray(f.test_indices, np.int64)
        if len(train) == 0:
            raise DataError(f"fold {f.name} has no training samples")
        leak = set(subjects[train]) & set(subjects[test])
        if leak:
            raise DataError(
                f"fold {f.name}: subject(s) {sorted(leak)} are in both its training and test sets"
            )
        specs.append(FoldSpec(i, str(f.name), tuple(str(s) for s in f.test_subjects), train, test))
    return specs


def hold_out_validation(
    specs: Sequence[FoldSpec], samples: Sequence[MicroSample], count: int, seed: int
) -> list[FoldSpec]:
    """Each fold with `count` of its training subjects moved to a validation set (0 = unchanged).

    The subjects are drawn at random from the fold's training subjects, seeded by (seed, the fold's
    index), so the same config holds out the same subjects; at least one training subject remains.
    """
    if count <= 0:
        return list(specs)
    subjects = np.asarray([s.subject for s in samples], dtype=object)
    held_specs = []
    for f in specs:
        train_subjects = sorted(set(subjects[f.train_indices].tolist()), key=natural_key)
        if count >= len(train_subjects):
            raise ConfigError(
                f"finetune.validation_subjects={count} leaves fold {f.name} no training subject (it has "
                f"{len(train_subjects)}); lower it"
            )
        rng = np.random.default_rng([seed, f.index, _VALIDATION_STREAM])
        chosen = sorted((train_subjects[i] for i in rng.choice(len(train_subjects), count, replace=False)),
                        key=natural_key)  # fmt: skip
        is_val = np.isin(subjects[f.train_indices], chosen)
        held_specs.append(
            dataclasses.replace(
                f,
                train_indices=f.train_indices[~is_val],
                validation_subjects=tuple(chosen),
                validation_indices=f.train_indices[is_val],
            )
        )
    return held_specs


def final_fold(num_folds: int, num_samples: int) -> FoldSpec:
    """The model trained on every subject (finetune.final_model): no held-out sample."""
    return FoldSpec(num_folds, FINAL_FOLD, (), np.arange(num_samples), np.zeros(0, np.int64))
