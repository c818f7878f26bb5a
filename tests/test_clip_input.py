"""Prediction on a user's clip: frames from a folder or a video, the face crop, the apex finder, bad input.

The clips are rendered by the synthetic generator, whose plan says where each apex is. At the
default knobs a micro expression moves the skin by about 1 px at 64x64, under sensor noise, head
drift and blinks, so the finder's tests use its knobs for a stronger expression (`micro_intensity`
3-4) without blinks; the still-head clips also turn off head motion and lighting drift.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import jax
import matplotlib.cbook
import numpy as np
import pytest

from ma2mi_jax.data.media import decode, facecrop
from ma2mi_jax.data.synthetic import layouts
from ma2mi_jax.data.synthetic.knobs import Knobs
from ma2mi_jax.data.synthetic.planning import plan
from ma2mi_jax.data.synthetic.rendering import render_clip
from ma2mi_jax.errors import UserError
from ma2mi_jax.models import miacnet
from ma2mi_jax.serving import classifier, clip_input
from tests.helpers.configs import tiny_finetune_config
from tests.helpers.scripts import assert_reported, run_script

SIZE = 32  # the tiny export's image size
STILL = Knobs(micro_intensity=3.0, blink_prob=0.0, micro_jitter=0.0, micro_rotation=0.0, light_drift=0.0)
MOVING = Knobs(micro_intensity=4.0, blink_prob=0.0)  # the default head motion and lighting drift


def write_video(path: str, frames: np.ndarray, codec: str = "FFV1", fps: int = 10) -> str:
    """Frames uint8[T,H,W,3] RGB as a video OpenCV reads back (FFV1 .avi: lossless, the frames as made)."""
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*codec), fps, (w, h))
    assert writer.isOpened(), (path, codec)
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope="module")
def still_clips(tmp_path_factory):
    """Six generated still-head clips written as CASME II frame folders: (spec, folder, frames)."""
    root = str(tmp_path_factory.mktemp("clips"))
    out = []
    for spec in plan("casme2", 0, 0.1, STILL)[:6]:
        frames = render_clip(spec, 64, STILL)  # [T,64,64,3]
        layouts.write_frames(root, spec, frames)
        out.append((spec, os.path.join(root, layouts.clip_dir(spec)), frames))
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny exported classifier (32 px, raw pairs) with a random head, so its classes differ."""
    config = tiny_finetune_config("unused", str(tmp_path_factory.mktemp("w")))
    model = miacnet.classifier_from_config(config.model, len(config.data.class_names))
    dummy = np.zeros((1, SIZE, SIZE, 3), np.uint8)
    variables = jax.tree.map(np.asarray, model.init(jax.random.key(0), dummy, dummy, train=False))
    head = variables["params"]["head"]
    head["kernel"] = np.random.default_rng(0).normal(0, 1, head["kernel"].shape).astype(np.float32)
    out = tmp_path_factory.mktemp("export") / "model"
    return classifier.export_classifier(out, variables, config, fold="all")


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return decode.read_image(str(path))  # [H,W,3]


def test_apex_found_where_the_generator_put_it(still_clips):
    for spec, folder, _ in still_clips:
        pair = clip_input.clip_pair(folder, SIZE)
        assert pair.onset_frame == spec.first_frame and pair.onset_rule == "the first frame"
        assert abs(pair.apex_frame - spec.apex) <= 1, (folder, pair.apex_frame, spec.apex, pair.scores)
        assert pair.apex_rule.startswith("found") and pair.unit == "frame"
        assert sorted(pair.scores) == spec.frame_numbers[1:]
        assert pair.face_crop.startswith("off (face_crop=auto, a frame folder")
        # Found from a later onset too: frames numbered as in the file names.
        later = clip_input.clip_pair(folder, SIZE, onset=spec.first_frame + 1)
        assert later.onset_frame == spec.first_frame + 1 and abs(later.apex_frame - spec.apex) <= 1


