"""Each fold's classifier head started at a linear probe of its training subjects (`finetune.head_init`).

"zero" (the paper's): the head is zero-initialised, so its first gradients reach the encoders
before it has learnt to read them. "probe": before fine-tuning, every fold fits the balanced
logistic regression of `scripts/probe.py` on the frozen condition c of its own training subjects'
unaugmented pairs (BatchNorm statistics re-estimated on those pairs only: no held-out image is
seen) and starts its head there, its standardisation folded into the weights:
logits = coef · (c - mu) / sd + intercept = (coef / sd) · c + (intercept - (coef / sd) · mu).
That is the "linear probe, then fine-tune" (LP-FT) recipe with a converged probe.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    module = probe_fit.frozen_miacnet(config)
    chunk, n = int(config.probe.bn_batch), len(tuple(config.data.class_names))
    fitted: dict[bytes, dict[str, np.ndarray]] = {}
    for train in train_indices:
        train = np.asarray(train)
        key = train.tobytes()
        if key in fitted:
            continue
        miac = {"params": variables["params"]["miacnet"], "batch_stats": variables["batch_stats"]["miacnet"]}
        miac["batch_stats"] = probe_fit.precise_batch_stats(module, miac, pairs[train], chunk)
        x = probe_fit.extract_features(module, miac, pairs[train], "c", chunk)  # [n_train, D]
        fit, mu, sd = probe_fit.standardised_logistic(
            x, labels[train], float(config.probe.C), int(config.probe.max_iter)
        )
        fitted[key] = dense_from_logistic(fit.coef_, fit.intercept_, fit.classes_, mu, sd, n)
    heads = [fitted[np.asarray(t).tobytes()] for t in train_indices]
    return {k: np.stack([h[k] for h in heads]) for k in ("kernel", "bias")}
