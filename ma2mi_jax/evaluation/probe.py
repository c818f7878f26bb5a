"""Linear probe: does a frozen MIACNet already separate the micro-expression classes?

`run_probe(config, workdir, seeds)` reads the micro data set of a fine-tuning config, builds
MIACNet from `config.init` (a pre-training workdir, an exported classifier, "imagenet:<file>" or
"scratch"), re-estimates its BatchNorm statistics on the micro set's onset/apex pairs, extracts
frozen features of every pair and, for every fold of the config's protocol (LOSO or k-fold),
fits a class-balanced logistic regression (scikit-learn) on the fold's training subjects and
predicts its held-out subjects. Accuracy, UF1 and UAR are pooled over folds, as in fine-tuning.

The features, the precise BatchNorm statistics and the per-fold fit are in `probe_fit`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from ma2mi_jax import files
from ma2mi_jax.evaluation import probe_fit
from ma2mi_jax.train import finetune

FILENAME = "probe.json"


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
    module = probe_fit.frozen_miacnet(c)
    miac = {"params": variables["params"]["miacnet"], "batch_stats": variables["batch_stats"]["miacnet"]}
    chunk = int(c.probe.bn_batch)
    miac["batch_stats"] = probe_fit.precise_batch_stats(module, miac, pairs, chunk)
    x = probe_fit.extract_features(module, miac, pairs, str(c.probe.features), chunk)
    num_classes = len(c.data.class_names)
    result = probe_fit.linear_probe(x, labels, folds, num_classes, float(c.probe.C), int(c.probe.max_iter))
    return {"seed": int(seed), "init": what, "feature_dim": int(x.shape[1]), **result}


def output_dir(config: ml_collections.ConfigDict, workdir_given: bool) -> str:
    """`config.workdir` when the user set it, else <init>/probe for a folder init, else workdirs/probe_<kind>.

    A fine-tuning config's own default workdir is the fine-tuning run's, so it is not the probe's default.
    """
    if workdir_given:
        return str(config.workdir)
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
    files.write_json(os.path.join(workdir, FILENAME), out)
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
