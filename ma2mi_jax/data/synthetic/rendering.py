"""Rendering: the frames of a planned clip (faces, action units, head motion, light, noise)."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import cv2
import numpy as np

from ma2mi_jax.data.synthetic import action_units as aus_lib
from ma2mi_jax.data.synthetic import domain_gap
from ma2mi_jax.data.synthetic import faces as face_lib
from ma2mi_jax.data.synthetic.knobs import REFERENCE_SIZE, Knobs
from ma2mi_jax.data.synthetic.layouts import PROFILES, ClipSpec


@functools.lru_cache(maxsize=64)
def _identity(seed: int, space: int, subject: int, wild: bool = False) -> face_lib.Identity:
    """One person; `wild`: drawn from the domain gap's family of faces instead."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7919, space, subject]))
    return domain_gap.sample_identity(rng) if wild else face_lib.sample_identity(rng)


@functools.lru_cache(maxsize=192)
def _face(seed: int, space: int, subject: int, size: int, closed: float, wild: bool = False) -> np.ndarray:
    img = face_lib.render_face(_identity(seed, space, subject, wild), size, eyes_closed=closed)
    img.setflags(write=False)
    return img


def _captured_face(
    seed: int, space: int, subject: int, size: int, capture: int, closed: float, wild: bool
) -> np.ndarray:
    """The face float32[capture,capture,3]: rendered at `size`, area-shrunk to a smaller capture side."""
    face = _face(seed, space, subject, size, closed, wild)
    if capture == size:
        return face
    return cv2.resize(face, (capture, capture), interpolation=cv2.INTER_AREA)


def _smooth_path(rng: np.random.Generator, n: int, amount: float) -> np.ndarray:
    """A slow random trajectory float64[n] of typical size `amount` (drift + one slow wave + tremor)."""
    t = np.arange(n) / max(n - 1, 1)
    drift = rng.normal(0.0, 0.6) * t
    wave = rng.normal(0.0, 0.5) * np.sin(2 * math.pi * (rng.uniform(0.3, 1.0) * t + rng.uniform()))
    tremor = rng.normal(0.0, 0.1, n)
    return amount * (drift + wave + tremor)


@dataclasses.dataclass(frozen=True)
class _Nuisances:
    """Per-frame head pose (translation px, rotation degrees, zoom), lighting and eye closure, float64[T]."""

    sx: np.ndarray
    sy: np.ndarray
    angle: np.ndarray
    zoom: np.ndarray
    gain: np.ndarray
    gx: np.ndarray
    gy: np.ndarray
    closure: np.ndarray


def _nuisances(rng: np.random.Generator, n: int, size: int, micro: bool, knobs: Knobs) -> _Nuisances:
    """Draw a clip's head motion, lighting drift and blinks, in this order, from the clip's stream."""
    # Head pose per frame: translation (pixels), rotation (degrees), zoom.
    jit = (knobs.micro_jitter if micro else knobs.macro_jitter) * size / REFERENCE_SIZE
    rot = knobs.micro_rotation if micro else knobs.macro_rotation
    base_shift = rng.normal(0.0, 0.02 * size, 2)  # each clip frames the face a little differently
    sx, sy = base_shift[0] + _smooth_path(rng, n, jit), base_shift[1] + _smooth_path(rng, n, jit)
    angle = rng.normal(0.0, 2.0) + _smooth_path(rng, n, rot)
    zoom = rng.uniform(0.96, 1.04) * (1.0 + _smooth_path(rng, n, 0.002 if micro else 0.01))
    # Lighting: a per-clip gain and direction, drifting over the clip.
    gain = rng.uniform(0.85, 1.15) * (1.0 + _smooth_path(rng, n, knobs.light_drift))
    gx0, gy0 = rng.normal(0.0, 0.15, 2)
    gx, gy = gx0 + _smooth_path(rng, n, knobs.light_drift), gy0 + _smooth_path(rng, n, knobs.light_drift)
    return _Nuisances(sx, sy, angle, zoom, gain, gx, gy, _blinks(rng, n, micro, knobs.blink_prob))


