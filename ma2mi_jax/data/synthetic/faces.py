"""Procedural faces for the synthetic data sets: identity parameters, landmarks and rendering.

A face lives in *face coordinates*: (fx, fy) in units of the face's half-width and half-height,
origin at the face centre, y pointing down. `Identity` holds one person's shape and colours;
`landmarks` places the named points that action units are anchored to (in pixels of a square
image of a given size) and `render_face` draws the face in float RGB with numpy masks at a
supersampled resolution, then shrinks it with area interpolation (which antialiases every edge).

Sides: a landmark name ending in `_l` is on the image's left (the subject's right), `_r` on the
image's right (the subject's left).
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

# Rendering happens at least at this many pixels per side, then is area-downsampled.
MIN_RENDER_SIDE = 256

SKIN_LIGHT = np.array([238.0, 204.0, 178.0])
SKIN_DARK = np.array([112.0, 74.0, 54.0])
HAIR_COLOURS = np.array(
    [[28, 22, 20], [62, 40, 26], [110, 72, 40], [176, 138, 84], [140, 60, 30], [150, 148, 145]],
    dtype=np.float64,
)
IRIS_COLOURS = np.array([[70, 45, 25], [40, 28, 20], [70, 110, 150], [80, 110, 70]], dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class Identity:
    """One synthetic person: face geometry (face units) and colours (RGB 0..255)."""

    cx: float  # face centre, fraction of the image side
    cy: float
    half_w: float  # face half-width, fraction of the image side
    half_h: float  # face half-height, fraction of the image side
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    iris: tuple[float, float, float]
    lips: tuple[float, float, float]
    background: tuple[float, float, float]
    hairline: float  # fy of the fringe's lower edge (-1 = no fringe on the face)
    hair_volume: float  # extra hair above the skull, face units
    eye_sep: float  # |fx| of the eye centres
    eye_y: float
    eye_w: float  # eye half-width, face-x units
    eye_h: float  # eye half-height, face-y units
    brow_gap: float  # brow height above the eye centre, face-y units
    brow_arch: float
    brow_thick: float  # face-y units
    nose_y: float
    nose_w: float
    mouth_y: float
    mouth_w: float  # half-width of the mouth, face-x units
    lip_upper: float  # lip thicknesses, face-y units
    lip_lower: float
    texture_seed: int
    # The skin model; the defaults are the in-domain look, `domain_gap` draws other values.
    shading: float = 0.22  # darkening towards the face's rim
    side_light: float = 0.08  # darkening across the face, from the image's left (negative: right)
    mottle: float = 0.0  # amplitude of a mid-frequency skin texture (0: none)
    mottle_grid: int = 0  # its cells per image side
    contour: float = 0.0  # depth of the shadow below the cheekbones
    blemishes: int = 0  # small dark spots on the skin


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw one person's identity parameters."""
    u = rng.uniform
    tone = u(0.0, 1.0)
    skin = (1 - tone) * SKIN_LIGHT + tone * SKIN_DARK + rng.normal(0, 6, 3)
    hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] + rng.normal(0, 8, 3)
    iris = IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))] + rng.normal(0, 8, 3)
    lips = skin * np.array([0.82, 0.55, 0.55]) + rng.normal(0, 5, 3)
    background = rng.uniform(40, 200) * np.ones(3) + rng.normal(0, 20, 3)

    def rgb(c: np.ndarray) -> tuple[float, float, float]:
        c = np.clip(c, 0, 255)
        return float(c[0]), float(c[1]), float(c[2])

    return Identity(
        cx=0.5 + u(-0.02, 0.02),
        cy=0.53 + u(-0.02, 0.02),
        half_w=u(0.32, 0.38),
        half_h=u(0.42, 0.47),
        skin=rgb(skin),
        hair=rgb(hair),
        iris=rgb(iris),
        lips=rgb(lips),
        background=rgb(background),
        hairline=u(-0.85, -0.55),
        hair_volume=u(0.04, 0.14),
        eye_sep=u(0.36, 0.44),
        eye_y=u(-0.22, -0.15),
        eye_w=u(0.17, 0.21),
        eye_h=u(0.055, 0.075),
        brow_gap=u(0.14, 0.19),
        brow_arch=u(0.02, 0.06),
        brow_thick=u(0.03, 0.05),
        nose_y=u(0.12, 0.2),
        nose_w=u(0.12, 0.17),
        mouth_y=u(0.44, 0.52),
        mouth_w=u(0.27, 0.35),
        lip_upper=u(0.03, 0.045),
        lip_lower=u(0.04, 0.06),
        texture_seed=int(rng.integers(2**31)),
    )


