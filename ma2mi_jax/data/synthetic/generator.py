"""Procedural micro/macro-expression data sets written in the official CASME II, SAMM, MMEW, DFEW layouts.

    python -m ma2mi_jax.data.synthetic.generator --out data/synthetic/casme2 --layout casme2
    python -m ma2mi_jax.data.synthetic.generator --out data/synthetic/dfew --layout dfew

Faces are drawn per person (`faces`), moved by facial action units (`action_units`: smooth
displacement fields anchored to landmarks, onset -> apex -> offset envelope, cv2.remap warping)
and written as JPEG frames plus the release's annotation sheet or split CSVs (`layouts`), so the
real readers and pipelines are what runs on them.

- Micro sets (casme2, samm, mmew): the releases' class counts and subject ids (`--clips-scale`
  shrinks them), 12-20 frames per clip, one expression whose apex moves skin by about
  `micro_intensity` pixels at 64x64 (x0.5..1.5 per clip, scaled with the image size), nearly
  static heads (sub-pixel jitter), lighting drift, sensor noise and blinks as distractors.
- Macro set (dfew): many people (an identity space disjoint from the micro sets'), 16-32 frames,
  1-3 expressions per clip at `macro_intensity` pixels, larger head motion; the label of the
  dominant expression goes into the split CSVs for the supervised baseline. Secondary expressions
  are drawn from every prototype (contempt, with AU14, included) and from the micro sets'
  single-AU "others" pool, so every AU a micro class uses occurs in the macro set
  (tests/test_synthetic.py checks it).
- Determinism: the plan comes from `SeedSequence([seed, layout])`, each clip draws from its own
  stream `[seed, layout, clip index]` and each frame from `[..., frame]`, so the output does not
  depend on the number of workers; .xlsx files carry fixed timestamps. Same seed, same bytes.
- Output is written to `<out>.tmp-XXXX` and renamed to `<out>` at the end; a non-empty `<out>`
  is refused unless `--overwrite`. `preview.png` (onset | apex | |apex - onset| per class, or a
  macro strip) and `synthetic.json` (the arguments and every clip's AUs) land in the root.
- `--workers N` renders with a process pool (same bytes); the default renders serially, which at
  64 px is quicker than starting a pool on busy cores (docs/decisions.md#serial-data-generation).

Knobs (`Knobs`, one command-line flag each): expression amplitude (`micro_intensity`,
`macro_intensity`), head translation and rotation over a clip (`*_jitter`, `*_rotation`), sensor
noise and JPEG quality (`noise` and `micro_jpeg_quality` for the micro sets, `macro_noise` and
`macro_jpeg_quality` for the macro set), lighting drift and blinks. The micro sets' defaults are
calibrated so that a from-scratch classifier lands clearly above chance and clearly below perfect in
a LOSO at the quick-start size, leaving room for a gain from pre-training; the macro set's sensor is
quieter than theirs (docs/decisions.md#difficulty-of-the-synthetic-micro-sets,
docs/decisions.md#quieter-macro-sensor). `--calibrate [knob flags]` measures that difficulty with two
proxies (`proxy_loso`, needs scikit-learn): a ridge classifier on (apex - onset) pixels and a logistic
regression on optical flow.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from ma2mi_jax.data.synthetic import action_units as aus_lib
from ma2mi_jax.data.synthetic import faces as face_lib
from ma2mi_jax.data.synthetic import layouts
from ma2mi_jax.data.synthetic.action_units import Event
from ma2mi_jax.data.synthetic.layouts import PROFILES, ClipSpec

LAYOUTS = tuple(PROFILES)
REFERENCE_SIZE = 64  # pixel amounts (intensity, jitter) are given at this image size
_LAYOUT_CODE = {name: i + 1 for i, name in enumerate(LAYOUTS)}


@dataclasses.dataclass(frozen=True)
class Knobs:
    """Difficulty knobs; pixel amounts are at 64x64 and scale with the image size."""

    micro_intensity: float = 1.0  # apex displacement peak of a micro expression (x U(0.5, 1.5) per clip)
    macro_intensity: float = 5.0  # apex displacement peak of a macro expression (x U(0.6, 1.4))
    micro_jitter: float = 0.4  # head translation (pixels) over a micro clip
    macro_jitter: float = 2.0
    micro_rotation: float = 0.4  # head rotation (degrees) over a micro clip
    macro_rotation: float = 3.0
    noise: float = 2.0  # sensor noise standard deviation of the micro sets, grey levels
    macro_noise: float = 1.0  # the same for the macro set (quieter: see the module docstring)
    micro_jpeg_quality: float = 95  # JPEG quality of the written frames
    macro_jpeg_quality: float = 98
    light_drift: float = 0.03  # relative change of brightness / light direction over a clip
    blink_prob: float = 0.3  # chance that a micro clip holds a blink (macro: per 16 frames)


# ---------------------------------------------------------------------------------------------
# Planning: which clips exist, who is in them and what they express.


def _scaled_counts(counts: dict[str, int], scale: float) -> dict[str, int]:
    return {k: max(1, round(v * scale)) for k, v in counts.items()}


def _num_subjects(nominal: int, scale: float) -> int:
    return max(2, min(nominal, math.ceil(nominal * scale)))


def _assign_subjects(n_clips: int, subjects: Sequence[int], rng: np.random.Generator) -> list[int]:
    """Subject of each clip: everyone at least once, the rest unevenly (as in the releases)."""
    weights = rng.gamma(1.5, size=len(subjects))
    base = list(subjects)[: min(n_clips, len(subjects))]
    rest = rng.choice(len(subjects), size=n_clips - len(base), p=weights / weights.sum())
    out = base + [subjects[i] for i in rest]
    return [out[i] for i in rng.permutation(n_clips)]


def _micro_event(emotion: str, num_frames: int, knobs: Knobs, rng: np.random.Generator) -> Event:
    onset = int(rng.integers(1, 4))
    apex = onset + int(rng.integers(3, max(4, (num_frames - onset) // 2 + 1)))
    offset = min(num_frames - 1, apex + int(rng.integers(3, num_frames)))
    gain = knobs.micro_intensity * float(rng.uniform(0.5, 1.5))
    aus = {k: v * gain for k, v in aus_lib.sample_aus(emotion, rng).items()}
    return Event(emotion, aus, onset, apex, offset)


def _macro_events(emotion: str, num_frames: int, knobs: Knobs, rng: np.random.Generator) -> list[Event]:
    """1-3 expressions; the first (labelled) is the longest and strongest."""
    events = []
    n = 1 + int(rng.choice(3, p=[0.4, 0.4, 0.2]))
    # Secondary expressions cover every AU: the prototypes (contempt's AU14 included) and the
    # micro sets' single-AU "others" pool.
    others = [e for e in aus_lib.EMOTION_AUS if e != "neutral"] + ["others"]
    for k in range(n):
        emo = emotion if k == 0 else str(rng.choice(others))
        length = (
            int(rng.integers(max(6, num_frames // 2), num_frames + 1)) if k == 0 else int(rng.integers(5, 10))
        )
        start = int(rng.integers(0, num_frames - length + 1))
        apex = start + int(rng.integers(2, max(3, length - 2)))
        gain = (
            knobs.macro_intensity
            * float(rng.uniform(0.6, 1.4))
            * (1.0 if k == 0 else float(rng.uniform(0.3, 0.6)))
        )
        if emo == "neutral":
            gain *= 0.4
        aus = {au: v * gain for au, v in aus_lib.sample_aus(emo, rng).items()}
        events.append(Event(emo, aus, start, apex, start + length - 1))
    return events


def plan(layout: str, seed: int = 0, clips_scale: float = 1.0, knobs: Knobs | None = None) -> list[ClipSpec]:
    """Every clip of a layout: subject, names, emotion, AU events and frame numbers (no pixels)."""
    if layout not in PROFILES:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if clips_scale <= 0:
        raise ValueError(f"clips_scale must be > 0, got {clips_scale}")
    knobs = knobs or Knobs()
    prof = PROFILES[layout]
    rng = np.random.default_rng(np.random.SeedSequence([seed, _LAYOUT_CODE[layout]]))
    counts = _scaled_counts(prof.counts, clips_scale)
    emotions = [e for e, n in counts.items() for _ in range(n)]
    emotions = [emotions[i] for i in rng.permutation(len(emotions))]
    subjects = prof.subjects[: _num_subjects(len(prof.subjects), clips_scale)]
    who = _assign_subjects(len(emotions), subjects, rng)
    taken: dict[int, dict[str, int]] = {}
    specs = []
    for i, (emotion, subject) in enumerate(zip(emotions, who, strict=True)):
        num_frames = int(rng.integers(prof.frames[0], prof.frames[1] + 1))
        first = int(rng.integers(prof.first_frame[0], prof.first_frame[1] + 1))
        extra: dict[str, Any]
        if prof.kind == "micro":
            au_emotion = emotion.lower()
            name, extra = layouts.name_clip(layout, subject, taken.setdefault(subject, {}), rng)
            events = [_micro_event(au_emotion, num_frames, knobs, rng)]
        else:
            au_emotion = layouts.DFEW_TO_AU_EMOTION[emotion]
            name, extra = str(i + 1), {}
            events = _macro_events(au_emotion, num_frames, knobs, rng)
        extra["aus"] = aus_lib.au_code(events[0].aus) or "/"
        if layout == "samm":
            extra["objective"] = layouts.SAMM_OBJECTIVE_CLASS.get(au_emotion, int(rng.integers(1, 8)))
        specs.append(
            ClipSpec(
                i,
                layout,
                subject,
                name,
                emotion,
                au_emotion,
                tuple(events),
                first,
                num_frames,
                (seed, _LAYOUT_CODE[layout], i),
                extra,
            )
        )
    return specs


# ---------------------------------------------------------------------------------------------
# Rendering.


@functools.lru_cache(maxsize=64)
def _identity(seed: int, space: int, subject: int) -> face_lib.Identity:
    return face_lib.sample_identity(
        np.random.default_rng(np.random.SeedSequence([seed, 7919, space, subject]))
    )


@functools.lru_cache(maxsize=192)
def _face(seed: int, space: int, subject: int, size: int, closed: float) -> np.ndarray:
    img = face_lib.render_face(_identity(seed, space, subject), size, eyes_closed=closed)
    img.setflags(write=False)
    return img


def _smooth_path(rng: np.random.Generator, n: int, amount: float) -> np.ndarray:
    """A slow random trajectory float64[n] of typical size `amount` (drift + one slow wave + tremor)."""
    t = np.arange(n) / max(n - 1, 1)
    drift = rng.normal(0.0, 0.6) * t
    wave = rng.normal(0.0, 0.5) * np.sin(2 * math.pi * (rng.uniform(0.3, 1.0) * t + rng.uniform()))
    tremor = rng.normal(0.0, 0.1, n)
    return amount * (drift + wave + tremor)


def render_clip(
    spec: ClipSpec, size: int = 64, knobs: Knobs | None = None, frames: Sequence[int] | None = None
):
    """Frames uint8[T,size,size,3] RGB of a clip (or only the frame indices `frames`)."""
    knobs = knobs or Knobs()
    prof = PROFILES[spec.layout]
    micro = prof.kind == "micro"
    rng = np.random.default_rng(np.random.SeedSequence(list(spec.seed)))
    n = spec.num_frames
    px = size / REFERENCE_SIZE
    # Head pose per frame: translation (pixels), rotation (degrees), zoom.
    jit = (knobs.micro_jitter if micro else knobs.macro_jitter) * px
    rot = knobs.micro_rotation if micro else knobs.macro_rotation
    base_shift = rng.normal(0.0, 0.02 * size, 2)  # each clip frames the face a little differently
    sx, sy = base_shift[0] + _smooth_path(rng, n, jit), base_shift[1] + _smooth_path(rng, n, jit)
    angle = rng.normal(0.0, 2.0) + _smooth_path(rng, n, rot)
    zoom = rng.uniform(0.96, 1.04) * (1.0 + _smooth_path(rng, n, 0.002 if micro else 0.01))
    # Lighting: a per-clip gain and direction, drifting over the clip.
    gain = rng.uniform(0.85, 1.15) * (1.0 + _smooth_path(rng, n, knobs.light_drift))
    gx0, gy0 = rng.normal(0.0, 0.15, 2)
    gx, gy = gx0 + _smooth_path(rng, n, knobs.light_drift), gy0 + _smooth_path(rng, n, knobs.light_drift)
    # Blinks: eye closure per frame.
    closure = np.zeros(n)
    n_blinks = int(rng.random() < knobs.blink_prob) if micro else int(rng.poisson(knobs.blink_prob * n / 16))
    for _ in range(n_blinks):
        c = int(rng.integers(0, n))
        for dt, v in ((-1, 0.5), (0, 1.0), (1, 0.5)):
            if 0 <= c + dt < n:
                closure[c + dt] = max(closure[c + dt], v)
    # AU fields at apex, in the neutral face's pixel coordinates.
    space = prof.identity_space
    idn = _identity(spec.seed[0], space, spec.subject)
    marks = face_lib.landmarks(idn, size)
    scale = face_lib.face_scale(idn, size)
    t = np.arange(n)
    fields = [
        aus_lib.expression_field({k: v * px for k, v in e.aus.items()}, marks, scale, size)
        for e in spec.events
    ]
    curves = [aus_lib.envelope(t, e.onset, e.apex, e.offset) for e in spec.events]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5  # [H,W]
    out = []
    for i in range(n) if frames is None else frames:
        closed = float(closure[i])
        face = _face(spec.seed[0], space, spec.subject, size, 0.0)
        if closed > 0:
            face = _face(spec.seed[0], space, spec.subject, size, closed)
        field = np.zeros((size, size, 2), np.float32)
        for f, curve in zip(fields, curves, strict=True):
            if curve[i] > 0:
                field += np.float32(curve[i]) * f
        source = aus_lib.rigid_map(size, (sx[i], sy[i]), angle[i], zoom[i])
        img = aus_lib.warp(face, source, field)  # [H,W,3] float32
        light = np.float32(gain[i]) * (1.0 + np.float32(gx[i]) * xx + np.float32(gy[i]) * yy)
        img = img * light[..., None]
        frame_rng = np.random.default_rng(np.random.SeedSequence([*spec.seed, i]))
        sigma = knobs.noise if micro else knobs.macro_noise
        img = img + frame_rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
        out.append(np.clip(np.rint(img), 0, 255).astype(np.uint8))
    return np.stack(out)  # [T,H,W,3]


def apex_field(spec: ClipSpec, size: int = 64) -> np.ndarray:
    """The annotated expression's displacement field at apex, float32[size,size,2] in pixels."""
    idn = _identity(spec.seed[0], PROFILES[spec.layout].identity_space, spec.subject)
    px = size / REFERENCE_SIZE
    aus = {k: v * px for k, v in spec.events[0].aus.items()}
    return aus_lib.expression_field(aus, face_lib.landmarks(idn, size), face_lib.face_scale(idn, size), size)