def test_registered_measure_finds_the_apex_under_head_motion():
    """With head drift the raw difference grows to the clip's end; registered, it peaks at the apex."""
    specs = plan("casme2", 0, 0.1, MOVING)[:12]
    raw_hits = registered_hits = 0
    for spec in specs:
        clip = np.stack([decode.resize_square(f, SIZE) for f in render_clip(spec, 64, MOVING)])  # [T,S,S,3]
        raw = clip_input.motion_scores(clip[0], clip[1:])
        registered = clip_input.motion_scores(clip[0], clip[1:], register_iterations=8)
        assert raw.shape == registered.shape == (spec.num_frames - 1,)
        raw_hits += abs(1 + int(np.argmax(raw)) - spec.events[0].apex) <= 1
        registered_hits += abs(1 + int(np.argmax(registered)) - spec.events[0].apex) <= 1
    assert registered_hits >= 8 and raw_hits <= 3, (registered_hits, raw_hits)


def test_motion_score_is_the_models_normalised_difference():
    rng = np.random.default_rng(0)
    onset = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    clip = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    norm = lambda x: np.asarray(miacnet.normalize_imagenet(x))
    expected = np.abs(norm(clip) - norm(onset)[None]).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(clip_input.motion_scores(onset, clip), expected, rtol=1e-5)


def test_predict_clip_folder_and_video(exported, still_clips, tmp_path):
    clf = classifier.load_classifier(exported)
    spec, folder, frames = still_clips[0]
    found = clf.predict_clip(folder)
    assert abs(float(found["probabilities"].sum()) - 1) < 1e-5
    assert found["onset_frame"] == spec.first_frame and abs(found["apex_frame"] - spec.apex) <= 1
    # Given frames: the same prediction as the pair of files (the image mode).
    given = clf.predict_clip(folder, spec.onset, spec.apex)
    paths = classifier.clip_frame_paths(folder, spec.onset, spec.apex)
    np.testing.assert_allclose(given["probabilities"], clf.predict_pair(*paths)["probabilities"], atol=1e-6)
    assert given["apex_rule"] == "given" and given["pair"].onset_rule == "given"
    # A video of the same frames: frame indices from 0, no face crop asked for.
    video = write_video(str(tmp_path / "clip.avi"), frames)
    out = clf.predict_clip(video, face_crop="off")
    assert out["unit"] == "video frame index" and out["onset_frame"] == 0
    assert abs(out["apex_frame"] - spec.events[0].apex) <= 1
    assert abs(float(out["probabilities"].sum()) - 1) < 1e-5
    lines = out["pair"].lines()
    assert lines[0].startswith(f"clip: {video} (a video of {spec.num_frames} frames")
    assert lines[3].startswith(f"apex: video frame index {out['apex_frame']} (found: the largest mean")
    assert clip_input.default_gradcam_path(video) == "clip_gradcam.png"
    assert clip_input.default_gradcam_path(folder + "/") == f"{os.path.basename(folder)}_gradcam.png"


def test_face_crop_finds_the_face_in_a_portrait_video(portrait, tmp_path):
    h, w = portrait.shape[:2]
    frames = np.stack([np.roll(portrait, 2 * t, axis=1) for t in range(6)])  # the face moves right
    video = write_video(str(tmp_path / "grace.mp4"), frames, codec="mp4v")
    pair = clip_input.clip_pair(video, SIZE, onset=1)
    assert pair.face_crop.startswith("on (face_crop=auto, a video is cropped)")
    assert "found on 5 of 5 probed frames" in pair.face_crop
    box, (fh, fw), found = clip_input.face_box(clip_input.open_clip(video))
    x0, y0, side = box
    assert (fh, fw) == (h, w) and found == 5 and side < min(h, w)
    assert 0.2 * w < x0 + side / 2 < 0.8 * w and y0 + side / 2 < 0.6 * h  # the face, not the centre square
    onset = decode.read_video_frames(video, [1])[0]
    np.testing.assert_array_equal(pair.onset, facecrop.crop(onset, box, SIZE))
    assert pair.apex_frame > pair.onset_frame
    whole = clip_input.clip_pair(video, SIZE, onset=1, face_crop="off")
    np.testing.assert_array_equal(whole.onset, decode.resize_square(onset, SIZE))