def _face_points(idn: Identity) -> dict[str, tuple[float, float]]:
    """Named points in face units."""
    ey, bg = idn.eye_y, idn.brow_gap
    s, w = idn.eye_sep, idn.eye_w
    pts: dict[str, tuple[float, float]] = {
        "forehead": (0.0, -0.72),
        "glabella": (0.0, ey - 0.05),
        "nose_tip": (0.0, idn.nose_y),
        "lip_upper": (0.0, idn.mouth_y - idn.lip_upper),
        "lip_lower": (0.0, idn.mouth_y + idn.lip_lower),
        "mouth": (0.0, idn.mouth_y),
        "chin": (0.0, 0.82),
    }
    for side, sign in (("l", -1.0), ("r", 1.0)):
        pts[f"eye_{side}"] = (sign * s, ey)
        pts[f"lid_upper_{side}"] = (sign * s, ey - idn.eye_h)
        pts[f"lid_lower_{side}"] = (sign * s, ey + idn.eye_h)
        pts[f"eye_outer_{side}"] = (sign * (s + w), ey)
        pts[f"brow_inner_{side}"] = (sign * (s - w * 0.95), ey - bg)
        pts[f"brow_mid_{side}"] = (sign * s, ey - bg - idn.brow_arch)
        pts[f"brow_outer_{side}"] = (sign * (s + w * 1.15), ey - bg + 0.01)
        pts[f"forehead_{side}"] = (sign * 0.35, -0.6)
        pts[f"cheek_{side}"] = (sign * (s + 0.05), idn.nose_y + 0.02)
        pts[f"nose_wing_{side}"] = (sign * idn.nose_w, idn.nose_y - 0.01)
        pts[f"mouth_corner_{side}"] = (sign * idn.mouth_w, idn.mouth_y)
        pts[f"jaw_{side}"] = (sign * 0.6, 0.6)
    return pts


def landmarks(idn: Identity, size: int) -> dict[str, np.ndarray]:
    """Named landmark positions, float64[2] (x, y) in pixels of a size x size image."""
    out = {}
    for name, (fx, fy) in _face_points(idn).items():
        out[name] = np.array([(idn.cx + fx * idn.half_w) * size, (idn.cy + fy * idn.half_h) * size])
    return out


def face_scale(idn: Identity, size: int) -> float:
    """Face half-width in pixels: the length unit that AU field widths are given in."""
    return idn.half_w * size


