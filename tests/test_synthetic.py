"""Synthetic generator: determinism, the official layouts through the real readers, AU displacement sizes."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import subprocess

import numpy as np
import pytest

from ma2mi_jax import configlib, errors
from ma2mi_jax.data.synthetic import (
    action_units,
    annotation_files,
    faces,
    generator,
    layouts,
    planning,
    rendering,
)
from ma2mi_jax.data.synthetic.knobs import Knobs
from tests.helpers.files import tree_hashes
from tests.helpers.scripts import run_script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32
SCALE = 0.1
# The releases' counts (datasets.md), independent of the generator's own tables.
RELEASE_COUNTS = {
    "casme2": dict(others=99, disgust=63, happiness=32, repression=27, surprise=25, sadness=7, fear=2),
    "samm": dict(anger=57, contempt=12, happiness=26, surprise=15, others=26, disgust=9, fear=8, sadness=6),
    "mmew": dict(happiness=36, surprise=89, anger=8, disgust=72, fear=16, sadness=13, others=66),
}
CLASSES = {"casme2": configlib.CASME2_CLASSES, "samm": configlib.SAMM_CLASSES, "mmew": configlib.MMEW_CLASSES}
QUIET = Knobs(noise=0.0, micro_jitter=0.0, micro_rotation=0.0, light_drift=0.0, blink_prob=0.0)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Each layout generated once at 32 px and a tenth of the release's clips."""
    base = tmp_path_factory.mktemp("synthetic")
    out = {}
    for layout in ("casme2", "samm", "mmew", "dfew"):
        root = str(base / layout)
        specs = generator.generate(layout, root, size=SIZE, seed=0, clips_scale=SCALE, progress=False)
        out[layout] = (root, specs)
    return out


def test_same_seed_same_bytes_other_seed_differs(generated, tmp_path):
    root, _ = generated["casme2"]
    again = str(tmp_path / "again")
    generator.generate("casme2", again, size=SIZE, seed=0, clips_scale=SCALE, progress=False)
    first, second = tree_hashes(root), tree_hashes(again)
    assert first == second
    assert "CASME2-coding-20190701.xlsx" in first and sum(k.endswith(".jpg") for k in first) > 100
    other = str(tmp_path / "other")
    generator.generate("casme2", other, size=SIZE, seed=1, clips_scale=SCALE, progress=False)
    third = tree_hashes(other)
    assert third["CASME2-coding-20190701.xlsx"] != first["CASME2-coding-20190701.xlsx"]
    common = sorted(set(first) & set(third) - {"CASME2-coding-20190701.xlsx"})
    assert sum(first[k] != third[k] for k in common) > 0.9 * len(common)


def test_worker_count_does_not_change_the_output(generated, tmp_path):
    root, _ = generated["samm"]
    pooled = str(tmp_path / "pooled")
    generator.generate("samm", pooled, size=SIZE, seed=0, clips_scale=SCALE, progress=False, workers=2)
    assert tree_hashes(root) == tree_hashes(pooled)


@pytest.mark.parametrize("layout", ["casme2", "samm", "mmew"])
def test_micro_layouts_read_by_the_real_readers(generated, layout):
    reader = importlib.import_module(f"ma2mi_jax.data.readers.{layout}")
    root, specs = generated[layout]
    label_map = {"other": "others"} if layout == "samm" else {}
    samples, report = reader.read(root, class_names=CLASSES[layout], label_map=label_map)
    expected = {k: max(1, round(v * SCALE)) for k, v in RELEASE_COUNTS[layout].items()}
    kept = {k: v for k, v in expected.items() if k in CLASSES[layout]}
    got: dict[str, int] = {}
    for s in samples:
        got[s.emotion] = got.get(s.emotion, 0) + 1
    assert got == kept
    assert len(report.dropped) == sum(expected.values()) - sum(kept.values())
    assert not report.repaired
    by_folder = {os.path.dirname(s.onset_path): s for s in samples}
    for spec in specs:
        folder = os.path.join(root, layouts.clip_dir(spec))
        if spec.emotion.lower() not in {"other", *CLASSES[layout]}:
            continue
        s = by_folder[folder]
        assert (s.onset, s.apex, s.offset) == (spec.onset, spec.apex, spec.offset)
        assert s.frame_numbers == tuple(spec.frame_numbers)
        assert CLASSES[layout][s.label] == label_map.get(spec.emotion.lower(), spec.emotion.lower())
        assert s.onset < s.apex < s.offset