def _bad(path, match, **kwargs) -> None:
    with pytest.raises(UserError, match=match) as err:
        clip_input.clip_pair(path, SIZE, **kwargs)
    assert "\n" not in str(err.value) and os.fspath(path).rstrip("/") in str(err.value)


def test_bad_clips_say_what_is_wrong(tmp_path, still_clips):
    spec, folder, frames = still_clips[0]
    grey = np.full((4, 64, 64, 3), 128, np.uint8)
    _bad(write_video(str(tmp_path / "grey.avi"), grey), r"no face found .*--face_crop=off")
    one = tmp_path / "one"
    one.mkdir()
    decode.write_image(str(one / "img7.png"), frames[0])
    _bad(one, "the clip has one frame")
    _bad(folder, r"onset \(frame \d+\) is the clip's last frame", onset=spec.frame_numbers[-1])
    _bad(folder, rf"no frame 999 for the apex \(the clip's frames: {spec.first_frame}\.\.", apex=999)
    _bad(folder, "no frame 0 for the onset", onset=0, apex=spec.apex)
    _bad(folder, "must come after the onset", onset=spec.apex, apex=spec.onset)
    empty = tmp_path / "empty"
    empty.mkdir()
    _bad(empty, "no numbered images")
    unnumbered = tmp_path / "unnumbered"
    unnumbered.mkdir()
    decode.write_image(str(unnumbered / "face.png"), frames[0])
    _bad(unnumbered, "no frame number at the end of the file name")
    (tmp_path / "zero.mp4").write_bytes(b"")
    _bad(tmp_path / "zero.mp4", "missing or empty")
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 64)
    _bad(tmp_path / "junk.mp4", "OpenCV cannot open")
    cut = tmp_path / "cut.avi"
    data = Path(write_video(str(cut), frames)).read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # an interrupted copy: the header still counts every frame
    _bad(cut, r"the video ends after \d+ frames, before frame index", face_crop="off")
    _bad(os.path.join(one, "img7.png"), "is one image, not a clip")
    _bad(tmp_path / "nowhere", "no such clip")
    with pytest.raises(ValueError, match="face_crop must be one of"):
        clip_input.clip_pair(folder, SIZE, face_crop="yes")


def test_script_predicts_a_video_and_refuses_a_faceless_one(exported, portrait, tmp_path):
    frames = np.stack([np.roll(portrait, 2 * t, axis=1) for t in range(4)])
    video = write_video(str(tmp_path / "grace.avi"), frames)
    heat = tmp_path / "heat.png"
    done = run_script(["scripts/predict.py", f"--model={exported}", f"--clip={video}", f"--gradcam={heat}"])
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert out.startswith("# MA2MI micro-expression classifier: casme2, fold all\n")
    assert "face crop: on (face_crop=auto, a video is cropped)" in out
    assert "onset: video frame index 0 (the first frame)" in out and "apex: video frame index" in out
    probs = [float(line.split()[-1]) for line in out.splitlines() if line.startswith("  ")]
    assert len(probs) == 5 and abs(sum(probs) - 1) < 1e-3
    assert heat.read_bytes()[:4] == b"\x89PNG" and "Grad-CAM (" in out
    grey = write_video(str(tmp_path / "grey.avi"), np.full((3, 64, 64, 3), 128, np.uint8))
    refused = run_script(["scripts/predict.py", f"--model={exported}", f"--clip={grey}"])
    assert_reported(refused, str(grey), "no face found", "--face_crop=off")
