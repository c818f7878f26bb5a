"""Decode image files and video frames with OpenCV into square uint8 RGB arrays (no TensorFlow).

Every failure is a `DataError` that names the file (and frame) and says what to do. Images are
read as bytes and checked for truncation (`frames.truncation_problem`) before OpenCV decodes them,
since OpenCV decodes a truncated JPEG without an error; the check costs no second decode.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np

from ma2mi_jax.data.media import frames as frames_lib
from ma2mi_jax.data.records import DataError, MacroClip


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8[H,W,3] to uint8[size,size,3] (INTER_AREA when shrinking, linear when growing)."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    interp = cv2.INTER_AREA if size <= min(h, w) else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def decode_bgr(path: str) -> tuple[np.ndarray | None, str | None]:
    """(uint8[H,W,3] BGR, None), or (None, why the file cannot be used: missing, empty, truncated, ...)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None, "file missing"
    except OSError as err:
        return None, f"cannot be read ({err.strerror or err})"
    if not data:
        return None, "file is empty (0 bytes)"
    problem = frames_lib.truncation_problem(data[:8], data, whole=True)
    if problem:
        return None, problem
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        return None, "OpenCV cannot decode it (corrupt or not an image)"
    return bgr, None


def read_image(path: str, size: int | None = None) -> np.ndarray:
    """Read an image file as uint8[H,W,3] RGB, resized to [size,size,3] when `size` is given."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: image file not found (check the data set root and the annotation)")
    bgr, problem = decode_bgr(path)
    if bgr is None:
        raise DataError(f"{path}: {problem}; replace the file, or set data.strict=False to skip the sample")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # [H,W,3]
    return rgb if size is None else resize_square(rgb, size)


def open_video(path: str) -> cv2.VideoCapture:
    """Open a video file with OpenCV; DataError naming the file if it cannot be opened."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: video file not found (check the data set root)")
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        cap.release()
        raise DataError(
            f"{path}: OpenCV cannot open this video (unsupported codec or corrupt file); "
            "re-encode it (e.g. ffmpeg -i in.avi out.mp4), or set data.strict=False to skip it"
        )
    return cap


def read_video_frames(path: str, indices: Sequence[int], size: int | None = None) -> list[np.ndarray]:
    """Read frames `indices` (0-based) of a video as uint8[H,W,3] RGB, one seek then sequential reads."""
    if not len(indices):
        return []
    wanted = sorted(set(int(i) for i in indices))
    if wanted[0] < 0:
        raise DataError(f"{path}: negative frame index {wanted[0]}")
    cap = open_video(path)
    got: dict[int, np.ndarray] = {}
    try:
        pos = wanted[0]
        if pos > 0:
            cap.set(cv2.CAP_PROP_POS_FRAMES, pos)
        for i in wanted:
            while pos < i:  # skip without decoding
                if not cap.grab():
                    break
                pos += 1
            ok, bgr = cap.read() if pos == i else (False, None)
            if not ok or bgr is None:
                raise DataError(
                    f"{path}: cannot read frame {i} (the video ends early or is corrupt); "
                    "re-encode it, or set data.strict=False to skip the clip"
                )
            pos += 1
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            got[i] = rgb if size is None else resize_square(rgb, size)
    finally:
        cap.release()
    return [got[int(i)] for i in indices]


def read_all_video_frames(
    path: str, size: int | None = None, expected: int | None = None
) -> list[np.ndarray]:
    """Decode every frame of a video in order as uint8[H,W,3] RGB.

    DataError if none can be read, or fewer than `expected` (the frame count its header gave).
    """
    cap = open_video(path)
    frames = []
    try:
        while True:
            ok, bgr = cap.read()
            if not ok or bgr is None:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            frames.append(rgb if size is None else resize_square(rgb, size))
    finally:
        cap.release()
    if not frames:
        raise DataError(f"{path}: OpenCV decoded no frames from this video (empty or corrupt); re-encode it")
    if expected is not None and len(frames) < expected:
        raise DataError(
            f"{path}: the video ends after {len(frames)} of the {expected} frames its header gives "
            "(truncated or corrupt); re-encode it, or set data.strict=False to skip the clip"
        )
    return frames


def write_image(path: str, rgb: np.ndarray, jpeg_quality: int = 95) -> None:
    """Write uint8[H,W,3] RGB to `path` (format from the extension); DataError if OpenCV refuses."""
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if path.lower().endswith((".jpg", ".jpeg")) else []
    if not cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params):
        raise DataError(f"{path}: OpenCV could not write this image (check the folder and free space)")


def read_clip_frames(clip: MacroClip, indices: Sequence[int], size: int | None = None) -> list[np.ndarray]:
    """Frames `indices` (0-based, time order) of a frame-folder or video clip as uint8[H,W,3] RGB."""
    if clip.video_path is not None:
        return read_video_frames(clip.video_path, indices, size)
    paths = clip.frame_paths or ()
    for i in indices:
        if not 0 <= i < len(paths):
            raise DataError(
                f"clip {clip.clip_id}: frame index {i} outside its {len(paths)} frames "
                "(num_frames disagrees with frame_paths; re-read the data set)"
            )
    return [read_image(paths[i], size) for i in indices]


def read_all_clip_frames(clip: MacroClip, size: int | None = None) -> list[np.ndarray]:
    """Every frame of a clip in time order as uint8[H,W,3] RGB; DataError for an empty clip."""
    if clip.video_path is not None:
        return read_all_video_frames(clip.video_path, size, expected=clip.num_frames)
    if not clip.frame_paths:
        raise DataError(f"clip {clip.clip_id}: no frames (empty clip); remove it or use data.strict=False")
    return [read_image(p, size) for p in clip.frame_paths]
