"""The paper-size path end to end: configs/dfew.py and configs/casme2.py as a user runs them, at their
real architecture and 224 px (ResNet18 width 64, DiT-B/2 on the 28x28x4 latent, the SD-VAE
architecture with random weights), on a few generated clips.

Pre-training runs one step (checkpointed), then resumes to a second; fine-tuning starts from that
checkpoint and trains one epoch of every LOSO fold, two folds a group, to its results. Batches are
small so that the steps take seconds; everything else is the configs' own. About 3-4 minutes and
12 GiB of host memory on a 2-core CPU: the only test at this size.
"""

from __future__ import annotations

import json
import logging
import os

import pytest

from ma2mi_jax.data.synthetic import generator as synthetic
from ma2mi_jax.train import device_memory, finetune
from ma2mi_jax.train.pretrain import job as pretrain
from tests.helpers.configs import REPO, config_file, override

PRETRAIN = {
    "train.batch_size": 2,
    # No diagnostics: their programs (the DiT's prediction, the VAE decoder) at 224 px would double the
    # compile time, and they run the same code as at :tiny (tests/test_diagnostics.py).
    "train.eval_clips": 0,
    "train.log_every": 1,
    "train.checkpoint_every": 1,
    "train.picture_every": 1000,
    "train.eval_every": 0,
    "data.workers": 0,
    "device_memory_gb": 1.0,  # below the step's estimate: the run warns before its first step
}
FINETUNE = {
    "train.batch_size": 2,
    "train.epochs": 1,
    "finetune.folds_per_step": 2,
    "data.workers": 0,
    "device_memory_gb": 0.1,
}


class _Warnings(logging.Handler):
    """The device-memory check's warnings, kept (the fixture is module-scoped: no caplog)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    """Data at 224 px, one pre-training step, a resumed second, and the fine-tuning of every fold."""
    root = tmp_path_factory.mktemp("paper")
    macro, micro = str(root / "dfew"), str(root / "casme2")
    synthetic.generate("dfew", macro, size=224, clips_scale=0.02, progress=False, preview=False)
    synthetic.generate("casme2", micro, size=224, clips_scale=0.1, progress=False, preview=False)
    pre = override(config_file(os.path.join(REPO, "configs", "dfew.py")), {**PRETRAIN, "data.root": macro})
    workdir = str(root / "pretrain")
    said = _Warnings()
    logging.getLogger(device_memory.__name__).addHandler(said)
    try:
        first = pretrain.train_and_evaluate(override(pre, {"train.steps": 1}), workdir)
        resumed = pretrain.train_and_evaluate(override(pre, {"train.steps": 2}), workdir)
        ft = override(
            config_file(os.path.join(REPO, "configs", "casme2.py")),
            {**FINETUNE, "data.root": micro, "init": workdir},
        )
        results = finetune.run_cross_validation(ft, str(root / "loso"))
    finally:
        logging.getLogger(device_memory.__name__).removeHandler(said)
    return {
        "root": root, "pretrain": pre, "first": first, "resumed": resumed, "finetune": ft, "results": results,
        "warnings": said.messages,
    }  # fmt: skip


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
