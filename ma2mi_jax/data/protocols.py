"""Cross-validation protocols: leave-one-subject-out and subject-disjoint k-fold.

- "loso": one fold per subject, in natural subject order ("sub02" < "sub10", "2" < "10"); the
  fold's name is the subject id.
- "kfold": subjects shuffled with `seed`, then taken largest first (stable, so the shuffle breaks
  ties) and each given to the fold with the fewest samples so far (ties -> lower fold index): folds
  are subject-disjoint, balanced in sample count and the same for the same seed. Folds are named
  "fold1".."foldK".
Each fold lists its test subjects and sample indices; `describe` prints them, with a warning
for a fold whose training set lacks a class present in the data.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence

import numpy as np

from ma2mi_jax.data.media.frames import natural_key
from ma2mi_jax.data.records import DataError, MicroSample
from ma2mi_jax.errors import ConfigError

PROTOCOLS = ("loso", "kfold")


@dataclasses.dataclass(frozen=True)
class Fold:
    """One train/test split: test subjects and the sample indices on each side."""

    name: str
    test_subjects: tuple[str, ...]
    train_indices: np.ndarray  # int64[n_train], ascending
    test_indices: np.ndarray  # int64[n_test], ascending
    missing_train_classes: tuple[str, ...] = ()  # classes of the data absent from the training side


def _fold(name: str, test_subjects: Sequence[str], subjects: np.ndarray, emotions: np.ndarray) -> Fold:
    is_test = np.isin(subjects, list(test_subjects))
    train = np.flatnonzero(~is_test).astype(np.int64)
    present = set(emotions[train].tolist())
    missing = tuple(sorted(e for e in set(emotions.tolist()) if e not in present))
    return Fold(
        name=name,
        test_subjects=tuple(sorted(test_subjects, key=natural_key)),
        train_indices=train,
        test_indices=np.flatnonzero(is_test).astype(np.int64),
        missing_train_classes=missing,
    )


def make_folds(samples: Sequence[MicroSample], name: str, num_folds: int = 5, seed: int = 0) -> list[Fold]:
    """Folds of `samples` under protocol `name` ("loso" | "kfold" with `num_folds` and `seed`)."""
    if name not in PROTOCOLS:
        raise ConfigError(f"protocol.name={name!r} is unknown; valid names: {list(PROTOCOLS)}")
    if not samples:
        raise DataError("no samples to split into folds")
    subjects = np.array([s.subject for s in samples], dtype=object)
    emotions = np.array([s.emotion for s in samples], dtype=object)
    counts = collections.Counter(subjects.tolist())
    order = sorted(counts, key=natural_key)
    if name == "loso":
        if len(order) < 2:
            raise DataError(f"leave-one-subject-out needs at least 2 subjects, the data has {order}")
        return [_fold(s, [s], subjects, emotions) for s in order]
    if num_folds < 2 or num_folds > len(order):
        raise ConfigError(
            f"protocol.num_folds={num_folds} must be between 2 and the number of subjects ({len(order)})"
        )
    rng = np.random.default_rng(seed)
    shuffled = [order[i] for i in rng.permutation(len(order))]
    shuffled.sort(key=lambda s: -counts[s])  # stable: equal counts keep the seeded order
    groups: list[list[str]] = [[] for _ in range(num_folds)]
    sizes = [0] * num_folds
    for subject in shuffled:
        k = min(range(num_folds), key=lambda i: (sizes[i], i))
        groups[k].append(subject)
        sizes[k] += counts[subject]
    return [_fold(f"fold{k + 1}", g, subjects, emotions) for k, g in enumerate(groups)]


def describe(folds: Sequence[Fold]) -> str:
    """One line per fold: name, test subjects, train/test counts, and any class missing in training."""
    lines = [f"{len(folds)} folds"]
    for f in folds:
        line = (
            f"  {f.name}: test subjects {', '.join(f.test_subjects)}; "
            f"train {len(f.train_indices)}, test {len(f.test_indices)}"
        )
        if f.missing_train_classes:
            line += f"  WARNING: no training sample of {', '.join(f.missing_train_classes)}"
        lines.append(line)
    return "\n".join(lines)
