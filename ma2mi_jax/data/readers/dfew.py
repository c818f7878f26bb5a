"""DFEW reader: face-cropped frame folders `Clip/clip_224x224/00001/` or videos `Clip/clip_224x224_avi/`.

Layout accepted (docs/datasets.md#macro-expression-sets-pre-training):
- source "frames": `<root>/Clip/clip_224x224/<5-digit clip>/<clip>_<frame>.jpg`, frames ordered by
  the parsed frame number.
- source "video": `<root>/Clip/clip_224x224_avi/<5-digit clip>.avi`; length from OpenCV.
- labels (unused by MA2MI; the supervised baseline uses them) from
  `EmoLabel_DataSplit/train(single-labeled)/set_1.csv` and `test(single-labeled)/set_1.csv`
  (header `video_name,label`, video_name an unpadded number, label 1 Happy, 2 Sad, 3 Neutral,
  4 Angry, 5 Surprise, 6 Disgust, 7 Fear). The two set_1 files together hold every single-labeled
  clip once; the label's name is looked up in `class_names` (index, or -1 when absent). A clip in
  neither file (multi-labeled, or no split folder at all) gets label -1, emotion None.
- The report groups clips by split ("train", "test", "unsplit") and emotion ("unlabelled").

Clips with under two frames are dropped and listed; empty or unreadable clips, empty or truncated
frame files and labels outside 1..7 are bad input (error naming clip/file/row, or listed drops
when `strict=False`). Split-file problems are bad input too; with `strict=False` they are counted
and listed in the report's annotation problems:
- a clip listed in a split file but not on disk ("listed but missing on disk");
- a clip listed twice with another split or label ("conflicting labels"): it is kept unlabelled
  (label -1, split "unsplit"), since neither row can be trusted.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

from ma2mi_jax.data.media import frames as frames_lib
from ma2mi_jax.data.readers import macro_folders, sheets
from ma2mi_jax.data.records import DataError, MacroClip, ReadReport
from ma2mi_jax.errors import ConfigError

NAME = "dfew"
LABEL_NAMES = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")  # label 1..7
SPLIT_FILES = (
    ("train", os.path.join("EmoLabel_DataSplit", "train(single-labeled)", "set_1.csv")),
    ("test", os.path.join("EmoLabel_DataSplit", "test(single-labeled)", "set_1.csv")),
)
FRAMES_DIR = os.path.join("Clip", "clip_224x224")
VIDEO_DIR = os.path.join("Clip", "clip_224x224_avi")
MISSING_ON_DISK = "listed but missing on disk"
CONFLICTING = "conflicting labels"
SPLIT_HINT = (
    "It is one of the release's EmoLabel_DataSplit files: restore it, or remove it (its clips are "
    "then unlabelled, which MA2MI pre-training does not need)."
)


class SplitEntry(NamedTuple):
    """One clip's row of a split file."""

    split: str  # "train" | "test"
    emotion: str
    where: str  # "<file>, row <n>"


def _split_problem(report: ReadReport, strict: bool, kind: str, clip: str, message: str, then: str) -> None:
    """Raise DataError for a split-file problem under strict reading, else list it (`then`: what follows)."""
    if strict:
        raise DataError(f"{message}. Correct the split file, or set data.strict=False to list such problems.")
    report.problem(kind, clip, f"{message}; {then}")


