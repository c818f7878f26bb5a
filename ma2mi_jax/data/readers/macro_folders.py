"""Generic macro-expression sources for pre-training: a folder of frame folders, a folder of videos.

Also the clip checks every macro reader shares (`frame_clip`, `video_clip`):
- a frame folder is listed by parsed frame number; every frame file must exist, be non-empty and,
  for JPEG and PNG, end with its format's end marker (a truncated file; only the last few KiB of
  each file are read, frames are not decoded here: too slow for tens of thousands of clips);
- a video must open in OpenCV; its length is OpenCV's frame count;
- an empty folder, an unreadable folder, an empty frame file or a video OpenCV cannot open is bad
  input: a DataError naming the clip and file, or, with `strict=False`, a listed drop;
- a clip with a single frame is dropped and listed (a training pair needs two frames).
"""

from __future__ import annotations

import os

from ma2mi_jax.data.media import frames as frames_lib
from ma2mi_jax.data.records import DataError, MacroClip, ReadReport

UNLABELLED = "unlabelled"
MIN_FRAMES = 2  # a training pair needs two frames


def bad_clip(report: ReadReport, strict: bool, clip_id: str, message: str) -> None:
    """Raise DataError for a bad clip under strict reading, else drop and list it."""
    if strict:  # from None: raised while handling the clip's own exception, which says no more
        raise DataError(
            f"clip {clip_id}: {message}. To skip such clips instead, set data.strict=False."
        ) from None
    report.drop(clip_id, message)


def _keep(report: ReadReport, clip: MacroClip, group: str) -> MacroClip | None:
    if clip.num_frames < MIN_FRAMES:
        report.drop(clip.clip_id, f"{clip.num_frames} frame(s): a training pair needs {MIN_FRAMES}")
        return None
    report.keep(group, clip.emotion or UNLABELLED)
    return clip


def frame_clip(
    dataset: str,
    clip_id: str,
    folder: str,
    *,
    group: str,
    report: ReadReport,
    strict: bool,
    label: int = -1,
    emotion: str | None = None,
) -> MacroClip | None:
    """A validated frame-folder clip, or None when it was dropped (and listed in `report`)."""
    try:
        listed = frames_lib.list_frames(folder)
    except DataError as err:
        bad_clip(report, strict, clip_id, str(err))
        return None
    if not listed:
        bad_clip(report, strict, clip_id, f"folder {folder} holds no images")
        return None
    paths = tuple(p for _, p in listed)
    problems = frames_lib.frame_file_problems(paths)
    if problems:
        bad_clip(report, strict, clip_id, frames_lib.describe_file_problems(problems))
        return None
    clip = MacroClip(dataset, clip_id, paths, None, len(paths), label=label, emotion=emotion)
    return _keep(report, clip, group)


def video_clip(
    dataset: str,
    clip_id: str,
    path: str,
    *,
    group: str,
    report: ReadReport,
    strict: bool,
    label: int = -1,
    emotion: str | None = None,
) -> MacroClip | None:
    """A video clip whose frame count OpenCV reads, or None when it was dropped (and listed)."""
    try:
        count = frames_lib.video_frame_count(path)
    except DataError as err:
        bad_clip(report, strict, clip_id, str(err))
        return None
    if count == 0:
        bad_clip(report, strict, clip_id, f"OpenCV reads no frames from {path}")
        return None
    clip = MacroClip(dataset, clip_id, None, path, count, label=label, emotion=emotion)
    return _keep(report, clip, group)


def require_clips(clips: list[MacroClip], report: ReadReport, root: str, expected: str) -> None:
    """DataError when a read found no usable clip, saying what layout was expected."""
    if not clips:
        raise DataError(
            f"{report.dataset}: no usable clips under {root} (expected {expected}).\n{report.summary()}"
        )


def _walk(root: str):
    for here, dirs, files in os.walk(root):
        dirs[:] = sorted((d for d in dirs if not d.startswith(".")), key=frames_lib.natural_key)
        yield here, sorted(files, key=frames_lib.natural_key)


def read_frame_folders(root: str, strict: bool = True) -> tuple[list[MacroClip], ReadReport]:
    """Every folder under `root` that directly holds images is one clip (id: relative path, sorted)."""
    frames_lib.require_dir(root, "frame-folder root")
    report = ReadReport("frames")
    clips = []
    for here, files in _walk(root):
        if here == root or not any(frames_lib.is_image(f) for f in files):
            continue
        clip_id = os.path.relpath(here, root).replace(os.sep, "/")
        clip = frame_clip("frames", clip_id, here, group="frames", report=report, strict=strict)
        if clip is not None:
            clips.append(clip)
    clips.sort(key=lambda c: frames_lib.natural_key(c.clip_id))
    require_clips(clips, report, root, "<root>/<clip>/<frame number>.jpg")
    return clips, report


def read_video_folder(root: str, strict: bool = True) -> tuple[list[MacroClip], ReadReport]:
    """Every video file (mp4, avi, ...) under `root` is one clip (id: relative path, sorted)."""
    frames_lib.require_dir(root, "video-folder root")
    report = ReadReport("videos")
    clips = []
    for here, files in _walk(root):
        for name in files:
            if not frames_lib.is_video(name):
                continue
            path = os.path.join(here, name)
            clip_id = os.path.relpath(path, root).replace(os.sep, "/")
            clip = video_clip("videos", clip_id, path, group="videos", report=report, strict=strict)
            if clip is not None:
                clips.append(clip)
    clips.sort(key=lambda c: frames_lib.natural_key(c.clip_id))
    require_clips(clips, report, root, "video files such as <root>/clip.mp4")
    return clips, report
