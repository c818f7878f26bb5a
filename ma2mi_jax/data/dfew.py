"""DFEW reader: face-cropped frame folders `Clip/clip_224x224/00001/` or videos `Clip/clip_224x224_avi/`.

Layout accepted (../shared/datasets.md):
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

Clips with under two frames are dropped and listed; empty or unreadable clips, empty frame files
and labels outside 1..7 are bad input (error naming clip/file/row, or listed drops when
`strict=False`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ma2mi_jax.data import folders, sheets
from ma2mi_jax.data import frames as frames_lib
from ma2mi_jax.data.records import DataError, MacroClip, ReadReport

NAME = "dfew"
LABEL_NAMES = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")  # label 1..7
SPLIT_FILES = (
    ("train", os.path.join("EmoLabel_DataSplit", "train(single-labeled)", "set_1.csv")),
    ("test", os.path.join("EmoLabel_DataSplit", "test(single-labeled)", "set_1.csv")),
)
FRAMES_DIR = os.path.join("Clip", "clip_224x224")
VIDEO_DIR = os.path.join("Clip", "clip_224x224_avi")


def read_labels(root: str, strict: bool, report: ReadReport) -> dict[int, tuple[str, str]]:
    """Clip number -> (split, emotion name) from the set_1 split files present under `root`."""
    labels: dict[int, tuple[str, str]] = {}
    for split, rel in SPLIT_FILES:
        path = os.path.join(root, rel)
        if not os.path.isfile(path):
            continue
        table = sheets.read_table(path, ("video_name", "label"))
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
            labels.setdefault(clip, (split, LABEL_NAMES[value - 1]))
    return labels


def _label_of(name: str, labels: dict, classes: list[str]) -> tuple[str, int, str | None]:
    number = int(name) if name.isdigit() else None
    if number is None or number not in labels:
        return "unsplit", -1, None
    split, emotion = labels[number]
    return split, classes.index(emotion) if emotion in classes else -1, emotion


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
        raise ValueError(f"data.source must be 'frames' or 'video' for dfew, got {source!r}")
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
    for entry in sorted(os.listdir(base), key=frames_lib.natural_key):
        path = os.path.join(base, entry)
        if source == "frames":
            if not os.path.isdir(path):
                continue
            split, label, emotion = _label_of(entry, labels, classes)
            clip = folders.frame_clip(NAME, entry, path, group=split, report=report, strict=strict,
                                      label=label, emotion=emotion)  # fmt: skip
        else:
            if not frames_lib.is_video(entry):
                continue
            stem = os.path.splitext(entry)[0]
            split, label, emotion = _label_of(stem, labels, classes)
            clip = folders.video_clip(NAME, stem, path, group=split, report=report, strict=strict,
                                      label=label, emotion=emotion)  # fmt: skip
        if clip is not None:
            clips.append(clip)
    folders.require_clips(clips, report, root, f"{rel}/<clip>")
    return clips, report
