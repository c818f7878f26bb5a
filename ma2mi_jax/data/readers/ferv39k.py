"""FERV39K reader: face-cropped frame folders `2_ClipsforFaceCrop/<Scene>/<Emotion>/<clip>/`.

Layout accepted (docs/datasets.md#macro-expression-sets-pre-training):
- frames: `<root>/2_ClipsforFaceCrop/<Scene>/<Emotion>/<4-digit clip>/*.jpg`, ordered by the
  parsed frame number; clip id "<Scene>/<Emotion>/<clip>".
- label: the emotion folder (Angry, Disgust, Fear, Happy, Neutral, Sad, Surprise, any case),
  looked up in `class_names` (index, or -1 when absent). Another folder name is bad input.
- split: `4_setups/All_scenes/train_All.csv` / `test_All.csv` when present (no header, space
  separated `Action/Sad/0010 Sad`); the report groups clips by split ("train", "test", "unsplit").

Clips with under two frames are dropped and listed; empty or unreadable clips and empty frame files
are bad input (error naming the clip and file, or listed drops when `strict=False`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ma2mi_jax.data.media import frames as frames_lib
from ma2mi_jax.data.readers import macro_folders
from ma2mi_jax.data.records import DataError, MacroClip, ReadReport

NAME = "ferv39k"
EMOTIONS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
FRAMES_DIR = "2_ClipsforFaceCrop"
SPLIT_FILES = (
    ("train", os.path.join("4_setups", "All_scenes", "train_All.csv")),
    ("test", os.path.join("4_setups", "All_scenes", "test_All.csv")),
)


def read_splits(root: str, strict: bool, report: ReadReport) -> dict[str, str]:
    """Clip id ("Action/Sad/0010") -> split name, from the All_scenes setup files present."""
    splits: dict[str, str] = {}
    for split, rel in SPLIT_FILES:
        path = os.path.join(root, rel)
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8-sig") as f:
            for number, line in enumerate(f, start=1):
                parts = line.split()
                if not parts:
                    continue
                clip = parts[0].strip("/").replace("\\", "/")
                if len(parts) > 2 or clip.count("/") != 2:
                    message = f"{path}, line {number}: expected 'Scene/Emotion/clip Emotion', got {line!r}"
                    if strict:
                        raise DataError(message + "; correct the line or set data.strict=False")
                    report.drop(f"{split}:line {number}", message)
                    continue
                splits.setdefault(clip, split)
    return splits


def _dirs(path: str) -> list[str]:
    return sorted(
        (d for d in os.listdir(path) if not d.startswith(".") and os.path.isdir(os.path.join(path, d))),
        key=frames_lib.natural_key,
    )


def read(
    root: str,
    *,
    class_names: Sequence[str] = EMOTIONS,
    strict: bool = True,
) -> tuple[list[MacroClip], ReadReport]:
    """List FERV39K's clips with labels from their emotion folders and splits from the setup files."""
    frames_lib.require_dir(root, "ferv39k root")
    base = frames_lib.descend_nested(os.path.join(root, FRAMES_DIR))
    if not os.path.isdir(base):
        raise DataError(
            f"ferv39k: {base} not found; data.root must hold {FRAMES_DIR}/<Scene>/<Emotion>/<clip>/"
        )
    report = ReadReport(NAME)
    splits = read_splits(root, strict, report)
    classes = [c.strip().lower() for c in class_names]
    clips: list[MacroClip] = []
    for scene in _dirs(base):
        for emotion_dir in _dirs(os.path.join(base, scene)):
            emotion = emotion_dir.strip().lower()
            for clip_name in _dirs(os.path.join(base, scene, emotion_dir)):
                clip_id = f"{scene}/{emotion_dir}/{clip_name}"
                if emotion not in EMOTIONS:
                    macro_folders.bad_clip(
                        report, strict, clip_id,
                        f"unknown emotion folder {emotion_dir!r} (known: {', '.join(EMOTIONS)})",
                    )  # fmt: skip
                    continue
                clip = macro_folders.frame_clip(
                    NAME, clip_id, os.path.join(base, scene, emotion_dir, clip_name),
                    group=splits.get(clip_id, "unsplit"), report=report, strict=strict,
                    label=classes.index(emotion) if emotion in classes else -1, emotion=emotion,
                )  # fmt: skip
                if clip is not None:
                    clips.append(clip)
    macro_folders.require_clips(clips, report, root, f"{FRAMES_DIR}/<Scene>/<Emotion>/<clip>/*.jpg")
    return clips, report