def _blinks(rng: np.random.Generator, n: int, micro: bool, blink_prob: float) -> np.ndarray:
    """Eye closure float64[n]: a micro clip blinks at most once, a macro clip blink_prob per 16 frames."""
    closure = np.zeros(n)
    n_blinks = int(rng.random() < blink_prob) if micro else int(rng.poisson(blink_prob * n / 16))
    for _ in range(n_blinks):
        c = int(rng.integers(0, n))
        for dt, v in ((-1, 0.5), (0, 1.0), (1, 0.5)):
            if 0 <= c + dt < n:
                closure[c + dt] = max(closure[c + dt], v)
    return closure


def _expression_fields(spec: ClipSpec, size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each event's AU field at apex (neutral face's pixel coordinates) and its envelope over the frames."""
    idn = _identity(spec.seed[0], PROFILES[spec.layout].identity_space, spec.subject, "faces" in spec.gap)
    marks, scale = face_lib.landmarks(idn, size), face_lib.face_scale(idn, size)
    px = size / REFERENCE_SIZE
    t = np.arange(spec.num_frames)
    fields = [
        aus_lib.expression_field({k: v * px for k, v in e.aus.items()}, marks, scale, size)
        for e in spec.events
    ]
    curves = [aus_lib.envelope(t, e.onset, e.apex, e.offset) for e in spec.events]
    return fields, curves


def render_clip(
    spec: ClipSpec, size: int = 64, knobs: Knobs | None = None, frames: Sequence[int] | None = None
) -> np.ndarray:
    """Frames uint8[T,size,size,3] RGB of a clip (or only the frame indices `frames`).

    A macro clip with domain-gap factors (`spec.gap`) is rendered at its capture size and given
    the in-the-wild look (`domain_gap`); without them the frames are the in-domain benchmark's.
    """
    knobs = knobs or Knobs()
    prof = PROFILES[spec.layout]
    micro = prof.kind == "micro"
    look = domain_gap.draw_look(spec) if spec.gap else None
    out_size, size = size, look.capture_size(size) if look else size
    wild = "faces" in spec.gap
    rng = np.random.default_rng(np.random.SeedSequence(list(spec.seed)))
    nu = _nuisances(rng, spec.num_frames, size, micro, knobs)
    fields, curves = _expression_fields(spec, size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5  # [H,W]
    wild_light = tone = None  # the `lighting` factor's gain [H,W,3] and tone curve [256]
    if look is not None and "lighting" in look.factors:
        wild_light, tone = domain_gap.light_map(look, xx, yy), domain_gap.tone_curve(look)
    sigma = np.float32(knobs.noise if micro else knobs.macro_noise)
    out = []
    for i in range(spec.num_frames) if frames is None else frames:
        face = _captured_face(
            spec.seed[0], prof.identity_space, spec.subject, out_size, size, float(nu.closure[i]), wild
        )
        field = np.zeros((size, size, 2), np.float32)
        for f, curve in zip(fields, curves, strict=True):
            if curve[i] > 0:
                field += np.float32(curve[i]) * f
        source = aus_lib.rigid_map(size, (nu.sx[i], nu.sy[i]), nu.angle[i], nu.zoom[i])
        img = aus_lib.warp(face, source, field)  # [H,W,3] float32
        light = np.float32(nu.gain[i]) * (1.0 + np.float32(nu.gx[i]) * xx + np.float32(nu.gy[i]) * yy)
        img = img * light[..., None]
        if wild_light is not None:
            img = img * wild_light
        frame_rng = np.random.default_rng(np.random.SeedSequence([*spec.seed, i]))
        img = img + frame_rng.standard_normal(img.shape, dtype=np.float32) * sigma
        if look is not None and wild_light is not None:  # after the sensor noise: that stays as it was
            img = domain_gap.colour_noise(img, look.colour_noise, frame_rng)
        frame = np.clip(np.rint(img), 0, 255).astype(np.uint8)  # [H,W,3]
        if tone is not None:
            frame = cv2.LUT(frame, tone)
        out.append(domain_gap.degrade(frame, look, out_size) if look is not None else frame)
    return np.stack(out)  # [T,H,W,3]


def apex_field(spec: ClipSpec, size: int = 64) -> np.ndarray:
    """The annotated expression's displacement field at apex, float32[size,size,2] in pixels."""
    idn = _identity(spec.seed[0], PROFILES[spec.layout].identity_space, spec.subject, "faces" in spec.gap)
    px = size / REFERENCE_SIZE
    aus = {k: v * px for k, v in spec.events[0].aus.items()}
    return aus_lib.expression_field(aus, face_lib.landmarks(idn, size), face_lib.face_scale(idn, size), size)
