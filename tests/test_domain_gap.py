"""The synthetic macro set's domain gap: off means in-domain bytes, each factor moves its statistic."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from ma2mi_jax import errors
from ma2mi_jax.data.synthetic import domain_gap, faces, generator, planning, rendering
from ma2mi_jax.data.synthetic.knobs import Knobs
from ma2mi_jax.workflows import quickstart
from tests.helpers.configs import tiny_finetune_config, tiny_pretrain_config
from tests.helpers.files import tree_hashes
from tests.helpers.scripts import run_script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64
NOISELESS = Knobs(macro_noise=0.0)
STILL = Knobs(macro_noise=0.0, macro_jitter=0.0, macro_rotation=0.0, light_drift=0.0, blink_prob=0.0)


@pytest.fixture(scope="module")
def macro_specs():
    """Five planned macro clips (no gap)."""
    return planning.plan("dfew", seed=0, clips_scale=0.02)[:5]


@pytest.fixture(scope="module")
def plain_frames(macro_specs):
    """Their in-domain frames without sensor noise, uint8[T,64,64,3] each."""
    return [rendering.render_clip(s, SIZE, NOISELESS) for s in macro_specs]


def _with(spec, *factors):
    return domain_gap.apply(spec, factors)


def _grey(frames: np.ndarray) -> np.ndarray:
    return frames.astype(np.float64).mean(-1)  # [T,H,W]


def test_factor_names_parse_and_unknown_ones_are_refused():
    assert domain_gap.parse("all") == domain_gap.FACTORS
    assert domain_gap.parse("timing, faces") == ("faces", "timing")  # FACTORS order
    assert domain_gap.parse("") == domain_gap.parse(()) == ()
    with pytest.raises(errors.ConfigError, match=r"unknown domain-gap factor 'blur'.*faces, resolution"):
        domain_gap.parse("faces,blur")


def test_without_factors_every_layout_renders_the_in_domain_frames():
    for layout in ("dfew", "casme2"):
        for spec in planning.plan(layout, seed=0, clips_scale=0.01)[:3]:
            assert domain_gap.apply(spec, ()) is spec
            assert spec.gap == ()
            assert np.array_equal(rendering.render_clip(spec, SIZE), rendering.render_clip(_with(spec), SIZE))
    # Planning with factors draws the same plan: only the gap (and, for timing, the frames) differ.
    gapped = planning.plan("dfew", seed=0, clips_scale=0.01, macro_gap=("faces", "lighting"))
    for plain, spec in zip(planning.plan("dfew", seed=0, clips_scale=0.01), gapped, strict=True):
        assert dataclasses.replace(spec, gap=()) == plain


def test_micro_layouts_refuse_the_gap(tmp_path):
    with pytest.raises(errors.ConfigError, match="macro set only"):
        planning.plan("casme2", clips_scale=0.01, macro_gap=("faces",))
    with pytest.raises(errors.ConfigError, match="macro set only"):
        domain_gap.apply(planning.plan("samm", clips_scale=0.01)[0], ("lighting",))
    with pytest.raises(errors.ConfigError, match="macro set only"):
        generator.run(
            "megc2019", str(tmp_path / "m"), 32, clips_scale=0.01, progress=False, macro_gap=("all",)
        )
    assert not os.path.exists(tmp_path / "m")


def test_every_factor_changes_the_macro_frames(macro_specs, plain_frames):
    for factor in domain_gap.FACTORS:
        spec = _with(macro_specs[0], factor)
        assert spec.gap == (factor,)
        frames = rendering.render_clip(spec, SIZE, NOISELESS)
        assert frames.shape == plain_frames[0].shape
        assert not np.array_equal(frames, plain_frames[0]), factor


def _laplacian_variance(frames: np.ndarray) -> float:
    return float(np.mean([cv2.Laplacian(g, cv2.CV_64F).var() for g in _grey(frames)]))


def test_resolution_lowers_the_sharpness(macro_specs, plain_frames):
    for spec, plain in zip(macro_specs, plain_frames, strict=True):
        look = domain_gap.draw_look(_with(spec, "resolution"))
        lo, hi = domain_gap.CONSTANTS.capture_scale
        assert lo <= look.capture_scale <= hi
        assert look.capture_size(SIZE) < SIZE
        soft = rendering.render_clip(_with(spec, "resolution"), SIZE, NOISELESS)
        assert soft.shape == plain.shape  # the output side does not change
        assert _laplacian_variance(soft) < 0.5 * _laplacian_variance(plain)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def _blockiness(frames: np.ndarray) -> float:
    """Mean horizontal step across the 8-pixel JPEG block borders over the mean step inside blocks."""
    steps = np.abs(np.diff(_grey(frames), axis=2))  # [T,H,W-1]
    return float(steps[:, :, 7::8].mean() / np.delete(steps, np.s_[7::8], axis=2).mean())


def test_compression_lowers_the_psnr_and_shows_blocks(macro_specs, plain_frames):
    for spec, plain in zip(macro_specs, plain_frames, strict=True):
        lo, hi = domain_gap.CONSTANTS.jpeg_quality
        assert lo <= domain_gap.draw_look(_with(spec, "compression")).jpeg_quality <= hi
        coded = rendering.render_clip(_with(spec, "compression"), SIZE, NOISELESS)
        assert _psnr(coded, plain) < 37.0  # against the lossless render
        assert _blockiness(coded) > 1.2 * _blockiness(plain)


def test_lighting_casts_colour_and_changes_the_contrast(macro_specs, plain_frames):
    shifts = []
    for spec, plain in zip(macro_specs, plain_frames, strict=True):
        lit = rendering.render_clip(_with(spec, "lighting"), SIZE, NOISELESS)
        p, q = plain.astype(np.float64), lit.astype(np.float64)
        cast = abs(
            np.log(q[..., 0].mean() / q[..., 2].mean()) - np.log(p[..., 0].mean() / p[..., 2].mean())
        )  # red/blue ratio
        contrast = abs(np.log(q.std() / p.std()))
        assert cast > 0.05 or contrast > 0.1, (cast, contrast)
        shifts.append(cast)
    assert np.mean(shifts) > 0.1


def _skin_texture(idn: faces.Identity) -> float:
    """High-pass energy of the skin on the cheeks and forehead of a 64 px face."""
    grey = cv2.cvtColor(faces.render_face(idn, SIZE), cv2.COLOR_RGB2GRAY)
    high = grey - cv2.GaussianBlur(grey, (0, 0), 2)
    marks = faces.landmarks(idn, SIZE)
    patches = []
    for name in ("cheek_l", "cheek_r", "forehead"):
        x, y = marks[name].round().astype(int)
        patches.append(high[y - 2 : y + 3, x - 2 : x + 3].std())
    return float(np.mean(patches))


def test_faces_come_from_another_family():
    rngs = [np.random.default_rng(i) for i in range(20)]
    lab = [faces.sample_identity(np.random.default_rng(i)) for i in range(20)]
    wild = [domain_gap.sample_identity(r) for r in rngs]
    # Coloured scenes instead of lab greys, other proportions, another skin model.
    chroma = lambda people: np.mean([np.ptp(p.background) for p in people])
    assert chroma(wild) > chroma(lab) + 40
    assert np.std([p.half_w for p in wild]) > 1.5 * np.std([p.half_w for p in lab])
    assert np.mean([_skin_texture(p) for p in wild]) > 1.15 * np.mean([_skin_texture(p) for p in lab])
    assert all(p.blemishes > 0 and p.mottle > 0 for p in wild)


def test_expressions_still_move_the_other_faces():
    spec = next(s for s in planning.plan("dfew", seed=0, clips_scale=0.05) if len(s.events) == 1)
    spec = _with(spec, "faces")
    e = spec.events[0]
    onset, apex = rendering.render_clip(spec, SIZE, STILL, frames=(e.onset, e.apex)).astype(np.float64)
    moved = np.abs(apex - onset).mean(-1)  # [H,W]
    field = np.linalg.norm(rendering.apex_field(spec, SIZE), axis=-1)  # [H,W] pixels, the wild face's
    assert field.max() > 1.0
    assert moved[field > 0.5].mean() > 3 * moved[field < 0.05].mean() + 0.5


def test_timing_shortens_the_rise_and_fall():
    plain = planning.plan("dfew", seed=0, clips_scale=0.05)
    timed = planning.plan("dfew", seed=0, clips_scale=0.05, macro_gap=("timing",))
    c = domain_gap.CONSTANTS
    for p, t in zip(plain, timed, strict=True):
        for e in t.events:
            assert c.rise[0] <= e.apex - e.onset <= c.rise[1]
            assert e.offset - e.apex <= c.fall[1]
            assert 0 <= e.onset < e.apex <= e.offset < t.num_frames
        assert [e.aus for e in t.events] == [e.aus for e in p.events]
    rise = lambda specs: np.mean([s.events[0].apex - s.events[0].onset for s in specs])
    assert rise(timed) < 0.5 * rise(plain)
    # A pair 2 frames apart from the onset spans more of the motion at 25 fps.
    spec = next(s for s in timed if len(s.events) == 1)
    e, slow = spec.events[0], next(s for s in plain if s.index == spec.index).events[0]
    fast = rendering.render_clip(spec, SIZE, STILL, frames=(e.onset, e.onset + 2)).astype(np.float64)
    ref = rendering.render_clip(
        next(s for s in plain if s.index == spec.index), SIZE, STILL, frames=(slow.onset, slow.onset + 2)
    ).astype(np.float64)
    assert np.abs(fast[1] - fast[0]).mean() > 1.5 * np.abs(ref[1] - ref[0]).mean()


def _read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


def test_same_seed_same_bytes_with_the_gap_and_the_manifest_records_it(tmp_path):
    roots = [str(tmp_path / name) for name in ("a", "b", "plain")]
    for root in roots[:2]:
        generator.generate("dfew", root, SIZE, seed=0, clips_scale=0.02, progress=False, macro_gap=["all"])
    generator.generate("dfew", roots[2], SIZE, seed=0, clips_scale=0.02, progress=False)
    a, b, plain = (tree_hashes(r) for r in roots)
    assert a == b
    assert os.path.isfile(os.path.join(roots[0], "preview.png"))
    meta = [json.loads(_read_text(os.path.join(r, "synthetic.json"))) for r in (roots[0], roots[2])]
    assert meta[0]["macro_gap"] == list(domain_gap.FACTORS)
    assert "macro_gap" not in meta[1]  # the in-domain manifest keeps its bytes
    frames = [k for k in a if k.endswith(".jpg")]
    assert frames and sorted(frames) == sorted(k for k in plain if k.endswith(".jpg"))
    assert all(a[k] != plain[k] for k in frames)


def test_quickstart_passes_the_gap_to_the_macro_set_only_and_refuses_another(tmp_path):
    pre, loso = tiny_pretrain_config({}), tiny_finetune_config("unused", "unused")
    paths = quickstart.Paths(str(tmp_path))
    quickstart.generate_data(pre, loso, paths, 0.02, macro_gap=("timing",))
    manifest = lambda root: json.loads((Path(root) / "synthetic.json").read_text())
    assert manifest(paths.macro_data)["macro_gap"] == ["timing"]
    assert "macro_gap" not in manifest(paths.micro_data)
    quickstart.generate_data(pre, loso, paths, 0.02, macro_gap=("timing",))  # reused as it is
    with pytest.raises(errors.ConfigError, match=r"generated with domain gap \['timing'\], not none"):
        quickstart.generate_data(pre, loso, paths, 0.02)


def test_script_refuses_an_unknown_factor_in_one_line(tmp_path):
    args = ["--out", str(tmp_path / "d"), "--layout", "dfew", "--domain_gap=faces,grain", "--quiet"]
    result = run_script(["scripts/generate_synthetic.py", *args])
    assert result.returncode == errors.EXIT_CODE
    assert result.stderr.strip().splitlines() == [
        "error: unknown domain-gap factor 'grain'; choose from "
        "faces, resolution, compression, lighting, timing or all"
    ]
    assert not os.path.exists(tmp_path / "d")


def test_script_refuses_the_gap_for_a_micro_layout_before_writing(tmp_path):
    args = ["--out", str(tmp_path / "d"), "--layout", "casme2", "--domain_gap=faces", "--quiet"]
    result = run_script(["scripts/generate_synthetic.py", *args])
    assert result.returncode == errors.EXIT_CODE
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "casme2" in lines[0] and "domain" in lines[0], lines
    assert not os.path.exists(tmp_path / "d")
