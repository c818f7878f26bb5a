"""Linear probe: does a frozen MIACNet already separate the micro-expression classes?

`run_probe(config, workdir, seeds)` reads the micro data set of a fine-tuning config, builds
MIACNet from `config.init` (a pre-training workdir, an exported classifier, "imagenet:<file>" or
"scratch"), re-estimates its BatchNorm statistics on the micro set's onset/apex pairs, extracts
frozen features of every pair and, for every fold of the config's protocol (LOSO or k-fold),
fits a class-balanced logistic regression (scikit-learn) on the fold's training subjects and
predicts its held-out subjects. Accuracy, UF1 and UAR are pooled over folds, as in fine-tuning.

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

import copy
import functools
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from ma2mi_jax import checkpoints
from ma2mi_jax.evaluation import metrics
from ma2mi_jax.models import miacnet as miacnet_lib
from ma2mi_jax.models.resnet import BN_MOMENTUM
from ma2mi_jax.train import finetune

FEATURES = ("c", "c+action", "map")
FILENAME = "probe.json"


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


def _seed_config(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
    c = copy.deepcopy(config)
    with c.unlocked():
        c.seed = int(seed)
    return c


def is_random_init(init: str) -> bool:
    """True for "scratch" / "" (a random init per seed); pre-trained inits are deterministic."""
    return str(init).strip() in ("", "scratch")


def probe_one(
    config: ml_collections.ConfigDict, pairs: np.ndarray, labels: np.ndarray, folds: list, seed: int
) -> dict[str, Any]:
    """Probe `config.init`'s MIACNet (a random one seeded by `seed`): metrics and where it came from."""
    c = _seed_config(config, seed)
    model = finetune.build_classifier(c)
    variables, what = finetune.initial_variables(c, model)
    module = frozen_miacnet(c)
    miac = {"params": variables["params"]["miacnet"], "batch_stats": variables["batch_stats"]["miacnet"]}
    chunk = int(c.probe.bn_batch)
    miac["batch_stats"] = precise_batch_stats(module, miac, pairs, chunk)
    x = extract_features(module, miac, pairs, str(c.probe.features), chunk)
    result = linear_probe(x, labels, folds, len(c.data.class_names), float(c.probe.C), int(c.probe.max_iter))
    return {"seed": int(seed), "init": what, "feature_dim": int(x.shape[1]), **result}


def default_workdir(config: ml_collections.ConfigDict) -> str:
    """<init>/probe for a folder init (pre-training workdir or export), else workdirs/probe_<init kind>."""
    init = str(config.init).strip()
    if init and not is_random_init(init) and not init.startswith("imagenet:"):
        return os.path.join(init, "probe")
    return os.path.join("workdirs", "probe_" + ("imagenet" if init.startswith("imagenet:") else "scratch"))


def run_probe(config: ml_collections.ConfigDict, workdir: str, seeds: Sequence[int]) -> dict[str, Any]:
    """Probe `config.init` on the config's micro data set and protocol; writes `<workdir>/probe.json`."""
    samples, pairs = finetune.read_data(config)
    specs = finetune.fold_specs_from_protocol(config, samples)
    folds = [(s.train_indices, s.test_indices) for s in specs]
    labels = np.asarray([s.label for s in samples], np.int64)
    seeds = list(seeds) if is_random_init(config.init) else list(seeds)[:1]
    per_seed = [probe_one(config, pairs, labels, folds, s) for s in seeds]
    out: dict[str, Any] = {
        "init": str(config.init) or "scratch",
        "features": str(config.probe.features),
        "protocol": str(config.protocol.name),
        "num_folds": len(folds),
        "num_samples": len(samples),
        "batch_stats": f"re-estimated on all {len(samples)} onset/apex pairs of the micro set, labels unused",
        "per_seed": per_seed,
    }
    for key in ("uf1", "uar", "accuracy"):
        values = np.asarray([r[key] for r in per_seed], np.float64)
        out[key] = float(values.mean())
        out[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    checkpoints.write_json(os.path.join(workdir, FILENAME), out)
    return out


def summary(result: dict[str, Any]) -> str:
    """One line: UF1 / UAR / accuracy (mean ± std over seeds) of the probe."""
    n = len(result["per_seed"])
    spread = f" ± {result['uf1_std']:.4f}" if n > 1 else ""
    return (
        f"linear probe of {result['init']} ({result['features']}, {result['protocol']}, "
        f"{result['num_folds']} folds, {n} seed(s)): UF1 {result['uf1']:.4f}{spread}  "
        f"UAR {result['uar']:.4f}  accuracy {100 * result['accuracy']:.2f} %"
    )
