"""Face crop for uncropped macro video (e.g. AFEW): one square box per clip, cached to disk once.

Detection uses OpenCV's Haar frontal-face cascade (`haarcascade_frontalface_default.xml`), which
opencv-python-headless 4.x ships together with `cv2.CascadeClassifier` (the files live in
`cv2.data.haarcascades`); OpenCV 5.x drops both, hence the `opencv-python-headless<5` pin.

Per clip: detect on a few evenly spaced frames, take the median box (steady crop, no jitter),
enlarge it by a margin, make it square and keep it inside the frame; crop every frame, resize to
the image size and write the frames as JPEG into `<cache_dir>/<size>/<clip key>/`. The folder is
filled under a temporary name and renamed when complete, so a crash never leaves a half-written
clip and a finished clip is never recomputed. A clip with no detected face keeps the centre square
of the frame (logged and noted in the clip's `box.json`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Sequence

import cv2
import numpy as np
import tqdm

from ma2mi_jax.data.media import decode
from ma2mi_jax.data.records import DataError, MacroClip

log = logging.getLogger(__name__)

CASCADE = "haarcascade_frontalface_default.xml"
Box = tuple[int, int, int]  # (x0, y0, side) of a square inside the frame
NUM_PROBES = 5  # frames of a clip the detector looks at, evenly spaced
MARGIN = 0.2  # the median face box grows by this fraction of its size on each side


@functools.cache
def detector() -> cv2.CascadeClassifier:
    """OpenCV's bundled Haar frontal-face detector (opencv-python-headless 4.x)."""
    data = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if data is None or not hasattr(cv2, "CascadeClassifier"):
        raise RuntimeError(
            f"OpenCV {cv2.__version__} has no CascadeClassifier / bundled Haar files; the face crop "
            "needs opencv-python-headless 4.x (pip install 'opencv-python-headless>=4.8,<5')"
        )
    cascade = cv2.CascadeClassifier(os.path.join(data, CASCADE))
    if cascade.empty():
        raise RuntimeError(f"cannot load {os.path.join(data, CASCADE)}; reinstall opencv-python-headless 4.x")
    return cascade


def detect_face(rgb: np.ndarray, max_side: int = 640) -> tuple[int, int, int, int] | None:
    """Largest frontal face in uint8[H,W,3] as (x, y, w, h) in frame pixels, or None."""
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        gray = cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    min_face = max(16, round(0.1 * min(gray.shape)))
    faces = detector().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_face, min_face))
    if len(faces) == 0:
        return None
    x, y, fw, fh = max(faces, key=lambda f: int(f[2]) * int(f[3]))
    return tuple(round(float(v) / scale) for v in (x, y, fw, fh))  # type: ignore[return-value]


def probe_indices(num_frames: int, num_probe: int = NUM_PROBES) -> list[int]:
    """The (at most `num_probe`) evenly spaced frame indices, first and last included, to detect on."""
    spaced = np.linspace(0, num_frames - 1, num=min(num_probe, num_frames)).round().astype(int)
    return [int(i) for i in np.unique(spaced)]


def square_box(
    faces: Sequence[tuple[int, int, int, int]], height: int, width: int, margin: float = MARGIN
) -> Box:
    """Median of face boxes, enlarged by `margin` of its size on each side, square, inside the frame."""
    if not faces:  # centre square of the frame
        side = min(height, width)
        return ((width - side) // 2, (height - side) // 2, side)
    arr = np.asarray(faces, dtype=np.float64)  # [n, 4] x, y, w, h
    x, y, fw, fh = np.median(arr, axis=0)
    cx, cy = x + fw / 2.0, y + fh / 2.0
    side = round(float(max(fw, fh)) * (1.0 + 2.0 * margin))
    side = max(1, min(side, height, width))
    x0 = round(float(cx) - side / 2.0)
    y0 = round(float(cy) - side / 2.0)
    x0 = min(max(x0, 0), width - side)
    y0 = min(max(y0, 0), height - side)
    return (x0, y0, side)


def crop(rgb: np.ndarray, box: Box, size: int) -> np.ndarray:
    """Cut the square `box` out of uint8[H,W,3] and resize it to uint8[size,size,3]."""
    x0, y0, side = box
    return decode.resize_square(np.ascontiguousarray(rgb[y0 : y0 + side, x0 : x0 + side]), size)


def clip_key(clip_id: str) -> str:
    """A file-system-safe, unique folder name for a clip id."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", clip_id)[-60:]
    return f"{readable}-{hashlib.sha1(clip_id.encode()).hexdigest()[:10]}"


def _cached(clip: MacroClip, folder: str) -> MacroClip:
    names = sorted(n for n in os.listdir(folder) if n.endswith(".jpg"))
    paths = tuple(os.path.join(folder, n) for n in names)
    return dataclasses.replace(clip, frame_paths=paths, video_path=None, num_frames=len(paths))


def crop_clip(
    clip: MacroClip, cache_dir: str, image_size: int, *, num_probe: int = NUM_PROBES, margin: float = MARGIN
) -> MacroClip:
    """Face-crop one clip into the cache (once) and return it as a frame clip of cropped frames."""
    root = os.path.join(cache_dir, str(image_size))
    folder = os.path.join(root, clip_key(clip.clip_id))
    if os.path.isdir(folder):
        return _cached(clip, folder)
    frames = decode.read_all_clip_frames(clip)  # list of uint8[H,W,3], full resolution
    h, w = frames[0].shape[:2]
    probes = probe_indices(len(frames), num_probe)
    faces = [f for f in (detect_face(frames[i]) for i in probes) if f is not None]
    box = square_box(faces, h, w, margin=margin)
    if not faces:
        log.warning("clip %s: no face found on %d frames; using the centre square", clip.clip_id, len(probes))
    os.makedirs(root, exist_ok=True)
    tmp = os.path.join(root, f".tmp-{clip_key(clip.clip_id)}-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        for i, frame in enumerate(frames):
            if frame.shape[:2] != (h, w):
                raise DataError(f"clip {clip.clip_id}: frame {i} is {frame.shape[:2]}, frame 0 is {(h, w)}")
            decode.write_image(os.path.join(tmp, f"{i:06d}.jpg"), crop(frame, box, image_size))
        meta = {"clip_id": clip.clip_id, "box_xys": list(box), "detected": len(faces), "probed": len(probes)}
        with open(os.path.join(tmp, "box.json"), "w") as f:
            json.dump(meta, f)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not os.path.isdir(folder):  # not a lost race with another process: a real error
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _cached(clip, folder)


def crop_clips(
    clips: Sequence[MacroClip], cache_dir: str, image_size: int, *, strict: bool = True
) -> tuple[list[MacroClip], list[tuple[str, str]]]:
    """Face-crop every clip into the cache (skipping finished ones); returns (clips, dropped)."""
    out: list[MacroClip] = []
    dropped: list[tuple[str, str]] = []
    for clip in tqdm.tqdm(clips, desc="face crop", unit="clip", disable=len(clips) < 2):
        try:
            out.append(crop_clip(clip, cache_dir, image_size))
        except DataError as e:
            if strict:
                raise
            log.warning("skipping clip %s: %s", clip.clip_id, e)
            dropped.append((clip.clip_id, str(e)))
    return out, dropped
