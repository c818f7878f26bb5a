"""The paper-size path end to end: configs/dfew.py and configs/casme2.py as a user runs them, at their
real architecture and 224 px (ResNet18 width 64, DiT-B/2 on the 28x28x4 latent, the SD-VAE
architecture with random weights), on a few generated clips.

Pre-training runs one step (checkpointed), then resumes to a second; fine-tuning starts from that
checkpoint and trains one epoch of every LOSO fold, two folds a group, to its results. Batches are
small so that the steps take seconds; everything else is the configs' own. About 2 minutes and
7 GiB of host memory on a 2-core CPU, in a fresh process at XLA's default level (its optimised code
halves the steps' run time at this size): the only test at this size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import paper_size
from tests.helpers.configs import REPO
from tests.helpers.pretrain import default_level_flags


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory, compile_cache):
    """Data at 224 px, one pre-training step, a resumed second, and the fine-tuning of every fold, in a
    fresh process at XLA's default level (tests.helpers.paper_size)."""
    root = tmp_path_factory.mktemp("paper")
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": default_level_flags(),
        "JAX_COMPILATION_CACHE_DIR": compile_cache,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tests.helpers.paper_size", str(root)],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    pre, ft = paper_size.configs(str(root))
    return {"root": root, "pretrain": pre, "finetune": ft, **json.loads((root / "run.json").read_text())}


@pytest.mark.slow
def test_pretraining_at_paper_size_checkpoints_and_resumes(paper_run):
    pre, root = paper_run["pretrain"], paper_run["root"]
    assert (pre.data.image_size, pre.model.resnet_width, pre.model.dit) == (224, 64, "B/2")
    assert sorted(os.listdir(root / "pretrain" / "checkpoints"), key=int) == ["1", "2"]
    assert paper_run["first"]["step"] == 1 and paper_run["resumed"]["step"] == 2
    metrics = json.loads((root / "pretrain" / "metrics.json").read_text())
    assert metrics["step"] == 2 and metrics["loss"] == pytest.approx(paper_run["resumed"]["loss"])
    # Each run compiles its step before the first and warns that it exceeds device_memory_gb.
    warned = [m for m in paper_run["warnings"] if m.startswith("the pre-training step needs about")]
    assert len(warned) == 2 and "more than its 1.0 GiB" in warned[0] and "latent_cache=True" in warned[0]


@pytest.mark.slow
def test_finetuning_at_paper_size_reaches_results(paper_run):
    results, root = paper_run["results"], paper_run["root"]
    ft = paper_run["finetune"]
    assert (ft.data.image_size, ft.model.resnet_width) == (224, 64)
    assert results["epochs"] == 1 and results["n"] == sum(f["n"] for f in results["per_fold"])
    assert str(root / "pretrain") in results["init"]
    plan = json.loads((root / "loso" / "plan.json").read_text())
    assert all(len(g["folds"]) <= 2 for g in plan["groups"]) and len(plan["groups"]) >= 2
    assert (root / "loso" / "predictions.csv").is_file()
    warned = [m for m in paper_run["warnings"] if m.startswith("the fine-tuning step")]
    assert len(warned) == len(plan["groups"]) and "more than its 0.1 GiB" in warned[0], paper_run["warnings"]
