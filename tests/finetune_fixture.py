"""A tiny CASME II-layout data set and `:tiny` fine-tuning config shared by the fine-tuning tests."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from ma2mi_jax import configlib

CLASSES = configlib.CASME2_CLASSES
HEADER = (
    "Subject", "Filename", None, "OnsetFrame", "ApexFrame", "OffsetFrame", None, "Action Units",
    "Estimated Emotion",
)  # fmt: skip


def write_casme2(
    root: str, subjects: int = 4, clips_per_subject: int = 5, size: int = 32, seed: int = 0
) -> str:
    """CASME II layout: CASME2-coding-tiny.xlsx + Cropped/subNN/EPxx/reg_img<n>.jpg (onset, apex, offset).

    Every subject has one clip of each class (in rotating order); frames are seeded noise plus a
    class-dependent bright square in the apex frame, so predictions differ between samples.
    """
    import openpyxl

    rng = np.random.default_rng(seed)
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Sheet1"
    ws.append(list(HEADER))
    for s in range(1, subjects + 1):
        for c in range(clips_per_subject):
            label = (c + s) % len(CLASSES)
            name = f"EP{c + 1:02d}_0{s}f"
            onset, apex, offset = 10 + c, 14 + c, 18 + c
            ws.append([s, name, None, onset, apex, offset, None, "4", CLASSES[label]])
            folder = os.path.join(root, "Cropped", f"sub{s:02d}", name)
            os.makedirs(folder, exist_ok=True)
            base = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            for n in (onset, apex, offset):
                img = base.copy()
                if n == apex:
                    lo = 2 + 5 * label
                    img[lo : lo + 6, lo : lo + 6] = 255
                Image.fromarray(img).save(os.path.join(folder, f"reg_img{n}.jpg"), quality=95)
    wb.save(os.path.join(root, "CASME2-coding-tiny.xlsx"))
    return root


def tiny_config(root: str, workdir: str, **overrides):
    """configs/synthetic_loso.py:tiny on `root` from scratch, with dotted-key overrides."""
    import importlib.util

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(
        "synthetic_loso", os.path.join(here, "configs", "synthetic_loso.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("tiny")
    config.data.root = root
    config.init = "scratch"
    config.workdir = workdir
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def run_and_kill(data_root: str, workdir: str, overrides: dict, kill_at_batch: int) -> None:
    """Run cross-validation in this process and SIGKILL it when the `kill_at_batch`-th batch is drawn."""
    import signal

    from ma2mi_jax.train import finetune

    draw = finetune.GroupBatches.__next__
    count = {"n": 0}

    def killing_next(self):
        count["n"] += 1
        if count["n"] == kill_at_batch:
            os.kill(os.getpid(), signal.SIGKILL)
        return draw(self)

    finetune.GroupBatches.__next__ = killing_next
    finetune.run_cross_validation(tiny_config(data_root, workdir, **overrides), workdir)


if __name__ == "__main__":
    import json
    import sys

    run_and_kill(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]))
