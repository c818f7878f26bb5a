"""SMIC-HS reader: `HS/<subject>/micro/{negative,positive,surprise}/<clip>/image046315.bmp`, no sheet.

Layout accepted (docs/datasets.md#smic-hs):
- root: the folder holding `HS/` (also `SMIC_all_cropped/HS/` or `SMIC_all_raw/HS/` below it, and
  a doubled `HS/HS/`), or the `HS` folder itself (it holds the `s1` ... subject folders).
- subjects: folders `s1`..`s20` (any case, zero padding dropped: `s01` -> "s1"); the HS camera has
  16 of them. Each holds `micro/` with one folder per emotion.
- emotion: the folder name, negative / positive / surprise (any case); anything else is bad input.
- clips: `<clip>/` folders such as `s1_ne_01`; frames `image046315.bmp`, `reg_image046315.bmp` or
  `.jpg`, matched by the number ending the name. Clip id "s1/s1_ne_01".

No onset, apex or offset is annotated: each clip was cut from onset to offset, so onset = the first
frame and offset = the last. The apex is chosen by `apex`:
- "middle": the frame nearest to the middle of onset..offset (the usual practice);
- "motion": the frame that differs most from the onset: mean absolute difference of the grayscale
  frames resized to `motion_size` x `motion_size` (ties -> the earliest).
Then the rules of ma2mi_jax/data/readers/micro_rules.py apply (images decodable, complete, of one
size). Bad input (no HS folder, a subject folder without `micro/`, an unknown emotion folder, a clip
folder without images or with a stray file) is an error naming the folder, or with `strict=False`
a listed drop.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from ma2mi_jax.data.media import decode
from ma2mi_jax.data.media import frames as frames_lib
from ma2mi_jax.data.readers import micro_rules
from ma2mi_jax.data.records import DataError, MicroSample, ReadReport
from ma2mi_jax.errors import ConfigError

NAME = "smic"
EMOTIONS = ("negative", "positive", "surprise")
APEX_RULES = ("middle", "motion")
HS_DIRS = ("HS", os.path.join("SMIC_all_cropped", "HS"), os.path.join("SMIC_all_raw", "HS"))
_SUBJECT = re.compile(r"^s0*(\d+)$", re.IGNORECASE)


def subject_id(name: str) -> str | None:
    """Canonical subject of a folder name: "s1", "S01" -> "s1"; None for another name."""
    m = _SUBJECT.match(name.strip())
    return f"s{int(m.group(1))}" if m else None


def _subdirs(folder: str) -> list[str]:
    """Names of the visible sub-folders of `folder`, in natural order."""
    names = [e for e in os.listdir(folder) if not e.startswith((".", "__"))]
    return sorted((e for e in names if os.path.isdir(os.path.join(folder, e))), key=frames_lib.natural_key)


def hs_root(root: str) -> str:
    """The folder holding the `s1` ... subject folders: `<root>/HS` (or below), else `root` itself."""
    for rel in HS_DIRS:
        path = frames_lib.descend_nested(os.path.join(root, rel))
        if os.path.isdir(path):
            return path
    if any(subject_id(name) for name in _subdirs(root)):
        return root
    raise DataError(
        f"smic: no HS folder in {root}: expected {os.path.join(root, 'HS')}/s1/micro/negative/s1_ne_01/"
        "image046315.bmp (or data.root set to the HS folder itself); fix data.root"
    )


def motion_apex(paths: Sequence[str], size: int) -> int:
    """Index of the frame whose grayscale (resized to size x size) differs most from the first's.

    DataError naming the file when a frame cannot be decoded.
    """
    grey = []
    for path in paths:
        bgr, problem = decode.decode_bgr(path)
        if bgr is None:
            raise DataError(f"frame {path}: {problem}; replace it from the release")
        g = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        grey.append(cv2.resize(g, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32))
    diffs = [float(np.abs(g - grey[0]).mean()) for g in grey]
    return int(np.argmax(diffs))  # the first maximum: ties go to the earliest frame


def clip_span(folder: str, apex: str, motion_size: int) -> tuple[int, int, int]:
    """(onset, apex, offset) frame numbers of a clip folder; DataError when it has no usable frames."""
    listed = frames_lib.list_frames(folder)
    if not listed:
        raise DataError("the clip folder holds no images")
    numbers = [n for n, _ in listed]
    if apex == "motion":
        chosen = numbers[motion_apex([p for _, p in listed], motion_size)]
    else:
        middle = (numbers[0] + numbers[-1]) / 2
        chosen = min(numbers, key=lambda n: (abs(n - middle), n))
    return numbers[0], chosen, numbers[-1]


def _emotion_folders(base: str, report: ReadReport, strict: bool) -> list[tuple[str, str, str]]:
    """(subject, emotion folder name, folder path) of every known emotion folder under `base`."""
    subjects = [(subject_id(name), name) for name in _subdirs(base)]
    if not any(s for s, _ in subjects):
        raise DataError(f"smic: no subject folders (s1 ... s20) in {base}; fix data.root")
    found = []
    for subject, name in subjects:
        path = os.path.join(base, name)
        if subject is None:
            micro_rules.bad_row(report, strict, name, path, "not a subject folder (expected s1 ... s20)")
            continue
        micro = os.path.join(path, "micro")
        if not os.path.isdir(micro):
            micro_rules.bad_row(report, strict, subject, path, "no micro/ folder in the subject folder")
            continue
        for emotion in _subdirs(micro):
            where = os.path.join(micro, emotion)
            if emotion.strip().lower() not in EMOTIONS:
                known = ", ".join(EMOTIONS)
                message = f"unknown emotion folder {emotion!r} (known: {known})"
                micro_rules.bad_row(report, strict, f"{subject}/{emotion}", where, message)
                continue
            found.append((subject, emotion, where))
    return found


def annotations(
    base: str, apex: str, motion_size: int, report: ReadReport, strict: bool
) -> list[micro_rules.Annotation]:
    """One annotation per clip folder under `base`: onset = first frame, offset = last, apex by `apex`."""
    out = []
    for subject, emotion, folder in _emotion_folders(base, report, strict):
        for clip in _subdirs(folder):
            path = os.path.join(folder, clip)
            clip_id = f"{subject}/{clip}"
            try:
                onset, chosen, offset = clip_span(path, apex, motion_size)
            except DataError as err:
                micro_rules.bad_row(report, strict, clip_id, path, str(err))
                continue
            out.append(
                micro_rules.Annotation(
                    where=path,
                    clip_id=clip_id,
                    subject=subject,
                    folder=path,
                    expected_folder=path,
                    onset=onset,
                    apex=chosen,
                    offset=offset,
                    emotion=emotion,
                )
            )
    return out


def check_options(apex: str, motion_size: int) -> None:
    """ConfigError unless `apex` is an apex rule and `motion_size` a usable side length."""
    if apex not in APEX_RULES:
        raise ConfigError(f"data.smic_apex={apex!r} is not an apex rule; valid: {list(APEX_RULES)}")
    if int(motion_size) < 2:
        raise ConfigError(f"data.smic_motion_size must be >= 2 pixels, got {motion_size}")


def read(
    root: str,
    *,
    class_names: Sequence[str] = EMOTIONS,
    label_map: Mapping[str, str] = {},
    strict: bool = True,
    apex: str,
    motion_size: int,
) -> tuple[list[MicroSample], ReadReport]:
    """Read SMIC-HS under `root` into validated samples and a report of drops and repairs."""
    check_options(apex, motion_size)
    frames_lib.require_dir(root, "smic root")
    base = hs_root(root)
    report = ReadReport(NAME)
    found = annotations(base, apex, int(motion_size), report, strict)
    samples = micro_rules.make_samples(
        NAME, found, known=EMOTIONS, class_names=class_names, label_map=label_map,
        strict=strict, report=report,
    )  # fmt: skip
    micro_rules.require_some(samples, report, root)
    return samples, report
