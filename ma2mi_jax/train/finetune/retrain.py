"""finetune.retrain_selected: each fold trained again on all its training subjects, validation ones
included, for the number of epochs its validation subjects chose.

Folds that chose the same number of epochs train together in one group (`retrain_e<epochs>`),
under a config whose `train.epochs` is that number, so each fold's learning-rate schedule is the
one a run of that length has. Every retrained fold gets the same steps per epoch (enough for the
largest of their training sets), as in the first pass. The groups go into the same workdir and
resume like the others.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import ml_collections
import numpy as np

from ma2mi_jax.data.records import MicroSample
from ma2mi_jax.train.finetune.plan import FoldSpec, Group
from ma2mi_jax.train.finetune.results import validation_choice

GROUP_PREFIX = "retrain_e"


def retrain_plan(
    config: ml_collections.ConfigDict,
    samples: Sequence[MicroSample],
    specs: Sequence[FoldSpec],
    histories: dict[str, dict],
) -> list[tuple[Group, ml_collections.ConfigDict]]:
    """(group, its config) for every selected number of epochs, folds with validation subjects only."""
    held = [f for f in specs if len(f.validation_indices)]
    if not held:
        return []
    merged = {
        f.name: dataclasses.replace(
            f,
            train_indices=np.sort(np.concatenate([f.train_indices, f.validation_indices])),
            validation_subjects=(),
            validation_indices=np.zeros(0, np.int64),
        )
        for f in held
    }
    chosen = {
        f.name: histories[f.name]["epochs"][validation_choice(samples, f, histories[f.name])[0]] for f in held
    }
    steps = math.ceil(max(len(f.train_indices) for f in merged.values()) / int(config.train.batch_size))
    plans = []
    for epochs in sorted(set(chosen.values())):
        folds = tuple(merged[f.name] for f in held if chosen[f.name] == epochs)
        group_config = config.copy_and_resolve_references()
        group_config.train.epochs = epochs
        group_config.finetune.head_only_epochs = min(int(config.finetune.head_only_epochs), epochs - 1)
        plans.append((Group(f"{GROUP_PREFIX}{epochs:03d}", folds, steps), group_config))
    return plans
