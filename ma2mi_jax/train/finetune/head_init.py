"""Each fold's classifier head started at a linear probe of its training subjects (`finetune.head_init`).

"zero" (the paper's): the head is zero-initialised, so its first gradients reach the encoders
before it has learnt to read them. "probe": before fine-tuning, every fold fits the balanced
logistic regression of `scripts/probe.py` on the frozen condition c of its own training subjects'
unaugmented pairs (BatchNorm statistics re-estimated on those pairs only: no held-out image is
seen) and starts its head there, its standardisation folded into the weights:
logits = coef · (c - mu) / sd + intercept = (coef / sd) · c + (intercept - (coef / sd) · mu).
That is the "linear probe, then fine-tune" (LP-FT) recipe with a converged probe.

The same re-estimation, without the head, gives `finetune.bn_reestimate` its per-fold starting
statistics (`fold_starts`), and the same probe of a fold's current encoder gives the
`finetune.probe_every` instrument its held-out predictions (`current_probe_predictions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from ma2mi_jax.evaluation import probe_fit

HEAD_INITS = ("zero", "probe")


def dense_from_logistic(
    coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray, mu: np.ndarray, sd: np.ndarray, n: int
) -> dict[str, np.ndarray]:
    """A Dense head {"kernel" f32[D,n], "bias" f32[n]} that gives the fitted model's logits on raw c.

    `coef` [K,D] and `intercept` [K] are scikit-learn's for the K classes it saw (`classes`); a
    binary fit (K=1) becomes the two logits -z/2, +z/2. A class absent from the training subjects
    gets zero weights and the smallest bias of the others.
    """
    if coef.shape[0] == 1 and len(classes) == 2:
        coef, intercept = np.concatenate([-coef, coef]) / 2, np.concatenate([-intercept, intercept]) / 2
    w = coef / sd  # [K,D]
    b = intercept - w @ mu  # [K]
    kernel = np.zeros((coef.shape[1], n), np.float32)
    bias = np.full((n,), b.min(), np.float32)
    kernel[:, classes] = w.T
    bias[classes] = b
    return {"kernel": kernel, "bias": bias}


def reestimated_miacnet(
    module: Any, config: ml_collections.ConfigDict, variables: dict, pairs: np.ndarray
) -> dict:
    """MIACNet's {"params", "batch_stats"} of classifier `variables`, its BatchNorm statistics
    re-estimated on `pairs` uint8[n,2,H,W,3] (train-mode passes, no augmentation, labels unused)."""
    miac = {"params": variables["params"]["miacnet"], "batch_stats": variables["batch_stats"]["miacnet"]}
    miac["batch_stats"] = probe_fit.precise_batch_stats(module, miac, pairs, int(config.probe.bn_batch))
    return miac


def fold_starts(
    config: ml_collections.ConfigDict,
    variables: dict,
    pairs: np.ndarray,
    labels: np.ndarray,
    train_indices: Sequence[np.ndarray],
    *,
    heads: bool,
    batch_stats: bool,
) -> dict:
    """Each fold's start from its training pairs, stacked over the folds F:

    "head": {"kernel" f32[F,D,N], "bias" f32[F,N]} (a probe fit, with `heads`) and
    "batch_stats": MIACNet's re-estimated statistics, leaves [F,...] (with `batch_stats`).
    One re-estimation per distinct training set serves both; folds with the same training pairs
    (a group's padding folds) share it.
    """
    module = probe_fit.frozen_miacnet(config)
    chunk, n = int(config.probe.bn_batch), len(tuple(config.data.class_names))
    fitted: dict[bytes, dict] = {}
    for train in train_indices:
        train = np.asarray(train)
        key = train.tobytes()
        if key in fitted:
            continue
        miac = reestimated_miacnet(module, config, variables, pairs[train])
        start: dict = {}
        if batch_stats:
            start["batch_stats"] = miac["batch_stats"]
        if heads:
            x = probe_fit.extract_features(module, miac, pairs[train], "c", chunk)  # [n_train, D]
            fit, mu, sd = probe_fit.standardised_logistic(
                x, labels[train], float(config.probe.C), int(config.probe.max_iter)
            )
            start["head"] = dense_from_logistic(fit.coef_, fit.intercept_, fit.classes_, mu, sd, n)
        fitted[key] = start
    per_fold = [fitted[np.asarray(t).tobytes()] for t in train_indices]
    return {k: jax.tree.map(lambda *xs: np.stack(xs), *[s[k] for s in per_fold]) for k in per_fold[0]}


def probe_heads(
    config: ml_collections.ConfigDict,
    variables: dict,
    pairs: np.ndarray,
    labels: np.ndarray,
    train_indices: Sequence[np.ndarray],
) -> dict[str, np.ndarray]:
    """Stacked heads {"kernel" f32[F,D,N], "bias" f32[F,N]}, one fitted on each fold's training pairs.

    Folds with the same training pairs (a group's padding folds) share one fit.
    """
    return fold_starts(config, variables, pairs, labels, train_indices, heads=True, batch_stats=False)["head"]


def current_probe_predictions(
    config: ml_collections.ConfigDict,
    variables: dict,
    pairs: np.ndarray,
    labels: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
) -> np.ndarray:
    """int64[n_test]: the probe of one fold's current encoder (`variables`, the classifier's), fitted on
    its training pairs' c (statistics re-estimated on them, as for the head) and applied to its test pairs."""
    if len(test) == 0:
        return np.zeros((0,), np.int64)
    module = probe_fit.frozen_miacnet(config)
    chunk = int(config.probe.bn_batch)
    miac = reestimated_miacnet(module, config, variables, pairs[train])
    x_train = probe_fit.extract_features(module, miac, pairs[train], "c", chunk)  # [n_train, D]
    x_test = probe_fit.extract_features(module, miac, pairs[test], "c", chunk)  # [n_test, D]
    fit, mu, sd = probe_fit.standardised_logistic(
        x_train, labels[train], float(config.probe.C), int(config.probe.max_iter)
    )
    return np.asarray(fit.predict((x_test - mu) / sd), np.int64)