class _Canvas:
    """A supersampled float RGB canvas with face-unit -> pixel mapping and masked painting."""

    def __init__(self, idn: Identity, side: int):
        self.idn = idn
        self.side = side
        self.img = np.empty((side, side, 3), np.float32)  # [S,S,3]
        self.img[:] = idn.background
        yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) + 0.5  # [S,S] pixel centres
        # Face coordinates of every supersampled pixel.
        self.fx = (xx / side - idn.cx) / idn.half_w
        self.fy = (yy / side - idn.cy) / idn.half_h
        self.xx, self.yy = xx, yy

    def px(self, fx: float, fy: float) -> tuple[float, float]:
        """Face units -> supersampled pixel coordinates."""
        i = self.idn
        return (i.cx + fx * i.half_w) * self.side, (i.cy + fy * i.half_h) * self.side

    def paint(self, mask: np.ndarray, colour, alpha: float = 1.0) -> None:
        """Blend `colour` (RGB or [S,S,3]) where mask [S,S] in [0,1] is set (bounding box only)."""
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            return
        cols = np.flatnonzero(mask.any(axis=0))
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        colour = np.asarray(colour, np.float32)
        if colour.ndim == 3:
            colour = colour[box]
        m = (mask[box].astype(np.float32) * alpha)[..., None]  # [h,w,1]
        self.img[box] += m * (colour - self.img[box])

    def ellipse(self, fx: float, fy: float, rx: float, ry: float) -> np.ndarray:
        """Mask of an ellipse given in face units."""
        return ((self.fx - fx) / rx) ** 2 + ((self.fy - fy) / ry) ** 2 <= 1.0

    def polyline(self, pts_face: list[tuple[float, float]], thick_px: float) -> np.ndarray:
        """Mask of a thick polyline through face-unit points."""
        mask = np.zeros((self.side, self.side), np.uint8)
        pts = np.array([self.px(*p) for p in pts_face]) * 16.0
        cv2.polylines(mask, [pts.astype(np.int32)], False, 1, max(1, round(thick_px)), cv2.LINE_AA, 4)
        return mask.astype(np.float32)

    def polygon(self, pts_face: list[tuple[float, float]]) -> np.ndarray:
        """Mask of a filled polygon through face-unit points."""
        mask = np.zeros((self.side, self.side), np.uint8)
        pts = np.array([self.px(*p) for p in pts_face]) * 16.0
        cv2.fillPoly(mask, [pts.astype(np.int32)], 1, cv2.LINE_AA, 4)
        return mask.astype(np.float32)


def _texture(seed: int, side: int, grid: int, amp: float) -> np.ndarray:
    """Smooth multiplicative noise [S,S] around 1, fixed in image space for a given seed."""
    rng = np.random.default_rng(seed)
    small = rng.normal(0.0, amp, (grid, grid)).astype(np.float32)
    return 1.0 + cv2.resize(small, (side, side), interpolation=cv2.INTER_CUBIC)


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 12):
    """Points of an elliptic arc in face units, angles in degrees (0 = +x, 90 = +y)."""
    t = np.deg2rad(np.linspace(a0, a1, n))
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in t]


def render_face(idn: Identity, size: int, eyes_closed: float = 0.0) -> np.ndarray:
    """Draw the face as float32[size,size,3] RGB in [0,255]; eyes_closed in [0,1] lowers the lids."""
    ss = max(1, math.ceil(MIN_RENDER_SIDE / size))
    c = _Canvas(idn, size * ss)
    unit = c.side * idn.half_h  # pixels per face-y unit at the supersampled size
    _draw_head(c, idn)
    _draw_eyes_brows_and_folds(c, idn, eyes_closed, unit)
    _draw_nose_and_mouth(c, idn, unit)
    # Area downsampling antialiases every edge.
    img = cv2.resize(c.img, (size, size), interpolation=cv2.INTER_AREA)  # [size,size,3]
    return np.clip(img, 0.0, 255.0)


