"""Metrics against hand-computed confusion matrices and against scikit-learn on random predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sklearn_metrics

from ma2mi_jax.evaluation import metrics


def test_hand_computed_three_classes():
    # truth:   0 0 0 1 1 2
    # pred:    0 0 1 1 2 2
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    cm = metrics.confusion_matrix(y_true, y_pred, 3)
    np.testing.assert_array_equal(cm, [[2, 1, 0], [0, 1, 1], [0, 0, 1]])
    assert metrics.accuracy(y_true, y_pred, 3) == pytest.approx(4 / 6)
    # F1: class0 2*2/(4+0+1)=0.8; class1 2/(2+1+1)=0.5; class2 2/(2+1+0)=2/3
    assert metrics.uf1(y_true, y_pred, 3) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    # recall: 2/3, 1/2, 1
    assert metrics.uar(y_true, y_pred, 3) == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)


def test_absent_class_is_skipped_but_predicted_only_class_counts_zero():
    # 4 classes; class 3 never appears; class 2 is predicted but never true.
    y_true = [0, 0, 1, 1]
    y_pred = [0, 2, 1, 1]
    cm = metrics.confusion_matrix(y_true, y_pred, 4)
    f1 = metrics.per_class_f1(cm)
    assert f1[0] == pytest.approx(2 / 3)  # 2*1/(2+0+1)
    assert f1[1] == pytest.approx(1.0)
    assert f1[2] == 0.0
    assert np.isnan(f1[3])
    assert metrics.uf1(y_true, y_pred, 4) == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)
    # recall over classes present in truth only (0 and 1)
    assert metrics.uar(y_true, y_pred, 4) == pytest.approx((0.5 + 1.0) / 2)


def test_single_sample_fold_and_empty():
    s = metrics.summarize([2], [2], 5)
    assert s == {
        "n": 1,
        "accuracy": 1.0,
        "uf1": 1.0,
        "uar": 1.0,
        "confusion_matrix": [[0] * 5, [0] * 5, [0, 0, 1, 0, 0], [0] * 5, [0] * 5],
    }
    empty = metrics.summarize(np.zeros(0, np.int64), np.zeros(0, np.int64), 3)
    assert empty["n"] == 0 and np.isnan(empty["accuracy"]) and np.isnan(empty["uf1"])


def test_rejects_bad_labels():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        metrics.confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="samples"):
        metrics.confusion_matrix([0, 1], [0], 3)


@pytest.mark.parametrize("seed", range(6))
def test_matches_sklearn_on_random_predictions(seed):
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(2, 7))
    n = int(rng.integers(1, 60))
    # Skew the class distribution so that some classes are often missing from one side.
    probs = rng.dirichlet(np.full(n_classes, 0.5))
    y_true = rng.choice(n_classes, size=n, p=probs)
    y_pred = np.where(rng.random(n) < 0.5, y_true, rng.choice(n_classes, size=n, p=probs))
    labels_all = np.arange(n_classes)
    present = np.union1d(y_true, y_pred)
    in_truth = np.unique(y_true)

    np.testing.assert_array_equal(
        metrics.confusion_matrix(y_true, y_pred, n_classes),
        sklearn_metrics.confusion_matrix(y_true, y_pred, labels=labels_all),
    )
    assert metrics.accuracy(y_true, y_pred, n_classes) == pytest.approx(
        sklearn_metrics.accuracy_score(y_true, y_pred)
    )
    assert metrics.uf1(y_true, y_pred, n_classes) == pytest.approx(
        sklearn_metrics.f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)
    )
    assert metrics.uar(y_true, y_pred, n_classes) == pytest.approx(
        sklearn_metrics.recall_score(y_true, y_pred, labels=in_truth, average="macro", zero_division=0)
    )


def test_pooled_and_per_fold():
    y_true = [0, 1, 1, 0, 2]
    y_pred = [0, 1, 0, 0, 2]
    folds = ["a", "a", "b", "b", "c"]
    pooled, per_fold = metrics.pooled_and_per_fold(y_true, y_pred, folds, ["a", "b", "c"], 3)
    assert pooled["accuracy"] == pytest.approx(0.8)
    assert [f["fold"] for f in per_fold] == ["a", "b", "c"]
    assert [f["n"] for f in per_fold] == [2, 2, 1]
    assert [f["accuracy"] for f in per_fold] == [1.0, 0.5, 1.0]
    # Pooled matrix is the sum of the per-fold matrices.
    np.testing.assert_array_equal(
        np.sum([f["confusion_matrix"] for f in per_fold], axis=0), pooled["confusion_matrix"]
    )
