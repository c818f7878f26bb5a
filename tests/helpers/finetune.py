"""Shared by the fine-tuning tests: a tiny CASME II-layout set, fold steps on fixed data, killed runs.

Run as a script it runs cross-validation in a fresh process (from the repository root):
    python -m tests.helpers.finetune DATA_ROOT WORKDIR OVERRIDES_JSON KILL_AT_EPOCH
KILL_AT_EPOCH > 0 sends the process SIGKILL to itself as that epoch starts; 0 runs to the end.
"""

from __future__ import annotations

import os
import signal

import numpy as np
from PIL import Image

from ma2mi_jax import configlib
from tests.helpers.configs import tiny_finetune_config

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


def fixed_data(num_folds: int, batch: int = 4, size: int = 32, seed: int = 3):
    """A data set of F x B seeded pairs and the batch that gives fold f its f-th block, unwarped.

    Returns (data for the runner, batch {"indices" int32[F,B], "warp" identity f32[F,B,2,3]},
    the same batch as frames {"frame0","frame1","label"} [F,B,...]).
    """
    from ma2mi_jax.data import device_augment
    from ma2mi_jax.train.finetune import fold_step

    rng = np.random.default_rng(seed)
    n = num_folds * batch
    frames = {
        "frame0": rng.integers(0, 256, (num_folds, batch, size, size, 3), dtype=np.uint8),
        "frame1": rng.integers(0, 256, (num_folds, batch, size, size, 3), dtype=np.uint8),
        "label": rng.integers(0, 5, (num_folds, batch)).astype(np.int32),
    }
    pairs = np.stack([frames["frame0"], frames["frame1"]], axis=2).reshape(n, 2, size, size, 3)
    labels = frames["label"].reshape(n)
    indices = np.arange(n, dtype=np.int32).reshape(num_folds, batch)
    warp = device_augment.identity_matrices(n).reshape(num_folds, batch, 2, 3)
    return fold_step.fold_data(pairs, labels), {"indices": indices, "warp": warp}, frames


def fold_runner(model, tx, data, *, frozen=(), aux=None, aux_weight=0.0, sequential=False, fold_threads=1):
    """The run's FoldGroupRunner without augmentation (so a step sees exactly the indexed frames)."""
    from ma2mi_jax import losses
    from ma2mi_jax.data.device_augment import PairAugment
    from ma2mi_jax.train.finetune import fold_execution, fold_step

    frame_step = fold_step.make_frame_step(
        model, tx, losses.cross_entropy, frozen, None if aux is None else aux.loss, aux_weight
    )
    return fold_execution.FoldGroupRunner(
        fold_step.make_fold_step(frame_step, PairAugment()),
        fold_step.make_fold_predict(model),
        data,
        sequential=sequential,
        frozen_inputs=None if aux is None else aux.frozen_inputs(),
        fold_threads=fold_threads,
    )


def killing_batch_source(kill_at_epoch: int):
    """A batch source (run_cross_validation's `batch_source`) that SIGKILLs this process as epoch
    `kill_at_epoch` is about to be trained, i.e. after the checkpoints of the epochs before it."""
    from ma2mi_jax.train import finetune

    class KillingBatches(finetune.FoldBatches):
        def epoch(self, epoch: int) -> dict:
            if epoch == kill_at_epoch:
                os.kill(os.getpid(), signal.SIGKILL)
            return super().epoch(epoch)

    def source(folds, steps_per_epoch, config):
        base = finetune.fold_batches(folds, steps_per_epoch, config)
        return KillingBatches(
            base.train_indices,
            base.seeds,
            base.batch_size,
            base.steps_per_epoch,
            base.augment,
            base.image_size,
        )

    return source


def run_and_kill(data_root: str, workdir: str, overrides: dict, kill_at_epoch: int) -> None:
    """Run cross-validation in this process and SIGKILL it as epoch `kill_at_epoch` starts."""
    from ma2mi_jax.train import finetune

    config = tiny_finetune_config(data_root, workdir, **overrides)
    finetune.run_cross_validation(config, workdir, batch_source=killing_batch_source(kill_at_epoch))


if __name__ == "__main__":
    import json
    import sys

    # data_root workdir overrides-json kill_at_epoch (0: run to the end, e.g. on simulated devices)
    kill_at = int(sys.argv[4])
    if kill_at:
        run_and_kill(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), kill_at)
    else:
        from ma2mi_jax.train import finetune

        cfg = tiny_finetune_config(sys.argv[1], sys.argv[2], **json.loads(sys.argv[3]))
        finetune.run_cross_validation(cfg, sys.argv[2])