def _draw_head(c: _Canvas, idn: Identity) -> None:
    """Background, neck and shoulders, hair, ears, the shaded and textured face, blush, fringe."""
    skin = np.array(idn.skin, np.float32)
    hair = np.array(idn.hair, np.float32)
    # Background: a soft vertical gradient.
    grad = 0.85 + 0.3 * (c.yy / c.side)[..., None]
    c.img *= grad
    # Neck and shoulders.
    neck = (np.abs(c.fx) < 0.55) & (c.fy > 0.6)
    c.paint(neck, skin * 0.78)
    shoulders = c.ellipse(0.0, 2.05, 1.9, 0.95)
    c.paint(shoulders, np.array(idn.background) * 0.5 + hair * 0.2 + 30)
    # Hair behind the head.
    c.paint(c.ellipse(0.0, -0.12, 1.1 + idn.hair_volume, 0.95 + idn.hair_volume), hair)
    # Ears.
    for sgn in (-1.0, 1.0):
        c.paint(c.ellipse(sgn * 1.0, -0.05, 0.12, 0.2), skin * 0.9)
    # Face with shading (darker towards the rim) and skin texture.
    face = c.ellipse(0.0, 0.0, 1.0, 1.0).astype(np.float32)
    r2 = np.clip(c.fx**2 + c.fy**2, 0.0, 1.0)
    shade = (1.0 - idn.shading * r2**1.5) * (1.0 - idn.side_light * c.fx)  # light from the image's left
    tex = _texture(idn.texture_seed, c.side, 24, 0.035) * _texture(idn.texture_seed + 1, c.side, 96, 0.02)
    if idn.mottle > 0:
        tex = tex * _texture(idn.texture_seed + 3, c.side, idn.mottle_grid, idn.mottle)
    if idn.contour > 0:
        for sgn in (-1.0, 1.0):
            hollow = np.exp(-(((c.fx - sgn * 0.68) / 0.18) ** 2) - ((c.fy - 0.3) / 0.22) ** 2)
            shade = shade * (1.0 - idn.contour * hollow)
    c.paint(face, skin * (shade * tex)[..., None])
    if idn.blemishes > 0:
        _draw_blemishes(c, idn, face)
    # Cheek blush (soft).
    for sgn in (-1.0, 1.0):
        blush = np.exp(-(((c.fx - sgn * 0.45) / 0.2) ** 2) - ((c.fy - 0.22) / 0.12) ** 2)
        c.paint(blush * face, np.array(idn.lips), 0.18)
    # Fringe: hair covering the top of the face; its lower edge (the hairline) is an arc.
    fringe = c.ellipse(0.0, -1.0, 1.1, idn.hairline + 1.0) & (face > 0)
    c.paint(fringe, hair * _texture(idn.texture_seed + 2, c.side, 48, 0.08)[..., None])


def _draw_blemishes(c: _Canvas, idn: Identity, face: np.ndarray) -> None:
    """`idn.blemishes` small soft dark spots on the cheeks, forehead and chin (face mask [S,S])."""
    rng = np.random.default_rng(idn.texture_seed + 4)
    colour = np.array(idn.skin, np.float32) * np.array([0.72, 0.6, 0.6], np.float32)
    for _ in range(idn.blemishes):
        fx, fy = rng.uniform(-0.8, 0.8), rng.uniform(-0.6, 0.8)
        r = rng.uniform(0.015, 0.04)
        alpha = rng.uniform(0.4, 0.8)
        # The spot's box (2 radii), then a Gaussian inside it.
        (x0, y0), (x1, y1) = c.px(fx - 2 * r, fy - 2 * r), c.px(fx + 2 * r, fy + 2 * r)
        box = (slice(max(0, int(y0)), max(0, int(y1) + 1)), slice(max(0, int(x0)), max(0, int(x1) + 1)))
        spot = np.exp(-(((c.fx[box] - fx) / r) ** 2) - ((c.fy[box] - fy) / r) ** 2) * face[box]  # [h,w]
        c.img[box] += (alpha * spot)[..., None] * (colour - c.img[box])


def _draw_eyes_brows_and_folds(c: _Canvas, idn: Identity, eyes_closed: float, unit: float) -> None:
    """Nasolabial folds, eyes (lids lowered by `eyes_closed`) and brows."""
    skin = np.array(idn.skin, np.float32)
    hair = np.array(idn.hair, np.float32)
    # Nasolabial folds: faint darker curves from the nose wings past the mouth corners.
    for sgn in (-1.0, 1.0):
        fold = [
            (sgn * (idn.nose_w + 0.05), idn.nose_y + 0.02),
            (sgn * (idn.mouth_w + 0.07), idn.mouth_y - 0.05),
            (sgn * (idn.mouth_w + 0.1), idn.mouth_y + 0.1),
        ]
        c.paint(c.polyline(fold, 0.012 * unit), skin * 0.72, 0.6)
    # Eyes.
    for sgn in (-1.0, 1.0):
        _eye(c, sgn * idn.eye_sep, idn.eye_y, eyes_closed, unit)
    # Brows.
    for sgn in (-1.0, 1.0):
        s, w, ey, bg = idn.eye_sep, idn.eye_w, idn.eye_y, idn.brow_gap
        brow = [
            (sgn * (s - w * 0.95), ey - bg),
            (sgn * (s - w * 0.3), ey - bg - idn.brow_arch),
            (sgn * (s + w * 0.4), ey - bg - idn.brow_arch * 0.9),
            (sgn * (s + w * 1.15), ey - bg + 0.01),
        ]
        c.paint(c.polyline(brow, idn.brow_thick * unit), hair * 0.8)


