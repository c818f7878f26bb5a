"""The paper-size chain of tests/test_paper_size.py, run in a fresh process at XLA's default level.

    python -m tests.helpers.paper_size ROOT   (from the repository root)

Generates DFEW and CASME II layouts at 224 px under ROOT, pre-trains configs/dfew.py one step, resumes
it to a second, fine-tunes configs/casme2.py from it, and writes ROOT/run.json: the two pre-training
runs' metrics, the cross-validation's results and the device-memory warnings. At 224 px the steps'
run time outweighs their compile time, which XLA's optimised code roughly halves against the suite's
level 0 (docs/decisions.md#xla-optimisation-level-in-tests).
"""

from __future__ import annotations

import json
import logging
import os
import sys

import ml_collections

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


class Warnings(logging.Handler):
    """The device-memory check's warnings, kept."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def configs(root: str) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
    """(pre-training, fine-tuning) configs of the chain: the configs' own, batches of 2, data under root."""
    pre = override(
        config_file(os.path.join(REPO, "configs", "dfew.py")),
        {**PRETRAIN, "data.root": os.path.join(root, "dfew")},
    )
    ft = override(
        config_file(os.path.join(REPO, "configs", "casme2.py")),
        {**FINETUNE, "data.root": os.path.join(root, "casme2"), "init": os.path.join(root, "pretrain")},
    )
    return pre, ft


def run(root: str) -> dict:
    """Data, one pre-training step, a resumed second, every fold fine-tuned; what run.json holds."""
    pre, ft = configs(root)
    synthetic.generate("dfew", pre.data.root, size=224, clips_scale=0.02, progress=False, preview=False)
    synthetic.generate("casme2", ft.data.root, size=224, clips_scale=0.1, progress=False, preview=False)
    said = Warnings()
    logging.getLogger(device_memory.__name__).addHandler(said)
    first = pretrain.train_and_evaluate(override(pre, {"train.steps": 1}), ft.init)
    resumed = pretrain.train_and_evaluate(override(pre, {"train.steps": 2}), ft.init)
    results = finetune.run_cross_validation(ft, os.path.join(root, "loso"))
    out = {"first": first, "resumed": resumed, "results": results, "warnings": said.messages}
    with open(os.path.join(root, "run.json"), "w") as f:
        json.dump(out, f, default=float)
    return out


if __name__ == "__main__":
    run(sys.argv[1])
