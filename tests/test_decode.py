"""Decoding images and video frames with OpenCV; bad input is a DataError naming the file."""

import cv2
import numpy as np
import pytest
from PIL import Image

from ma2mi_jax.data.media import decode
from ma2mi_jax.data.media import frames as frames_lib
from ma2mi_jax.data.records import DataError, MacroClip


def _write_video(path: str, n: int = 8, h: int = 24, w: int = 32) -> None:
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((h, w, 3), 20 * i, np.uint8))
    writer.release()


def test_read_image_is_rgb_and_resized(tmp_path):
    img = np.zeros((20, 30, 3), np.uint8)
    img[..., 0] = 200  # red in RGB
    img[:, :15, 2] = 100
    Image.fromarray(img).save(tmp_path / "a.png")
    full = decode.read_image(str(tmp_path / "a.png"))
    np.testing.assert_array_equal(full, img)
    small = decode.read_image(str(tmp_path / "a.png"), 10)
    assert small.shape == (10, 10, 3) and small.dtype == np.uint8
    assert (small[..., 0] == 200).all() and (small[..., 1] == 0).all()
    assert small[:, :4, 2].mean() == 100 and small[:, -4:, 2].mean() == 0  # left/right kept


def test_area_resize_averages(tmp_path):
    img = np.zeros((4, 4, 3), np.uint8)
    img[::2, ::2] = 255  # one bright pixel in each 2x2 block
    cv2.imwrite(str(tmp_path / "b.png"), img)
    np.testing.assert_allclose(decode.read_image(str(tmp_path / "b.png"), 2), 64, atol=1)


def test_missing_and_corrupt_images_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"nothere.jpg.*not found"):
        decode.read_image(str(tmp_path / "nothere.jpg"))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(DataError, match=r"bad.jpg.*cannot decode"):
        decode.read_image(str(bad), 8)


def test_video_frames_in_requested_order(tmp_path):
    path = str(tmp_path / "v.avi")
    _write_video(path)
    assert frames_lib.video_frame_count(path) == 8
    frames = decode.read_video_frames(path, [5, 2, 5], 16)
    assert [f.shape for f in frames] == [(16, 16, 3)] * 3
    np.testing.assert_allclose([f.mean() for f in frames], [100, 40, 100], atol=3)
    everything = decode.read_all_video_frames(path, 8)
    np.testing.assert_allclose([f.mean() for f in everything], 20 * np.arange(8), atol=3)


def test_bad_videos_name_the_file(tmp_path):
    path = str(tmp_path / "v.avi")
    _write_video(path, n=4)
    with pytest.raises(DataError, match=r"v.avi: cannot read frame 9"):
        decode.read_video_frames(path, [1, 9])
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(DataError, match=r"junk.mp4.*cannot open"):
        decode.read_video_frames(str(junk), [0])
    with pytest.raises(DataError, match=r"gone.avi.*not found"):
        decode.open_video(str(tmp_path / "gone.avi"))


def test_clip_frames_from_folder_and_video(tmp_path):
    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        cv2.imwrite(str(p), np.full((8, 8, 3), 50 * i, np.uint8))
        paths.append(str(p))
    clip = MacroClip("frames", "c", tuple(paths), None, 3)
    a, b = decode.read_clip_frames(clip, [2, 0], 4)
    assert a.shape == (4, 4, 3) and a.mean() == 100 and b.mean() == 0
    with pytest.raises(DataError, match=r"clip c: frame index 3"):
        decode.read_clip_frames(clip, [3])
    video = str(tmp_path / "v.avi")
    _write_video(video, n=5)
    vclip = MacroClip("videos", "v", None, video, 5)
    assert len(decode.read_all_clip_frames(vclip, 8)) == 5
    with pytest.raises(DataError, match=r"clip e: no frames"):
        decode.read_all_clip_frames(MacroClip("frames", "e", (), None, 0))