def read_labels(root: str, strict: bool, report: ReadReport) -> dict[int, SplitEntry]:
    """Clip number -> its split-file entry, from the set_1 split files present under `root`.

    A clip listed again with another split or label is an error (strict) or listed in the report
    and left out (so it is unlabelled).
    """
    labels: dict[int, SplitEntry] = {}
    conflicting: set[int] = set()
    for split, rel in SPLIT_FILES:
        path = os.path.join(root, rel)
        if not os.path.isfile(path):
            continue
        table = sheets.read_table(path, ("video_name", "label"), hint=SPLIT_HINT)
        for row in table.rows:
            try:
                clip = sheets.cell_int(row["video_name"])
                value = sheets.cell_int(row["label"])
                if clip is None or value is None or not 1 <= value <= len(LABEL_NAMES):
                    raise ValueError("expected a clip number and a label 1..7")
            except ValueError as err:
                message = (f"{table.where(row)}: bad entry video_name={row.text('video_name')!r} "
                           f"label={row.text('label')!r} ({err})")  # fmt: skip
                if strict:
                    raise DataError(message + "; correct the row or set data.strict=False") from None
                report.drop(f"{split}:{row.text('video_name')}", message)
                continue
            entry = SplitEntry(split, LABEL_NAMES[value - 1], table.where(row))
            first = labels.setdefault(clip, entry)
            if (first.split, first.emotion) != (entry.split, entry.emotion):
                _split_problem(
                    report, strict, CONFLICTING, f"{clip:05d}",
                    f"{entry.where}: clip {clip} is listed as {entry.split} {entry.emotion}, but "
                    f"{first.where} lists it as {first.split} {first.emotion}", "kept unlabelled",
                )  # fmt: skip
                conflicting.add(clip)
    return {clip: entry for clip, entry in labels.items() if clip not in conflicting}


def _label_of(name: str, labels: dict[int, SplitEntry], classes: list[str]) -> tuple[str, int, str | None]:
    number = int(name) if name.isdigit() else None
    if number is None or number not in labels:
        return "unsplit", -1, None
    split, emotion, _ = labels[number]
    return split, classes.index(emotion) if emotion in classes else -1, emotion


def _check_listed_on_disk(
    labels: dict[int, SplitEntry], on_disk: set[int], base: str, report: ReadReport, strict: bool
) -> None:
    """Every clip of the split files must be on disk (error, or listed with `strict=False`)."""
    for clip in sorted(set(labels) - on_disk):
        entry = labels[clip]
        _split_problem(
            report, strict, MISSING_ON_DISK, f"{clip:05d}",
            f"{entry.where}: clip {clip} ({entry.split}, {entry.emotion}) is not in {base}", "ignored",
        )  # fmt: skip


def read(
    root: str,
    *,
    source: str = "frames",
    class_names: Sequence[str] = LABEL_NAMES,
    strict: bool = True,
) -> tuple[list[MacroClip], ReadReport]:
    """List DFEW's clips (frame folders or videos) with their set_1 labels when present."""
    frames_lib.require_dir(root, "dfew root")
    if source not in ("frames", "video"):
        raise ConfigError(f"data.source must be 'frames' or 'video' for dfew, got {source!r}")
    report = ReadReport(NAME)
    labels = read_labels(root, strict, report)
    classes = [c.strip().lower() for c in class_names]
    clips: list[MacroClip] = []
    rel = FRAMES_DIR if source == "frames" else VIDEO_DIR
    base = frames_lib.descend_nested(os.path.join(root, rel))
    if not os.path.isdir(base):
        other = "video" if source == "frames" else "frames"
        raise DataError(
            f"dfew: {base} not found (data.source={source!r}); unpack the release's {rel} there, "
            f"or set data.source={other!r} if you have the other form."
        )
    on_disk: set[int] = set()
    for entry in sorted(os.listdir(base), key=frames_lib.natural_key):
        path = os.path.join(base, entry)
        stem = os.path.splitext(entry)[0] if source == "video" else entry
        if stem.isdigit() and (os.path.isdir(path) if source == "frames" else frames_lib.is_video(entry)):
            on_disk.add(int(stem))
        if source == "frames":
            if not os.path.isdir(path):
                continue
            split, label, emotion = _label_of(entry, labels, classes)
            clip = macro_folders.frame_clip(NAME, entry, path, group=split, report=report, strict=strict,
                                      label=label, emotion=emotion)  # fmt: skip
        else:
            if not frames_lib.is_video(entry):
                continue
            stem = os.path.splitext(entry)[0]
            split, label, emotion = _label_of(stem, labels, classes)
            clip = macro_folders.video_clip(NAME, stem, path, group=split, report=report, strict=strict,
                                      label=label, emotion=emotion)  # fmt: skip
        if clip is not None:
            clips.append(clip)
    _check_listed_on_disk(labels, on_disk, base, report, strict)
    macro_folders.require_clips(clips, report, root, f"{rel}/<clip>")
    return clips, report
