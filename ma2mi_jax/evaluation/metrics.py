"""Classification metrics of the micro-expression literature, in plain numpy.

Conventions (as in docs/method.md):
- accuracy: fraction of samples whose prediction equals the truth.
- UF1 (unweighted F1): mean over classes of 2TP / (2TP + FP + FN). A class that appears neither in
  the truth nor in the predictions has an undefined F1 (0/0) and is skipped, as MER codebases do
  when a LOSO fold misses a class; a class that is predicted but absent from the truth counts with
  F1 = 0.
- UAR (unweighted average recall): mean over the classes present in the truth of TP / (TP + FN).
- Reported figures pool the predictions of all folds; per-fold figures use the same definitions on
  one fold's samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_labels(y: Sequence[int] | np.ndarray, name: str, num_classes: int) -> np.ndarray:
    """Validate a vector of class indices in [0, num_classes)."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d vector of class indices, got shape {arr.shape}")
    if arr.size and (not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name}: expected integer class indices, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(
            f"{name}: class indices must lie in [0, {num_classes}), got min {arr.min()} max {arr.max()}"
        )
    return arr.astype(np.int64)


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts int64[N, N]: row = true class, column = predicted class."""
    t = _as_labels(y_true, "y_true", num_classes)
    p = _as_labels(y_pred, "y_pred", num_classes)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} samples but y_pred has {p.size}")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def accuracy_from_cm(cm: np.ndarray) -> float:
    """Fraction of correct predictions; NaN for an empty matrix."""
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def per_class_f1(cm: np.ndarray) -> np.ndarray:
    """F1 per class, float[N]; NaN where the class is absent from both truth and predictions."""
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    """Recall per class, float[N]; NaN where the class is absent from the truth."""
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    return np.where(support > 0, tp / np.maximum(support, 1), np.nan)


def uf1_from_cm(cm: np.ndarray) -> float:
    """Unweighted F1 over the classes present in truth or predictions; NaN if there are none."""
    f1 = per_class_f1(cm)
    return float(np.nanmean(f1)) if np.isfinite(f1).any() else float("nan")


def uar_from_cm(cm: np.ndarray) -> float:
    """Unweighted average recall over the classes present in the truth; NaN if there are none."""
    recall = per_class_recall(cm)
    return float(np.nanmean(recall)) if np.isfinite(recall).any() else float("nan")


def accuracy(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> float:
    """Fraction of correct predictions."""
    return accuracy_from_cm(confusion_matrix(y_true, y_pred, num_classes))


def uf1(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> float:
    """Unweighted F1 (mean per-class F1, classes absent from truth and predictions skipped)."""
    return uf1_from_cm(confusion_matrix(y_true, y_pred, num_classes))


def uar(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> float:
    """Unweighted average recall (mean per-class recall over classes present in the truth)."""
    return uar_from_cm(confusion_matrix(y_true, y_pred, num_classes))


def summarize(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> dict:
    """Accuracy, UF1, UAR, sample count and confusion matrix (as nested lists) of one set of predictions."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    return {
        "n": int(cm.sum()),
        "accuracy": accuracy_from_cm(cm),
        "uf1": uf1_from_cm(cm),
        "uar": uar_from_cm(cm),
        "confusion_matrix": cm.tolist(),
    }


def pooled_and_per_fold(
    y_true: Sequence[int],
    y_pred: Sequence[int],
    fold_of_sample: Sequence[str],
    fold_names: Sequence[str],
    num_classes: int,
) -> tuple[dict, list[dict]]:
    """Metrics on all samples pooled, and per fold (in `fold_names` order) on that fold's samples."""
    t = np.asarray(y_true)
    p = np.asarray(y_pred)
    folds = np.asarray(fold_of_sample)
    if not (t.shape == p.shape == folds.shape):
        raise ValueError(f"length mismatch: y_true {t.shape}, y_pred {p.shape}, folds {folds.shape}")
    pooled = summarize(t, p, num_classes)
    per_fold = []
    for name in fold_names:
        sel = folds == name
        entry = summarize(t[sel], p[sel], num_classes)
        entry["fold"] = name
        per_fold.append(entry)
    return pooled, per_fold


def per_dataset_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], dataset_of_sample: Sequence[str], num_classes: int
) -> dict[str, dict]:
    """Each data set's own metrics (`summarize` of its pooled predictions), in first-seen order.

    Empty when every sample comes from one data set: the pooled figures are then that data set's.
    """
    t, p, ds = np.asarray(y_true), np.asarray(y_pred), np.asarray(dataset_of_sample, dtype=object)
    if not (t.shape == p.shape == ds.shape):
        raise ValueError(f"length mismatch: y_true {t.shape}, y_pred {p.shape}, datasets {ds.shape}")
    names = list(dict.fromkeys(ds.tolist()))
    if len(names) < 2:
        return {}
    return {name: summarize(t[ds == name], p[ds == name], num_classes) for name in names}
