"""Facial action units as smooth displacement fields anchored to landmarks, emotions as AU sets.

An action unit (FACS) is a list of *pushes*: a landmark, a direction and a Gaussian width. Its
displacement field is the sum of the pushes' Gaussian bumps, normalised so that the field's
largest displacement is 1 pixel; an AU of intensity `a` moves skin by at most `a` pixels. A clip's
field at time t is `sum_j envelope_j(t) * field_j`, one term per expression event, with the
onset -> apex -> offset envelope below. Frames are produced by backward warping (`cv2.remap`) of
the neutral face, composed with the head's small rigid motion.

AU names: a number ("12"), optionally prefixed `L` or `R` for a one-sided action on the
subject's left or right ("R12"). The subject's right is the image's left.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

# One push: (landmark base name, dx, dy, width in face half-widths). A base name without side
# ("lip_upper") is central; with "{s}" it is applied on both sides, with dx mirrored (dx > 0
# means "away from the face's vertical midline").
_Push = tuple[str, float, float, float]

AU_PUSHES: dict[str, tuple[_Push, ...]] = {
    "1": (("brow_inner_{s}", 0.0, -1.0, 0.16), ("glabella", 0.0, -0.4, 0.14)),  # inner brow raiser
    "2": (("brow_outer_{s}", 0.0, -1.0, 0.16), ("brow_mid_{s}", 0.0, -0.6, 0.14)),  # outer brow raiser
    "4": (("brow_inner_{s}", -0.6, 0.8, 0.15), ("brow_mid_{s}", -0.2, 0.5, 0.14)),  # brow lowerer
    "5": (("lid_upper_{s}", 0.0, -0.8, 0.08),),  # upper lid raiser
    "6": (
        ("cheek_{s}", 0.0, -1.0, 0.2),
        ("lid_lower_{s}", 0.0, -0.5, 0.09),
        ("eye_outer_{s}", 0.2, -0.3, 0.1),
    ),
    "7": (("lid_lower_{s}", 0.0, -0.9, 0.08), ("lid_upper_{s}", 0.0, 0.3, 0.07)),  # lid tightener
    "9": (("nose_wing_{s}", 0.0, -1.0, 0.1), ("glabella", 0.0, 0.5, 0.12), ("lip_upper", 0.0, -0.4, 0.12)),
    "10": (("lip_upper", 0.0, -1.0, 0.12), ("nose_wing_{s}", 0.0, -0.35, 0.1)),  # upper lip raiser
    "12": (("mouth_corner_{s}", 0.6, -0.8, 0.13), ("cheek_{s}", 0.0, -0.3, 0.18)),  # lip corner puller
    "14": (("mouth_corner_{s}", -0.8, -0.1, 0.09),),  # dimpler
    "15": (("mouth_corner_{s}", -0.2, 1.0, 0.11),),  # lip corner depressor
    "16": (("lip_lower", 0.0, 0.9, 0.11),),  # lower lip depressor
    "17": (("chin", 0.0, -1.0, 0.2), ("lip_lower", 0.0, -0.6, 0.1)),  # chin raiser
    "20": (("mouth_corner_{s}", 1.0, 0.2, 0.12),),  # lip stretcher
    "23": (
        ("mouth_corner_{s}", -0.7, 0.0, 0.09),
        ("lip_upper", 0.0, 0.3, 0.07),
        ("lip_lower", 0.0, -0.3, 0.07),
    ),
    "24": (("lip_upper", 0.0, 0.7, 0.08), ("lip_lower", 0.0, -0.7, 0.08)),  # lip presser
    "25": (("lip_lower", 0.0, 0.7, 0.09),),  # lips part
    "26": (("lip_lower", 0.0, 1.0, 0.15), ("chin", 0.0, 1.0, 0.28)),  # jaw drop
}

# Emotion -> weighted variants, each a dict AU -> relative intensity (FACS / EMFACS prototypes,
# and the AU codings most frequent for each class in CASME II and SAMM).
EMOTION_AUS: dict[str, tuple[tuple[float, dict[str, float]], ...]] = {
    "happiness": (
        (0.45, {"6": 0.8, "12": 1.0}),
        (0.35, {"12": 1.0}),
        (0.1, {"R12": 1.0}),
        (0.1, {"6": 0.6, "12": 1.0, "25": 0.5}),
    ),
    "disgust": (
        (0.3, {"4": 0.8, "9": 1.0}),
        (0.2, {"9": 1.0, "10": 0.6}),
        (0.2, {"4": 1.0, "10": 0.8}),
        (0.15, {"4": 1.0, "7": 0.8, "10": 0.5}),
        (0.15, {"10": 1.0, "17": 0.5}),
    ),
    "repression": (
        (0.25, {"14": 1.0}),
        (0.2, {"15": 1.0}),
        (0.2, {"17": 1.0, "24": 0.6}),
        (0.2, {"15": 0.8, "17": 1.0}),
        (0.15, {"24": 1.0}),
    ),
    "surprise": (
        (0.55, {"1": 1.0, "2": 1.0}),
        (0.25, {"1": 1.0, "2": 1.0, "5": 0.6}),
        (0.2, {"1": 0.8, "2": 0.8, "25": 0.6, "26": 0.8}),
    ),
    "fear": (
        (0.6, {"1": 0.8, "2": 0.6, "4": 0.8, "5": 0.6, "20": 1.0}),
        (0.4, {"1": 0.8, "4": 1.0, "20": 1.0, "26": 0.5}),
    ),
    "sadness": ((0.6, {"1": 1.0, "4": 0.7, "15": 1.0}), (0.4, {"1": 0.8, "15": 0.8, "17": 1.0})),
    "anger": (
        (0.4, {"4": 1.0, "7": 0.8}),
        (0.3, {"4": 1.0, "5": 0.5, "7": 0.6, "23": 0.8}),
        (0.3, {"4": 1.0, "23": 0.6, "24": 0.8}),
    ),
    "contempt": ((0.5, {"R12": 0.7, "R14": 1.0}), (0.3, {"R14": 1.0}), (0.2, {"L14": 1.0})),
    "neutral": ((0.6, {}), (0.4, {"25": 0.4})),
}
# "Others" (CASME II / SAMM / MMEW): one or two AUs that do not make up a prototype.
OTHERS_POOL = ("1", "2", "4", "7", "R1", "L2", "10", "14", "17", "25", "R4", "L12", "5")


def sample_aus(emotion: str, rng: np.random.Generator) -> dict[str, float]:
    """Draw one AU combination for an emotion: AU name -> relative intensity (about 0.5..1.2)."""
    if emotion in ("others", "other"):
        k = 1 + int(rng.random() < 0.4)
        names = rng.choice(len(OTHERS_POOL), size=k, replace=False)
        aus = {OTHERS_POOL[i]: 1.0 for i in names}
    else:
        if emotion not in EMOTION_AUS:
            raise KeyError(f"no AU table for emotion {emotion!r}; known: {sorted(EMOTION_AUS)} and others")
        variants = EMOTION_AUS[emotion]
        p = np.array([w for w, _ in variants])
        aus = dict(variants[rng.choice(len(variants), p=p / p.sum())][1])
    return {au: w * float(rng.uniform(0.75, 1.2)) for au, w in aus.items()}


def au_code(aus: dict[str, float]) -> str:
    """FACS code string of an AU set, e.g. "6+12" (sorted by AU number)."""
    if not aus:
        return ""
    return "+".join(sorted(aus, key=lambda a: (int(a.lstrip("LR")), a)))


def _au_sides(au: str) -> tuple[str, tuple[str, ...]]:
    """Split "R12" into ("12", ("l",)): the image sides an AU acts on."""
    if au[0] in "LR":
        # Subject's right = image left.
        return au[1:], (("l",) if au[0] == "R" else ("r",))
    return au, ("l", "r")


def au_field(au: str, marks: dict[str, np.ndarray], scale: float, size: int) -> np.ndarray:
    """Displacement field float32[size,size,2] (dx, dy) of one AU, peak magnitude 1 pixel.

    `marks` are landmark pixel positions, `scale` the face half-width in pixels.
    """
    base, sides = _au_sides(au)
    if base not in AU_PUSHES:
        raise KeyError(f"unknown action unit {au!r}; known: {sorted(AU_PUSHES, key=int)}")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)  # [H,W]
    field = np.zeros((size, size, 2), np.float32)
    for name, dx, dy, width in AU_PUSHES[base]:
        targets = (
            [(name.format(s=s), -1.0 if s == "l" else 1.0) for s in sides] if "{s}" in name else [(name, 0.0)]
        )
        for lm, outward in targets:
            px, py = marks[lm]
            sigma = width * scale
            bump = np.exp(-((xx - px) ** 2 + (yy - py) ** 2) / (2.0 * sigma**2))  # [H,W]
            field[..., 0] += bump * (dx * outward if "{s}" in name else dx)
            field[..., 1] += bump * dy
    peak = float(np.sqrt((field**2).sum(-1)).max())
    return field / max(peak, 1e-6)


def expression_field(
    aus: dict[str, float], marks: dict[str, np.ndarray], scale: float, size: int
) -> np.ndarray:
    """Apex field float32[size,size,2] of an AU set; each AU's intensity is its peak in pixels."""
    field = np.zeros((size, size, 2), np.float32)
    for au, a in aus.items():
        field += a * au_field(au, marks, scale, size)
    return field