# ---------------------------------------------------------------------------------------------
# Writing.


def _render_and_write(args: tuple[str, ClipSpec, int, Knobs]) -> tuple[int, np.ndarray, np.ndarray]:
    root, spec, size, knobs = args
    frames = render_clip(spec, size, knobs)
    micro = PROFILES[spec.layout].kind == "micro"
    quality = knobs.micro_jpeg_quality if micro else knobs.macro_jpeg_quality
    layouts.write_frames(root, spec, frames, int(quality))
    a = spec.events[0]
    return spec.index, frames[a.onset], frames[a.apex]


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="clip", disable=not enabled, file=sys.stderr)


def _prepare_out(out: str, overwrite: bool) -> str:
    out = os.path.abspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise FileExistsError(f"--out {out} exists and is not a folder; choose another path")
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise FileExistsError(
            f"--out {out} exists and is not empty; pass --overwrite to replace it or choose another path"
        )
    os.makedirs(os.path.dirname(out), exist_ok=True)
    return tempfile.mkdtemp(prefix=os.path.basename(out) + ".tmp-", dir=os.path.dirname(out))


def _commit(tmp: str, out: str) -> None:
    """Move the finished folder into place; an existing `out` is removed only after the move."""
    out = os.path.abspath(out)
    old = None
    if os.path.isdir(out):
        if os.listdir(out):
            old = tempfile.mkdtemp(prefix=os.path.basename(out) + ".old-", dir=os.path.dirname(out))
            os.rename(out, os.path.join(old, "x"))
        else:
            os.rmdir(out)
    os.rename(tmp, out)
    if old:
        shutil.rmtree(old)