def _draw_nose_and_mouth(c: _Canvas, idn: Identity, unit: float) -> None:
    """Nose ridge, base and nostrils; upper and lower lips and the line between them."""
    skin = np.array(idn.skin, np.float32)
    # Nose: a shaded ridge, the base curve and two nostrils.
    ridge = [(0.03, idn.eye_y + 0.05), (0.05, idn.nose_y - 0.06)]
    c.paint(c.polyline(ridge, 0.025 * unit), skin * 0.8, 0.35)
    base = _arc(0.0, idn.nose_y - 0.04, idn.nose_w, 0.06, 20, 160)
    c.paint(c.polyline(base, 0.012 * unit), skin * 0.55, 0.7)
    for sgn in (-1.0, 1.0):
        c.paint(c.ellipse(sgn * idn.nose_w * 0.45, idn.nose_y, 0.045, 0.022), skin * 0.3)
    # Mouth: upper and lower lip polygons and the dark line between them.
    mw, my = idn.mouth_w, idn.mouth_y
    upper = [
        (-mw, my),
        (-mw * 0.5, my - idn.lip_upper),
        (-mw * 0.12, my - idn.lip_upper * 1.2),
        (0.0, my - idn.lip_upper * 0.85),
        (mw * 0.12, my - idn.lip_upper * 1.2),
        (mw * 0.5, my - idn.lip_upper),
        (mw, my),
    ]
    lower = [(-mw, my), *_arc(0.0, my, mw, idn.lip_lower * 1.25, 180, 0, 14)[1:-1], (mw, my)]
    c.paint(c.polygon(upper), np.array(idn.lips) * 0.92)
    c.paint(c.polygon(lower), np.array(idn.lips))
    c.paint(c.polyline([(-mw, my), (0.0, my + 0.005), (mw, my)], 0.012 * unit), np.array(idn.lips) * 0.35)


def _eye(c: _Canvas, ex: float, ey: float, closed: float, unit: float) -> None:
    """Sclera, iris, pupil, then the upper lid lowered by `closed` (0 open .. 1 shut)."""
    idn = c.idn
    w, h = idn.eye_w, idn.eye_h
    sclera = c.ellipse(ex, ey, w, h)
    # The lid edge is an arc from the eye's top (open) to just below its middle (shut).
    lid_h = h * (1.0 - 1.9 * closed)  # signed sagitta of the lid arc
    dx = np.clip((c.fx - ex) / w, -1.0, 1.0)
    lid_y = ey - lid_h * np.sqrt(1.0 - dx**2)  # [S,S]
    visible = sclera & (c.fy >= lid_y)
    skin = np.array(idn.skin, np.float32)
    # Eye socket shadow and lid skin over the covered part.
    c.paint(c.ellipse(ex, ey - 0.02, w * 1.25, h * 2.2), skin * 0.85, 0.5)
    c.paint(sclera & ~visible, skin * 0.88)
    c.paint(visible, np.array([235.0, 232.0, 226.0]))
    iris = c.ellipse(ex, ey, h * 1.05 * idn.half_h / idn.half_w, h * 1.05) & visible
    c.paint(iris, np.array(idn.iris))
    pupil = c.ellipse(ex, ey, h * 0.45 * idn.half_h / idn.half_w, h * 0.45) & visible
    c.paint(pupil, np.array([15.0, 12.0, 12.0]))
    # Lashes along the lid edge.
    ys = np.linspace(-1.0, 1.0, 13)
    lid = [(ex + w * t, ey - lid_h * math.sqrt(max(0.0, 1.0 - t * t))) for t in ys]
    c.paint(c.polyline(lid, 0.018 * unit), np.array(idn.hair) * 0.5)
