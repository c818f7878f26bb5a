"""Fold batch indices drawn on the host: each fold from its own samples, a permutation per pass,
a pure function of (seed, fold, epoch) -- so seeded and resumable from the epoch alone."""

import numpy as np
import pytest

from ma2mi_jax.data.device_augment import PairAugment
from ma2mi_jax.train.finetune.inputs import FoldBatches, fold_seed

AUG = PairAugment(crop_pad=2, rotation_deg=5.0, flip=True)


def _streams(seed: int = 0, aug: PairAugment = AUG) -> tuple[FoldBatches, list[np.ndarray]]:
    folds = [np.array([0, 1, 2, 3, 4, 5, 6]), np.array([7, 8, 9]), np.array([2, 5])]
    seeds = [fold_seed(seed, f) for f in range(3)]
    return FoldBatches(folds, seeds, batch_size=2, steps_per_epoch=4, augment=aug, image_size=8), folds


def test_each_fold_walks_permutations_of_its_own_indices():
    streams, folds = _streams()
    drawn = np.concatenate([streams.epoch(e)["indices"] for e in (1, 2, 3)])  # [3*S,F,B]
    assert drawn.shape == (12, 3, 2) and drawn.dtype == np.int32
    for f, ix in enumerate(folds):
        seen = drawn[:, f].ravel().tolist()
        assert set(seen) <= set(ix.tolist())
        n = len(ix)
        for p in range(len(seen) // n):  # every n consecutive draws cover the fold once
            assert sorted(seen[p * n : (p + 1) * n]) == sorted(ix.tolist())


def test_seeded_and_a_function_of_the_epoch_alone():
    a, _ = _streams(seed=0)
    b, _ = _streams(seed=0)
    for key in ("indices", "warp"):
        np.testing.assert_array_equal(b.epoch(3)[key], a.epoch(3)[key])  # no need to replay epochs 1-2
        c, _ = _streams(seed=1)
        assert not np.array_equal(c.epoch(1)[key], a.epoch(1)[key])
        assert not np.array_equal(a.epoch(1)[key], a.epoch(2)[key])  # reshuffled every pass
    warp = a.epoch(1)["warp"]
    assert warp.shape == (4, 3, 2, 2, 3) and warp.dtype == np.float32
    off, _ = _streams(aug=PairAugment())
    np.testing.assert_array_equal(off.epoch(1)["warp"][..., :2], np.broadcast_to(np.eye(2), (4, 3, 2, 2, 2)))


def test_empty_fold_is_refused():
    with pytest.raises(ValueError, match="fold 1 has no training samples"):
        FoldBatches([np.arange(3), np.zeros(0, np.int64)], [0, 1], 2, 2, AUG, 8)