def test_micro_layout_files_are_where_the_releases_put_them(generated):
    casme2_root, casme2_specs = generated["casme2"]
    s = casme2_specs[0]
    assert os.path.isfile(
        os.path.join(casme2_root, f"Cropped/sub{s.subject:02d}/{s.filename}/reg_img{s.onset}.jpg")
    )
    samm_root, samm_specs = generated["samm"]
    s = samm_specs[0]
    names = os.listdir(os.path.join(samm_root, "SAMM", f"{s.subject:03d}", s.filename))
    assert all(n.startswith(f"{s.subject:03d}_") and n.endswith(".jpg") for n in names)
    import openpyxl

    book = openpyxl.load_workbook(os.path.join(samm_root, "SAMM_Micro_FACS_Codes_v2.xlsx"), read_only=True)
    rows = list(book.worksheets[0].iter_rows(values_only=True))
    assert rows[13][:4] == ("Subject", "Filename", "Inducement Code", "Onset Frame")
    assert all(r[0] != "Subject" for r in rows[:13])
    book = openpyxl.load_workbook(os.path.join(casme2_root, "CASME2-coding-20190701.xlsx"), read_only=True)
    head = next(book["Sheet1"].iter_rows(values_only=True))
    want = ("Subject", "Filename", None, "OnsetFrame", "ApexFrame", "OffsetFrame", None, "Action Units")
    assert head == (*want, "Estimated Emotion")
    mmew_root, mmew_specs = generated["mmew"]
    s = mmew_specs[0]
    assert os.path.isfile(os.path.join(mmew_root, "Micro_Expression", s.emotion, s.filename, f"{s.apex}.jpg"))
    assert os.path.isfile(os.path.join(mmew_root, "MMEW_Micro_Exp.xlsx"))


def test_dfew_layout_read_by_the_real_reader(generated):
    dfew = importlib.import_module("ma2mi_jax.data.readers.dfew")
    root, specs = generated["dfew"]
    clips, _ = dfew.read(root, source="frames", class_names=configlib.DFEW_CLASSES)
    assert len(clips) == len(specs) == 31  # 300 x 0.1 rounded per class
    for spec, clip in zip(specs, sorted(clips, key=lambda c: c.clip_id), strict=True):
        assert clip.clip_id == f"{int(spec.filename):05d}"
        assert clip.num_frames == spec.num_frames >= 16
        assert configlib.DFEW_CLASSES[clip.label] == spec.emotion
        assert os.path.basename(clip.frame_paths[0]) == f"{clip.clip_id}_00001.jpg"
    assert "clip_224x224" in clips[0].frame_paths[0]
    with open(os.path.join(root, "EmoLabel_DataSplit", "test(single-labeled)", "set_1.csv")) as f:
        assert f.readline().strip() == "video_name,label"
    tests = []
    for k in range(1, 6):
        with open(os.path.join(root, "EmoLabel_DataSplit", "test(single-labeled)", f"set_{k}.csv")) as f:
            tests += [int(line.split(",")[0]) for line in f.read().split()[1:]]
    assert sorted(tests) == list(range(1, len(specs) + 1))  # the five test folds partition the clips