def envelope(t: np.ndarray, onset: float, apex: float, offset: float) -> np.ndarray:
    """Intensity in [0,1] over frame indices t: raised-cosine rise onset->apex, fall apex->offset."""
    t = np.asarray(t, np.float64)
    rise = 0.5 - 0.5 * np.cos(math.pi * np.clip((t - onset) / max(apex - onset, 1e-6), 0.0, 1.0))
    fall = 0.5 + 0.5 * np.cos(math.pi * np.clip((t - apex) / max(offset - apex, 1e-6), 0.0, 1.0))
    return np.where(t <= apex, rise, fall)


@dataclasses.dataclass(frozen=True)
class Event:
    """One expression in a clip: AU intensities (pixels at apex) and its frame indices."""

    emotion: str
    aus: dict[str, float]
    onset: int
    apex: int
    offset: int


def rigid_map(size: int, shift: tuple[float, float], angle_deg: float, zoom: float) -> np.ndarray:
    """Source coordinates float32[H,W,2] of a rotation/zoom about the centre plus a shift (pixels)."""
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    a = math.radians(angle_deg)
    cos, sin = math.cos(a) / zoom, math.sin(a) / zoom
    x0, y0 = xx - c - shift[0], yy - c - shift[1]
    # Inverse of the forward motion: rotate by -angle, unzoom.
    sx = cos * x0 + sin * y0 + c
    sy = -sin * x0 + cos * y0 + c
    return np.stack([sx, sy], -1).astype(np.float32)


def warp(image: np.ndarray, source: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Frame float32[H,W,3]: output pixel p shows image at q - field(q), q = source(p).

    `source` float32[H,W,2] is the rigid (head) map, `field` float32[H,W,2] the AU displacement
    in face coordinates (a forward displacement; backward-warped to first order).
    """
    # Field at the rigidly mapped positions, then subtract it (backward warp).
    f = cv2.remap(field, source[..., 0], source[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    mx, my = source[..., 0] - f[..., 0], source[..., 1] - f[..., 1]
    return cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