def generate(
    layout: str,
    out: str,
    size: int = 64,
    seed: int = 0,
    *,
    clips_scale: float = 1.0,
    knobs: Knobs | None = None,
    overwrite: bool = False,
    workers: int = 0,
    progress: bool = True,
    preview: bool = True,
) -> list[ClipSpec]:
    """Generate one layout into `out` (atomically) and return the clips' specs."""
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    knobs = knobs or Knobs()
    specs = plan(layout, seed, clips_scale, knobs)
    tmp = _prepare_out(out, overwrite)
    try:
        jobs = [(tmp, s, size, knobs) for s in specs]
        pairs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        with _progress(len(specs), f"{layout} {size}px", progress) as bar:
            if workers > 1:
                import multiprocessing

                with multiprocessing.get_context("spawn").Pool(workers) as pool:
                    for idx, on, ap in pool.imap_unordered(_render_and_write, jobs, chunksize=4):
                        pairs[idx] = (on, ap)
                        bar.update()
            else:
                for job in jobs:
                    idx, on, ap = _render_and_write(job)
                    pairs[idx] = (on, ap)
                    bar.update()
        rng = np.random.default_rng(np.random.SeedSequence([seed, _LAYOUT_CODE[layout], 99]))
        layouts.write_annotations(tmp, layout, specs, rng)
        _write_manifest(tmp, layout, size, seed, clips_scale, knobs, specs)
        if preview:
            cv2.imwrite(
                os.path.join(tmp, "preview.png"),
                cv2.cvtColor(_preview(specs, pairs, size, knobs), cv2.COLOR_RGB2BGR),
            )
        _commit(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return specs


def _write_manifest(root, layout, size, seed, clips_scale, knobs, specs) -> None:
    px = size / REFERENCE_SIZE
    clips = [
        {
            "clip": layouts.clip_id(s),
            "dir": layouts.clip_dir(s),
            "subject": s.subject,
            "emotion": s.emotion,
            "onset": s.onset,
            "apex": s.apex,
            "offset": s.offset,
            "frames": [s.first_frame, s.first_frame + s.num_frames - 1],
            "events": [
                {
                    "emotion": e.emotion,
                    "onset": e.onset,
                    "apex": e.apex,
                    "offset": e.offset,
                    "aus_px": {k: round(v * px, 4) for k, v in e.aus.items()},
                }
                for e in s.events
            ],
        }
        for s in specs
    ]
    meta = {
        "generator": "ma2mi_jax.data.synthetic.generator",
        "layout": layout,
        "size": size,
        "seed": seed,
        "clips_scale": clips_scale,
        "knobs": dataclasses.asdict(knobs),
        "clips": clips,
    }
    with open(os.path.join(root, "synthetic.json"), "w") as f:
        json.dump(meta, f, indent=1)


def _label(img: np.ndarray, text: str) -> np.ndarray:
    img = img.copy()
    cv2.putText(img, text, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 0), 1, cv2.LINE_AA)
    return img


