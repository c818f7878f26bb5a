"""LOSO and subject-disjoint k-fold protocols: partitions, determinism, balance, and the fold listing."""

from __future__ import annotations

import numpy as np
import pytest

from ma2mi_jax.data import protocols
from ma2mi_jax.data.records import MicroSample

EMOTIONS = ("happiness", "surprise", "anger", "disgust", "fear", "sadness")


def sample(subject: str, emotion: str, i: int) -> MicroSample:
    return MicroSample("test", f"{subject}/{i}", subject, (1, 2), ("a", "b"), 1, 2, 2, emotion, 0)


def dataset(counts: dict[str, int]) -> list[MicroSample]:
    out = []
    for subject, n in counts.items():
        out += [sample(subject, EMOTIONS[(len(out) + j) % 4], len(out) + j) for j in range(n)]
    return out


def check_partition(folds, samples):
    n = len(samples)
    tests = np.concatenate([f.test_indices for f in folds])
    assert sorted(tests.tolist()) == list(range(n))  # every sample tested exactly once
    for f in folds:
        assert len(f.test_indices) > 0
        assert sorted(np.concatenate([f.train_indices, f.test_indices]).tolist()) == list(range(n))
        train_subjects = {samples[i].subject for i in f.train_indices}
        assert {samples[i].subject for i in f.test_indices} == set(f.test_subjects)
        assert not train_subjects & set(f.test_subjects)


def test_loso_one_fold_per_subject_in_natural_order():
    samples = dataset({"sub10": 2, "sub02": 3, "sub01": 1})
    folds = protocols.make_folds(samples, "loso")
    assert [f.name for f in folds] == ["sub01", "sub02", "sub10"]
    assert [f.test_subjects for f in folds] == [("sub01",), ("sub02",), ("sub10",)]
    assert folds[1].test_indices.tolist() == [2, 3, 4]
    assert folds[1].train_indices.tolist() == [0, 1, 5]
    assert folds[0].train_indices.dtype == np.int64
    check_partition(folds, samples)


def test_kfold_subject_disjoint_balanced_and_seeded():
    counts = {str(s): 1 + (s * 7) % 9 for s in range(1, 31)}
    samples = dataset(counts)
    folds = protocols.make_folds(samples, "kfold", num_folds=5, seed=3)
    assert [f.name for f in folds] == ["fold1", "fold2", "fold3", "fold4", "fold5"]
    check_partition(folds, samples)
    sizes = [len(f.test_indices) for f in folds]
    assert max(sizes) - min(sizes) <= max(counts.values())
    again = protocols.make_folds(samples, "kfold", num_folds=5, seed=3)
    assert [f.test_subjects for f in again] == [f.test_subjects for f in folds]
    assert all(np.array_equal(a.train_indices, b.train_indices) for a, b in zip(again, folds, strict=True))


def test_kfold_seed_changes_assignment_of_equal_subjects():
    samples = dataset({f"S{s:02d}": 2 for s in range(1, 13)})
    assignments = {
        tuple(f.test_subjects for f in protocols.make_folds(samples, "kfold", 4, seed)) for seed in range(6)
    }
    assert len(assignments) > 1
    for folds in assignments:
        assert [len(t) for t in folds] == [3, 3, 3, 3]  # equal sample counts -> equal subject counts


def test_describe_lists_folds_and_warns_on_missing_training_class():
    samples = dataset({"1": 4, "2": 4, "3": 4})
    samples.append(sample("3", "fear", 99))  # the only fear sample: fold "3" trains without it
    folds = protocols.make_folds(samples, "loso")
    text = protocols.describe(folds)
    assert "3 folds" in text
    assert "  1: test subjects 1; train 9, test 4" in text
    assert "3: test subjects 3; train 8, test 5  WARNING: no training sample of fear" in text
    assert text.count("WARNING") == 1
    assert folds[2].missing_train_classes == ("fear",)


def test_protocol_errors():
    samples = dataset({"1": 2, "2": 2})
    with pytest.raises(ValueError, match=r"protocol\.name='lopo'.*\['loso', 'kfold'\]"):
        protocols.make_folds(samples, "lopo")
    with pytest.raises(ValueError, match=r"num_folds=5 must be between 2 and the number of subjects \(2\)"):
        protocols.make_folds(samples, "kfold", num_folds=5)
    with pytest.raises(ValueError, match="at least 2 subjects"):
        protocols.make_folds(dataset({"1": 3}), "loso")
    with pytest.raises(ValueError, match="no samples"):
        protocols.make_folds([], "loso")
