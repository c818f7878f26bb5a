"""The fine-tuning overrides that fit a 24 GB card (docs/performance.md#memory-and-smaller-cards) at :tiny.

bfloat16 compute with float32 parameters, two folds at once: the run ends with finite figures and
float32 parameters in its checkpoint. Pre-training's (bf16 with the latent cache) runs in
tests/test_benchmarks.py's gpu check.
"""

from __future__ import annotations

import json

import jax
import numpy as np

from ma2mi_jax.train import finetune
from ma2mi_jax.train.finetune import workdir_files
from tests.helpers.configs import tiny_finetune_config

SMALLER_FINETUNE = {"dtype": "bfloat16", "finetune.folds_per_step": 2, "finetune.sequential": False}


def _leaf_dtypes(tree) -> set[str]:
    return {str(np.asarray(x).dtype) for x in jax.tree.leaves(tree)}


def test_finetuning_in_bfloat16_two_folds_at_once(data_root, tmp_path):
    config = tiny_finetune_config(data_root, str(tmp_path), **SMALLER_FINETUNE)
    results = finetune.run_cross_validation(config, tmp_path)
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert [len(g["folds"]) for g in plan["groups"]] == [2, 2]
    assert all(np.isfinite(results[k]) for k in ("accuracy", "uf1", "uar")) and results["n"] == 20
    fold, _, _ = workdir_files.load_fold_variables(tmp_path, "sub01")
    assert _leaf_dtypes(fold["params"]) == {"float32"}