def _preview(
    specs: Sequence[ClipSpec], pairs: dict, size: int, knobs: Knobs, per_class: int = 3
) -> np.ndarray:
    """uint8 RGB picture: per class, `per_class` clips as onset | apex | |apex - onset| x gain."""
    tile = max(96, size)

    def up(img):
        return cv2.resize(img, (tile, tile), interpolation=cv2.INTER_NEAREST)

    micro = PROFILES[specs[0].layout].kind == "micro"
    rows = []
    if micro:
        gain = 255.0 / max(8.0, 6 * knobs.noise)
        for emotion in dict.fromkeys(s.emotion for s in specs):
            row = []
            for s in [s for s in specs if s.emotion == emotion][:per_class]:
                on, ap = pairs[s.index]
                diff = np.abs(ap.astype(np.float32) - on.astype(np.float32)).mean(-1) * gain
                diff = np.repeat(np.clip(diff, 0, 255).astype(np.uint8)[..., None], 3, -1)
                row += [
                    _label(up(on), f"{emotion[:9]} on"),
                    _label(up(ap), f"apex {s.extra['aus']}"),
                    up(diff),
                ]
            row += [np.zeros((tile, tile, 3), np.uint8)] * (3 * per_class - len(row))
            rows.append(np.concatenate(row, 1))
    else:
        for s in specs[:6]:
            frames = render_clip(s, size, knobs)
            idx = np.linspace(0, len(frames) - 1, 8).round().astype(int)
            strip = [_label(up(frames[i]), f"{s.emotion} t{i}" if i == 0 else f"t{i}") for i in idx]
            rows.append(np.concatenate(strip, 1))
    return np.concatenate(rows, 0)


