"""The decoded onset/apex pairs of a micro-expression set, read once for fine-tuning and the probe.

Fine-tuning decodes every onset/apex pair once (`load_micro_pairs`); its batches are drawn and
augmented on the device (`train.finetune.inputs`, `data.device_augment`).
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Sequence

import numpy as np
import tqdm

from ma2mi_jax.data.media import decode
from ma2mi_jax.data.records import DataError, MicroSample, ReadReport

log = logging.getLogger(__name__)


def load_micro_pairs(
    samples: Sequence[MicroSample],
    image_size: int,
    strict: bool = True,
    report: ReadReport | None = None,
    threads: int = 4,
) -> np.ndarray:
    """Decode onset and apex of every sample once: uint8[N, 2, image_size, image_size, 3].

    A sample whose frames cannot be read raises a DataError naming the clip and the file; with
    `strict=False` it is logged, recorded with `report.drop` (when a report is given) and its row
    is left black: drop such samples with `drop_bad_pairs` before building folds.
    """
    pairs = np.zeros((len(samples), 2, image_size, image_size, 3), np.uint8)

    def load(i: int) -> str | None:
        s = samples[i]
        try:
            pairs[i, 0] = decode.read_image(s.onset_path, image_size)
            pairs[i, 1] = decode.read_image(s.apex_path, image_size)
        except DataError as e:
            if strict:
                # the message carries the cause: no chained traceback
                raise DataError(f"sample {s.clip_id} (subject {s.subject}): {e}") from None
            return str(e)
        return None

    with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
        errors = list(
            tqdm.tqdm(
                pool.map(load, range(len(samples))),
                total=len(samples),
                desc="decode onset/apex",
                unit="clip",
                disable=len(samples) < 2,
            )
        )
    for s, err in zip(samples, errors, strict=True):
        if err is not None:
            log.warning("skipping sample %s: %s", s.clip_id, err)
            if report is not None:
                report.drop(s.clip_id, err)
    return pairs


def drop_bad_pairs(
    samples: Sequence[MicroSample], pairs: np.ndarray, report: ReadReport
) -> tuple[list[MicroSample], np.ndarray]:
    """Remove the samples `load_micro_pairs(strict=False)` dropped into `report`."""
    bad = {clip for clip, _ in report.dropped}
    keep = [i for i, s in enumerate(samples) if s.clip_id not in bad]
    return [samples[i] for i in keep], pairs[keep]