def _region_energy(field: np.ndarray, centre: np.ndarray, radius: float) -> float:
    yy, xx = np.mgrid[0 : field.shape[0], 0 : field.shape[1]]
    inside = (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius**2
    return float(np.abs(field[inside]).mean())


def test_micro_displacement_is_about_a_pixel_and_macro_is_larger():
    size = 64
    micro = planning.plan("casme2", seed=0, clips_scale=0.2)
    macro = planning.plan("dfew", seed=0, clips_scale=0.1)
    micro_peak = [np.linalg.norm(rendering.apex_field(s, size), axis=-1).max() for s in micro]
    macro_peak = [
        np.linalg.norm(rendering.apex_field(s, size), axis=-1).max() for s in macro if s.emotion != "neutral"
    ]
    assert 0.5 < np.median(micro_peak) < 2.0 and max(micro_peak) < 3.5
    assert np.median(macro_peak) > 3 * np.median(micro_peak)
    # Fields scale with the image size: the same clip at 128 px moves twice as far.
    s = micro[0]
    ratio = np.abs(rendering.apex_field(s, 128)).max() / np.abs(rendering.apex_field(s, 64)).max()
    assert ratio == pytest.approx(2.0, rel=0.05)


def _mouth_and_brow(spec, size):
    idn = rendering._identity(spec.seed[0], layouts.PROFILES[spec.layout].identity_space, spec.subject)
    m = faces.landmarks(idn, size)
    r = 0.18 * faces.face_scale(idn, size)
    mouth = [m["mouth_corner_l"], m["mouth_corner_r"], m["lip_lower"]]
    brows = [m["brow_inner_l"], m["brow_inner_r"], m["brow_outer_l"], m["brow_outer_r"]]
    return mouth, brows, r


@pytest.mark.parametrize(("emotion", "where"), [("happiness", "mouth"), ("surprise", "brows")])
def test_micro_motion_is_where_its_aus_are(emotion, where):
    size = 64
    specs = [s for s in planning.plan("casme2", seed=0, clips_scale=0.3, knobs=QUIET) if s.emotion == emotion]
    if where == "brows":  # surprise with a dropped jaw (1+2+25+26) legitimately moves the mouth too
        specs = [s for s in specs if not {"25", "26"} & set(s.events[0].aus)]
    assert len(specs) >= 5
    for spec in specs:
        field = rendering.apex_field(spec, size)
        mouth, brows, r = _mouth_and_brow(spec, size)
        e_mouth = max(_region_energy(field, p, r) for p in mouth)
        e_brows = max(_region_energy(field, p, r) for p in brows)
        assert (e_mouth > 3 * e_brows) if where == "mouth" else (e_brows > 3 * e_mouth), spec.extra["aus"]
        # The pixels change there too (distractors off): |apex - onset| by region.
        frames = rendering.render_clip(spec, size, QUIET, frames=(spec.events[0].onset, spec.events[0].apex))
        diff = np.abs(frames[1].astype(np.float32) - frames[0].astype(np.float32)).mean(-1)[..., None]
        d_mouth = max(_region_energy(diff, p, r) for p in mouth)
        d_brows = max(_region_energy(diff, p, r) for p in brows)
        assert (d_mouth > d_brows) if where == "mouth" else (d_brows > d_mouth), spec.extra["aus"]


def test_macro_frames_change_more_than_micro_frames(generated):
    def apex_minus_onset(specs, knobs):
        out = []
        for s in specs[:8]:
            e = s.events[0]
            f = rendering.render_clip(s, SIZE, knobs, frames=(e.onset, e.apex)).astype(np.float32)
            out.append(np.abs(f[1] - f[0]).mean())
        return float(np.mean(out))

    quiet_macro = Knobs(macro_jitter=0.0, macro_rotation=0.0, noise=0.0, light_drift=0.0, blink_prob=0.0)
    micro = apex_minus_onset(planning.plan("casme2", seed=0, clips_scale=SCALE, knobs=QUIET), QUIET)
    macro_specs = [s for s in planning.plan("dfew", seed=0, clips_scale=SCALE) if s.emotion != "neutral"]
    macro = apex_minus_onset(macro_specs, quiet_macro)
    assert micro > 0.05
    assert macro > 3 * micro


def test_envelope_rises_to_apex_and_falls_to_offset():
    t = np.arange(20)
    e = action_units.envelope(t, 2, 8, 15)
    assert e[2] == 0 and e[8] == pytest.approx(1.0) and e[15] == pytest.approx(0.0, abs=1e-12)
    assert np.all(np.diff(e[2:9]) > 0) and np.all(np.diff(e[8:16]) < 0)
    assert np.all(e[:3] == 0) and np.all(e[15:] == 0)


def test_every_emotion_and_au_has_a_field():
    size = 48
    idn = faces.sample_identity(np.random.default_rng(0))
    marks = faces.landmarks(idn, size)
    scale = faces.face_scale(idn, size)
    for au in action_units.AU_PUSHES:
        f = action_units.au_field(au, marks, scale, size)
        assert np.linalg.norm(f, axis=-1).max() == pytest.approx(1.0, rel=1e-5)
    left = action_units.au_field("R12", marks, scale, size)  # subject's right = image left
    assert np.abs(left[:, : size // 2]).sum() > 20 * np.abs(left[:, size // 2 :]).sum()
    rng = np.random.default_rng(0)
    for emotion in [*action_units.EMOTION_AUS, "others"]:
        aus = action_units.sample_aus(emotion, rng)
        assert all(a in action_units.AU_PUSHES or a[1:] in action_units.AU_PUSHES for a in aus)
    with pytest.raises(KeyError, match="no AU table"):
        action_units.sample_aus("boredom", rng)


def test_face_renders_at_any_size_and_differs_between_people():
    a = faces.render_face(faces.sample_identity(np.random.default_rng(1)), 24)
    b = faces.render_face(faces.sample_identity(np.random.default_rng(2)), 24)
    big = faces.render_face(faces.sample_identity(np.random.default_rng(1)), 96)
    assert a.shape == (24, 24, 3) and big.shape == (96, 96, 3)
    assert np.abs(a - b).mean() > 5
    assert a.min() >= 0 and a.max() <= 255


def test_refuses_a_non_empty_out_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="--overwrite"):
        generator.generate("mmew", str(out), size=SIZE, clips_scale=0.05, progress=False)
    assert os.listdir(out) == ["keep.txt"]

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(annotation_files, "write_annotations", broken)
    with pytest.raises(OSError, match="disk full"):
        generator.generate("mmew", str(out), size=SIZE, clips_scale=0.05, progress=False, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["data"] and os.listdir(out) == ["keep.txt"]
    monkeypatch.undo()
    generator.generate("mmew", str(out), size=SIZE, clips_scale=0.05, progress=False, overwrite=True)
    assert "keep.txt" not in os.listdir(out) and "MMEW_Micro_Exp.xlsx" in os.listdir(out)
    assert sorted(os.listdir(tmp_path)) == ["data"]


def _script(*args: str) -> subprocess.CompletedProcess:
    """Run scripts/generate_synthetic.py from the repository root as a user would."""
    return run_script(["scripts/generate_synthetic.py", *args])


def test_command_line_writes_the_layout_preview_and_manifest(tmp_path):
    out = tmp_path / "dfew"
    args = ["--out", str(out), "--layout", "dfew", "--size", "32", "--clips_scale", "0.03", "--quiet"]
    result = _script(*args, "--macro_intensity", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wrote" in result.stdout
    assert os.path.isfile(out / "preview.png")
    meta = json.loads((out / "synthetic.json").read_text())
    assert meta["layout"] == "dfew" and meta["knobs"]["macro_intensity"] == 4.0
    assert len(meta["clips"]) == len(os.listdir(out / "Clip" / "clip_224x224"))
    # The knobs not given keep the library's defaults (the same bytes as generator.generate's).
    assert meta["knobs"] == {**dataclasses.asdict(Knobs()), "macro_intensity": 4.0}
    refused = _script("--out", str(out), "--layout", "dfew", "--size", "32", "--quiet")
    assert refused.returncode == errors.EXIT_CODE == 2
    assert "error: --out" in refused.stderr and "--overwrite" in refused.stderr
    assert "Traceback" not in refused.stderr
    missing = _script("--layout", "dfew")
    assert missing.returncode != 0 and "--out is required" in missing.stderr


def test_macro_set_covers_every_action_unit_of_the_micro_sets():
    """Pre-training can only teach motions it shows: every AU a micro class uses occurs in the macro set."""

    base = lambda au: au.lstrip("LR")
    macro = {base(au) for spec in planning.plan("dfew") for e in spec.events for au in e.aus}
    micro = {base(au) for variants in action_units.EMOTION_AUS.values() for _, aus in variants for au in aus}
    micro |= {base(au) for au in action_units.OTHERS_POOL}
    assert micro <= macro, sorted(micro - macro)


def test_macro_noise_and_jpeg_quality_are_macro_only_knobs():
    specs = planning.plan("dfew", clips_scale=0.01) + planning.plan("casme2", clips_scale=0.01)
    quiet = Knobs(macro_noise=0.0)
    for spec in specs:
        a = rendering.render_clip(spec, 32, Knobs(), frames=(0,))
        b = rendering.render_clip(spec, 32, quiet, frames=(0,))
        same = np.array_equal(a, b)
        assert same == (spec.layout == "casme2"), spec.layout