# ---------------------------------------------------------------------------------------------
# Calibration proxy.


def onset_apex_pairs(specs: Sequence[ClipSpec], size: int, knobs: Knobs) -> tuple[np.ndarray, np.ndarray]:
    """Onset and apex frames uint8[N,H,W,3] of every clip, rendered in memory."""
    on, ap = [], []
    for s in specs:
        a = s.events[0]
        f = render_clip(s, size, knobs, frames=(a.onset, a.apex))
        on.append(f[0])
        ap.append(f[1])
    return np.stack(on), np.stack(ap)


def _flow_grid(on: np.ndarray, ap: np.ndarray, cells: int = 8) -> np.ndarray:
    """Farneback optical flow onset -> apex, averaged over a cells x cells grid: float32[N, cells*cells*2]."""
    out = []
    for a, b in zip(on, ap, strict=True):
        g0, g1 = (cv2.cvtColor(v, cv2.COLOR_RGB2GRAY) for v in (a, b))
        flow = cv2.calcOpticalFlowFarneback(g0, g1, None, 0.5, 2, 9, 3, 5, 1.1, 0)  # [H,W,2]
        out.append(cv2.resize(flow, (cells, cells), interpolation=cv2.INTER_AREA).reshape(-1))
    return np.stack(out)


def _loso_predict(x: np.ndarray, y: np.ndarray, groups: np.ndarray, make_model) -> np.ndarray:
    pred = np.empty_like(y)
    for g in np.unique(groups):
        test = groups == g
        mu, sd = x[~test].mean(0), x[~test].std(0) + 1e-3
        model = make_model()
        model.fit((x[~test] - mu) / sd, y[~test])
        pred[test] = model.predict((x[test] - mu) / sd)
    return pred


