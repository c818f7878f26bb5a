"""Haar face crop: detection on a real photo, box geometry, and the write-once cache."""

import json
import os

import cv2
import matplotlib.cbook
import numpy as np
import pytest

from ma2mi_jax.data.media import decode, facecrop
from ma2mi_jax.data.records import DataError, MacroClip


@pytest.fixture(scope="module")
def face_rgb() -> np.ndarray:
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)  # a portrait photo
    return decode.read_image(str(path))


def test_bundled_detector_finds_the_face(face_rgb):
    assert not facecrop.detector().empty()
    box = facecrop.detect_face(face_rgb)
    assert box is not None
    x, y, w, h = box
    h_img, w_img = face_rgb.shape[:2]
    # The face sits in the upper middle of the portrait and covers a good part of its width.
    assert 0.2 * w_img < x + w / 2 < 0.8 * w_img and y + h / 2 < 0.6 * h_img and w > 0.2 * w_img
    assert facecrop.detect_face(np.full((120, 160, 3), 128, np.uint8)) is None


def test_square_box_median_margin_and_clamp():
    faces = [(10, 20, 40, 40), (12, 22, 40, 40), (200, 200, 10, 10)]  # one outlier
    x0, y0, side = facecrop.square_box(faces, 100, 100, margin=0.25)
    assert side == 60  # median side 40, enlarged by 25% each side
    assert (x0, y0) == (12 + 20 - 30, 22 + 20 - 30)
    # Near the border the square is shifted inside; bigger than the frame it is clipped.
    assert facecrop.square_box([(0, 0, 20, 20)], 100, 80, margin=0.5) == (0, 0, 40)
    assert facecrop.square_box([(0, 0, 90, 90)], 60, 80, margin=0.5) == (15, 0, 60)  # centred on x=45
    assert facecrop.square_box([], 60, 80) == (10, 0, 60)  # no face: centre square


def test_crop_clip_writes_once_atomically(tmp_path, face_rgb):
    video = str(tmp_path / "clip.avi")
    h, w = face_rgb.shape[:2]
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    for _ in range(3):
        writer.write(cv2.cvtColor(face_rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    clip = MacroClip("afew", "Train_AFEW/Happy/000001", None, video, 3)
    cache = str(tmp_path / "faces")
    out = facecrop.crop_clip(clip, cache, 32)
    assert out.video_path is None and out.num_frames == 3 and out.clip_id == clip.clip_id
    frames = [decode.read_image(p) for p in out.frame_paths]
    assert all(f.shape == (32, 32, 3) for f in frames)
    folder = os.path.dirname(out.frame_paths[0])
    with open(os.path.join(folder, "box.json")) as f:
        meta = json.load(f)
    assert meta["detected"] == 3 and meta["box_xys"][2] < min(h, w)
    assert not [n for n in os.listdir(os.path.dirname(folder)) if n.startswith(".tmp")]
    # A second call reads the cache and does not decode the video again.
    mtime = os.path.getmtime(out.frame_paths[0])
    os.remove(video)
    again = facecrop.crop_clip(clip, cache, 32)
    assert again.frame_paths == out.frame_paths and os.path.getmtime(out.frame_paths[0]) == mtime


def test_crop_clips_strict_and_lenient(tmp_path):
    good = tmp_path / "0.png"
    cv2.imwrite(str(good), np.full((40, 60, 3), 90, np.uint8))
    clips = [
        MacroClip("frames", "good", (str(good),), None, 1),
        MacroClip("frames", "bad", (str(tmp_path / "missing.png"),), None, 1),
    ]
    with pytest.raises(DataError, match=r"missing\.png"):
        facecrop.crop_clips(clips, str(tmp_path / "c1"), 16)
    kept, dropped = facecrop.crop_clips(clips, str(tmp_path / "c2"), 16, strict=False)
    assert [c.clip_id for c in kept] == ["good"] and dropped[0][0] == "bad"
    assert not os.path.exists(tmp_path / "c2" / "16" / facecrop.clip_key("bad"))
