"""AFEW reader: videos `Train_AFEW/<Emotion>/<id>.avi` and `Val_AFEW/<Emotion>/<id>.avi`.

Layout accepted (docs/datasets.md#macro-expression-sets-pre-training): at least one of
`Train_AFEW/`, `Val_AFEW/` (nested copies such as `Train_AFEW/Train_AFEW/` are followed) under the
root, each holding emotion folders (Angry, Disgust, Fear, Happy, Neutral, Sad, Surprise, any case) of
video files. Sub-folders without video files (e.g. extracted landmarks) are ignored. Clip id
"Train_AFEW/Angry/000046280"; label the emotion's index in `class_names` (or -1 when absent); the
report groups clips by split ("train", "val"). The frames are not face-cropped: the pipeline's
face-crop step handles that (data.face_crop).

A video OpenCV cannot open, an empty file, or a video folder under an unknown emotion name is bad
input (error naming clip and file, or listed drops when `strict=False`); a video with under two
frames is dropped and listed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ma2mi_jax.data.media import frames as frames_lib
from ma2mi_jax.data.readers import macro_folders
from ma2mi_jax.data.records import DataError, MacroClip, ReadReport

NAME = "afew"
EMOTIONS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
SPLITS = (("Train_AFEW", "train"), ("Val_AFEW", "val"))


def read(
    root: str,
    *,
    class_names: Sequence[str] = EMOTIONS,
    strict: bool = True,
) -> tuple[list[MacroClip], ReadReport]:
    """List AFEW's train and val videos with OpenCV frame counts and emotion labels."""
    frames_lib.require_dir(root, "afew root")
    report = ReadReport(NAME)
    classes = [c.strip().lower() for c in class_names]
    clips: list[MacroClip] = []
    found_split = False
    for folder, split in SPLITS:
        base = frames_lib.descend_nested(os.path.join(root, folder))
        if not os.path.isdir(base):
            continue
        found_split = True
        for emotion_dir in sorted(os.listdir(base), key=frames_lib.natural_key):
            edir = os.path.join(base, emotion_dir)
            if emotion_dir.startswith(".") or not os.path.isdir(edir):
                continue
            videos = [f for f in os.listdir(edir) if frames_lib.is_video(f)]
            videos.sort(key=frames_lib.natural_key)
            emotion = emotion_dir.strip().lower()
            for name in videos:
                clip_id = f"{folder}/{emotion_dir}/{os.path.splitext(name)[0]}"
                if emotion not in EMOTIONS:
                    macro_folders.bad_clip(
                        report, strict, clip_id,
                        f"video {os.path.join(edir, name)} is under an unknown emotion folder "
                        f"{emotion_dir!r} (known: {', '.join(EMOTIONS)})",
                    )  # fmt: skip
                    continue
                clip = macro_folders.video_clip(
                    NAME, clip_id, os.path.join(edir, name), group=split, report=report, strict=strict,
                    label=classes.index(emotion) if emotion in classes else -1, emotion=emotion,
                )  # fmt: skip
                if clip is not None:
                    clips.append(clip)
    if not found_split:
        raise DataError(
            f"afew: neither Train_AFEW/ nor Val_AFEW/ under {root}; data.root must be the folder "
            "holding them (config key data.root)"
        )
    macro_folders.require_clips(clips, report, root, "Train_AFEW/<Emotion>/<id>.avi")
    return clips, report
