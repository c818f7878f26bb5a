"""A frozen MIACNet's features of onset/apex pairs, and a balanced linear probe of them.

BatchNorm statistics. A random init's running statistics (mean 0, variance 1) say nothing about
real activations, and a pre-trained encoder's describe macro pairs, so both would handicap the
probe for reasons other than the weights. For every init the statistics are therefore replaced by
the exact batch statistics of all the micro set's unaugmented pairs (labels unused), computed in
chunks of `probe.bn_batch` pairs and combined by the law of total variance ("precise BN"). These
include the held-out subjects' images, as test-time BatchNorm adaptation would; no label is used,
and every init gets the same treatment.

Features (`probe.features`): "c" (MIACNet's condition, what the classifier head sees),
"c+action" (c concatenated with the global average of the action map) or "map" (the fused map
before pooling, flattened: what a DiT with `model.dit_condition_map` reads place by place).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from ma2mi_jax.evaluation import metrics
from ma2mi_jax.models import miacnet as miacnet_lib
from ma2mi_jax.models.resnet import BN_MOMENTUM

FEATURES = ("c", "c+action", "map")


@functools.partial(jax.jit, static_argnums=(0,))
def _chunk_stats(
    module: miacnet_lib.MIACNet, params: Any, zero: Any, onset: jax.Array, apex: jax.Array
) -> Any:
    """Batch statistics of one chunk: train-mode BatchNorm from zero running statistics, / (1 - momentum)."""
    variables = {"params": params, "batch_stats": zero}
    _, upd = module.apply(variables, onset, apex, train=True, mutable=["batch_stats"])
    return jax.tree_util.tree_map(lambda u: u / (1.0 - BN_MOMENTUM), upd["batch_stats"])


@functools.partial(jax.jit, static_argnums=(0, 1))
def _forward(module: miacnet_lib.MIACNet, features: str, variables: Any, onset: jax.Array, apex: jax.Array):
    """Features of one chunk: c [B,C], c with GAP of the action map [B,2C], or the map [B,h*w*C] (eval BN)."""
    out = module.apply(variables, onset, apex, train=False)
    if features == "c":
        return out["c"]
    if features == "map":
        return out["map"].reshape(out["map"].shape[0], -1)
    return jnp.concatenate([out["c"], jnp.mean(out["action"], axis=(1, 2))], axis=-1)


def precise_batch_stats(module: miacnet_lib.MIACNet, variables: dict, pairs: np.ndarray, chunk: int) -> Any:
    """Exact BatchNorm statistics of MIACNet on all `pairs` uint8[N,2,H,W,3] (onset, apex).

    Train-mode BatchNorm on zero running statistics stores (1 - momentum) x the batch statistics,
    so one pass per chunk recovers them exactly; chunks are combined with weights n_i:
    mean = sum n_i m_i / N, var = sum n_i (v_i + m_i^2) / N - mean^2.
    """
    zero = jax.tree_util.tree_map(jnp.zeros_like, variables["batch_stats"])
    n = pairs.shape[0]
    means: dict[tuple, np.ndarray] = {}
    squares: dict[tuple, np.ndarray] = {}
    for start in range(0, n, chunk):
        part = pairs[start : start + chunk]
        stats = _chunk_stats(module, variables["params"], zero, part[:, 0], part[:, 1])
        flat = traverse_util.flatten_dict(jax.device_get(stats))
        w = part.shape[0] / n
        for key, value in flat.items():
            if key[-1] == "mean":
                means[key] = means.get(key, 0.0) + w * value
            else:  # "var": E[x^2] of the chunk = var + mean^2
                m = flat[(*key[:-1], "mean")]
                squares[key] = squares.get(key, 0.0) + w * (value + m * m)
    out = dict(means)
    for key, sq in squares.items():
        out[key] = np.maximum(sq - means[(*key[:-1], "mean")] ** 2, 0.0)
    return traverse_util.unflatten_dict({k: jnp.asarray(v, jnp.float32) for k, v in out.items()})


def extract_features(
    module: miacnet_lib.MIACNet, variables: dict, pairs: np.ndarray, features: str, chunk: int
) -> np.ndarray:
    """Frozen features f32[N,D] of every pair (eval-mode BatchNorm): c, c with GAP(action map), or the map."""
    if features not in FEATURES:
        raise ValueError(f"probe.features={features!r} is not one of {list(FEATURES)}")

    parts = [
        np.asarray(_forward(module, features, variables, pairs[s : s + chunk, 0], pairs[s : s + chunk, 1]))
        for s in range(0, pairs.shape[0], chunk)
    ]
    return np.concatenate(parts).astype(np.float64)


def standardised_logistic(
    x: np.ndarray, labels: np.ndarray, C: float, max_iter: int
) -> tuple[Any, np.ndarray, np.ndarray]:
    """(fit, mu, sd): a balanced logistic regression on x f64[N,D] standardised by its own mean and std."""
    from sklearn.linear_model import LogisticRegression

    mu, sd = x.mean(0), x.std(0) + 1e-6
    fit = LogisticRegression(C=C, max_iter=max_iter, class_weight="balanced")
    fit.fit((x - mu) / sd, labels)
    return fit, mu, sd


def frozen_miacnet(config: ml_collections.ConfigDict) -> miacnet_lib.MIACNet:
    """The MIACNet module whose features the probe reads (config.model's width and fusion)."""
    return miacnet_lib.MIACNet(
        width=int(config.model.resnet_width),
        fusion=str(config.model.fusion),
        stop_position_grad=False,
        register_iterations=miacnet_lib.register_iterations(config.model),
    )


def linear_probe(
    x: np.ndarray,
    labels: np.ndarray,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    num_classes: int,
    C: float = 1.0,
    max_iter: int = 1000,
) -> dict[str, float]:
    """Pooled accuracy / UF1 / UAR of a balanced logistic regression per fold (train idx, test idx).

    Features are standardised with the fold's training statistics; every sample must be in one
    fold's test set exactly once.
    """
    pred = np.full(len(labels), -1, np.int64)
    for train, test in folds:
        model, mu, sd = standardised_logistic(x[train], labels[train], C, max_iter)
        pred[test] = model.predict((x[test] - mu) / sd)
    if (pred < 0).any():
        raise ValueError(f"{int((pred < 0).sum())} sample(s) are in no fold's test set")
    return metrics.summarize(labels, pred, num_classes)
