"""The overrides that fit a 24 GB card (docs/performance.md#memory-and-smaller-cards), run at :tiny.

bfloat16 compute with float32 parameters, fewer folds at once, the latent cache: each run ends
with finite figures and float32 parameters in its checkpoint.
"""

from __future__ import annotations

import json

import jax
import numpy as np

from ma2mi_jax import pretrained
from ma2mi_jax.train import finetune
from ma2mi_jax.train.finetune import workdir_files
from ma2mi_jax.train.pretrain import job as pretrain
from tests.helpers.configs import tiny_finetune_config, tiny_pretrain_config
from tests.helpers.pretrain import make_dfew

SMALLER_FINETUNE = {"dtype": "bfloat16", "finetune.folds_per_step": 2, "finetune.sequential": False}
SMALLER_PRETRAIN = {"dtype": "bfloat16", "data.latent_cache": True, "train.batch_size": 2, "train.steps": 2}


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


def test_pretraining_in_bfloat16_from_the_latent_cache(tmp_path):
    root = make_dfew(str(tmp_path / "DFEW"))
    config = tiny_pretrain_config({"data.root": root, **SMALLER_PRETRAIN})
    result = pretrain.train_and_evaluate(config, str(tmp_path / "run"))
    assert result["step"] == 2 and np.isfinite(result["loss"])
    assert (tmp_path / "run" / "latents").is_dir()
    assert _leaf_dtypes(pretrained.load_variables(str(tmp_path / "run"))["params"]) == {"float32"}
