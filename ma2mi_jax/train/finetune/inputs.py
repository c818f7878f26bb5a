"""The data of a cross-validation run: samples and decoded pairs, and every fold's batches.

Only a few numbers per pair are drawn on the host: fold f's training batches walk its own
permutation of its training samples, a new permutation every pass, and each drawn pair gets a
random transform (`device_augment.sample_matrices`), both seeded by (run seed, the fold's global
index, pass or epoch). A fold therefore sees the same batches whatever group it is in, in either
fold mode, and after a resume (an epoch's batches are a function of the epoch). Gathering, warping
and the step run on the device (`step.make_fold_step`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import ml_collections
import numpy as np

from ma2mi_jax.data import device_augment, micro_pairs
from ma2mi_jax.data.readers import registry as readers
from ma2mi_jax.data.records import DataError, MicroSample

log = logging.getLogger(__name__)


def read_data(config: ml_collections.ConfigDict) -> tuple[list[MicroSample], np.ndarray]:
    """Samples of the data set and their decoded onset/apex pairs uint8[N,2,H,W,3]."""
    samples, read_report = readers.read_micro(config.data)
    log.info("%s", read_report.summary())
    pairs = micro_pairs.load_micro_pairs(
        samples, int(config.data.image_size), strict=bool(config.data.strict), report=read_report
    )
    if not config.data.strict and read_report.dropped:
        samples, pairs = micro_pairs.drop_bad_pairs(samples, pairs, read_report)
    check_classes(samples, tuple(config.data.class_names))
    return samples, pairs


def check_classes(samples: Sequence[MicroSample], class_names: Sequence[str]) -> None:
    """Every class of data.class_names must have samples, and labels must agree with the names."""
    counts = np.bincount([s.label for s in samples], minlength=len(class_names))
    if len(counts) > len(class_names):
        raise DataError(
            f"samples carry label {len(counts) - 1} but data.class_names has {len(class_names)} classes"
        )
    for s in samples:
        if class_names[s.label] != s.emotion:
            raise DataError(
                f"sample {s.clip_id}: label {s.label} is '{class_names[s.label]}' in data.class_names but "
                f"the sample's emotion is '{s.emotion}'; the class list does not match the data"
            )
    empty = [name for name, n in zip(class_names, counts, strict=True) if n == 0]
    if empty:
        raise DataError(
            f"class(es) {empty} of data.class_names have no samples in the data set "
            f"(counts: {dict(zip(class_names, counts.tolist(), strict=True))}); remove them from "
            "data.class_names or map raw emotions onto them with data.label_map"
        )


def fold_seed(seed: int, fold_index: int) -> int:
    """Data seed of one fold's index stream, from the run seed and the fold's global index."""
    return int(np.random.SeedSequence([seed, fold_index]).generate_state(1)[0])


_INDEX_STREAM, _TRANSFORM_STREAM = 0, 1  # seed-sequence entries that keep the two draws apart


class FoldBatches:
    """Training batches of a group's folds, epoch by epoch: sample indices and pair transforms.

    `train_indices[f]` are fold f's training samples (indices into the data set) and `seeds[f]` its
    stream's seed (`fold_seed`). Subclass and override `epoch` to observe or stop a run.
    """

    def __init__(
        self,
        train_indices: Sequence[np.ndarray],
        seeds: Sequence[int],
        batch_size: int,
        steps_per_epoch: int,
        augment: device_augment.PairAugment,
        image_size: int,
    ) -> None:
        if len(train_indices) != len(seeds):
            raise ValueError(f"{len(train_indices)} folds but {len(seeds)} seeds")
        for f, ix in enumerate(train_indices):
            if len(ix) == 0:
                raise ValueError(f"fold {f} has no training samples")
        self.train_indices = [np.asarray(ix, np.int64) for ix in train_indices]
        self.seeds = [int(s) for s in seeds]
        self.batch_size = int(batch_size)
        self.steps_per_epoch = int(steps_per_epoch)
        self.augment = augment
        self.image_size = int(image_size)

    def _fold(self, f: int, first_step: int, num_steps: int) -> np.ndarray:
        """Fold f's indices for steps [first_step, first_step + num_steps): int64[num_steps*B]."""
        ix = self.train_indices[f]
        n = len(ix)
        pos = np.arange(first_step * self.batch_size, (first_step + num_steps) * self.batch_size)
        out = np.empty(len(pos), np.int64)
        for p in np.unique(pos // n):  # one permutation per pass over the fold's training set
            perm = np.random.default_rng([self.seeds[f], _INDEX_STREAM, int(p)]).permutation(n)
            sel = pos // n == p
            out[sel] = ix[perm[pos[sel] % n]]
        return out

    def _transforms(self, f: int, epoch: int) -> np.ndarray:
        """Inverse matrices float32[S*B,2,3] of fold f's pairs in epoch `epoch`."""
        count = self.steps_per_epoch * self.batch_size
        if self.augment.is_identity:
            return device_augment.identity_matrices(count)
        rng = np.random.default_rng([self.seeds[f], _TRANSFORM_STREAM, epoch])
        return device_augment.sample_matrices(rng, count, self.augment, self.image_size)

    def epoch(self, epoch: int) -> dict[str, np.ndarray]:
        """Every fold's batches in epoch `epoch` (1-based): indices int32[S,F,B], warp f32[S,F,B,2,3]."""
        s, b = self.steps_per_epoch, self.batch_size
        folds = range(len(self.train_indices))
        first = (epoch - 1) * s
        indices = [self._fold(f, first, s).reshape(s, b) for f in folds]
        warps = [self._transforms(f, epoch).reshape(s, b, 2, 3) for f in folds]
        return {"indices": np.stack(indices, axis=1).astype(np.int32), "warp": np.stack(warps, axis=1)}


def eval_index_batches(test_indices: Sequence[np.ndarray], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-fold test indices padded to a common grid: idx int32[nb,F,B] and mask bool[nb,F,B]."""
    longest = max((len(t) for t in test_indices), default=0)
    nb = max(1, math.ceil(longest / batch_size))
    idx = np.zeros((len(test_indices), nb * batch_size), np.int32)
    mask = np.zeros_like(idx, dtype=bool)
    for f, t in enumerate(test_indices):
        idx[f, : len(t)] = t
        mask[f, : len(t)] = True
    shape = (len(test_indices), nb, batch_size)
    return idx.reshape(shape).transpose(1, 0, 2), mask.reshape(shape).transpose(1, 0, 2)