def proxy_loso(
    layout: str = "casme2",
    size: int = 64,
    seed: int = 0,
    knobs: Knobs | None = None,
    clips_scale: float = 1.0,
    classes: Sequence[str] = ("happiness", "disgust", "repression", "surprise", "others"),
) -> dict[str, dict[str, float]]:
    """Calibration proxies, LOSO on (onset, apex) pairs: UF1/UAR/accuracy of two simple models.

    "diff_ridge": ridge classifier on standardised grey (apex - onset) pixels (no motion prior);
    "flow_logreg": logistic regression on Farneback flow averaged over an 8x8 grid (a hand-made
    motion feature, in the spirit of MDMO). Classes are balanced in both; needs scikit-learn.
    """
    from sklearn.linear_model import LogisticRegression, RidgeClassifier
    from sklearn.metrics import f1_score, recall_score

    knobs = knobs or Knobs()
    specs = [s for s in plan(layout, seed, clips_scale, knobs) if s.emotion.lower() in classes]
    on, ap = onset_apex_pairs(specs, size, knobs)
    y = np.array([list(classes).index(s.emotion.lower()) for s in specs])
    groups = np.array([s.subject for s in specs])
    diff = (ap.astype(np.float32) - on.astype(np.float32)).mean(-1).reshape(len(specs), -1)  # [N,H*W]
    models = {
        "diff_ridge": (diff, lambda: RidgeClassifier(alpha=1000.0, class_weight="balanced")),
        "flow_logreg": (
            _flow_grid(on, ap),
            lambda: LogisticRegression(C=0.05, max_iter=500, class_weight="balanced"),
        ),
    }
    out = {}
    for name, (x, make) in models.items():
        pred = _loso_predict(x, y, groups, make)
        out[name] = {
            "uf1": round(float(f1_score(y, pred, average="macro")), 3),
            "uar": round(float(recall_score(y, pred, average="macro")), 3),
            "accuracy": round(float((pred == y).mean()), 3),
        }
    out["samples"] = {"n": len(y), "subjects": len(np.unique(groups))}
    return out


# ---------------------------------------------------------------------------------------------
# Command line.


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ma2mi_jax.data.synthetic.generator",
        description="Generate a synthetic micro/macro-expression data set in an official on-disk layout.",
    )
    p.add_argument("--out", help="output folder (the reader's data root)")
    p.add_argument("--layout", choices=LAYOUTS, default="casme2")
    p.add_argument("--size", type=int, default=64, help="frame side in pixels (64 for CPU, 224 possible)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clips-scale", type=float, default=1.0, help="multiply every class count (min 1 each)")
    p.add_argument("--workers", type=int, default=0, help="processes (0/1 = in this process)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--no-preview", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--calibrate", action="store_true", help="print the LOSO proxy UF1 instead of writing files"
    )
    for f in dataclasses.fields(Knobs):
        p.add_argument("--" + f.name.replace("_", "-"), type=float, default=f.default)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    args = _parser().parse_args(argv)
    knobs = Knobs(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Knobs)})
    if args.calibrate:
        t0 = time.perf_counter()
        r = proxy_loso(args.layout, args.size, args.seed, knobs, args.clips_scale)
        print(json.dumps({**r, "seconds": round(time.perf_counter() - t0, 1)}))
        return 0
    if not args.out:
        _parser().error("--out is required (unless --calibrate)")
    t0 = time.perf_counter()
    try:
        specs = generate(
            args.layout,
            args.out,
            args.size,
            args.seed,
            clips_scale=args.clips_scale,
            knobs=knobs,
            overwrite=args.overwrite,
            workers=args.workers,
            progress=not args.quiet,
            preview=not args.no_preview,
        )
    except (FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    frames = sum(s.num_frames for s in specs)
    print(
        f"wrote {len(specs)} clips ({frames} frames, {args.size}px, layout {args.layout}) to "
        f"{os.path.abspath(args.out)} in {time.perf_counter() - t0:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
