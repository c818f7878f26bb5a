"""The domain-gap variant of the macro set: in-the-wild looks and 25 fps timing, one factor at a time.

Real macro releases (DFEW, FERV39K) are compressed, low-resolution movie and web frames of people
in the wild at 25 fps; the micro releases (CASME II, SAMM) are clean lab recordings at 200 fps.
The in-domain benchmark draws both from one renderer. Each factor here moves the macro set
(layout `dfew`, nothing else) towards the real releases in one respect:

- `faces`: another family of faces (proportions, skin tones, hair and background palette) with
  another skin model (mottled texture at another scale, blemishes, stronger shading, contouring);
- `resolution`: captured at a fraction of the output side, upsampled back and blurred;
- `compression`: heavy JPEG per clip, with chroma halved and restored first;
- `lighting`: white balance, gamma and contrast per clip, a strong directional light, vignetting
  and blotchy colour noise;
- `timing`: expressions rise in 1-3 frames and fall in 2-6, as at 25 fps against 200 fps.

Every range is in `GapConstants` (`CONSTANTS`). The gap's draws come from streams of their own,
`[*clip seed, STREAM, 0]` (the look of a clip) and `[*clip seed, STREAM, 1]` (its timing); the
colour noise of a frame is drawn from the frame's stream after its sensor noise. The existing
streams thus draw what they always drew: without a factor the bytes are the in-domain
benchmark's, and a factor's draws do not depend on which other factors are on. A clip carries
its factors (`ClipSpec.gap`, set by `apply`), and `rendering.render_clip` renders them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

import cv2
import numpy as np

from ma2mi_jax import errors
from ma2mi_jax.data.synthetic import faces as face_lib
from ma2mi_jax.data.synthetic.action_units import Event
from ma2mi_jax.data.synthetic.knobs import REFERENCE_SIZE
from ma2mi_jax.data.synthetic.layouts import PROFILES, ClipSpec

FACTORS = ("faces", "resolution", "compression", "lighting", "timing")
ALL = "all"
STREAM = 6151  # the SeedSequence child that holds the gap's draws

Range = tuple[float, float]


@dataclasses.dataclass(frozen=True)
class GapConstants:
    """The ranges of every domain-gap factor; each range is drawn uniformly per person or per clip."""

    # faces: identity distribution (face units as in faces.Identity; the image side for cx..half_w).
    skin_light: tuple[float, float, float] = (250.0, 214.0, 198.0)  # pinker light end than the lab's
    skin_dark: tuple[float, float, float] = (84.0, 56.0, 42.0)  # deeper dark end
    skin_olive: Range = (0.0, 16.0)  # length of a yellow-olive shift of the skin, grey levels
    olive_axis: tuple[float, float, float] = (0.0, 0.3, -0.6)  # RGB direction of that shift
    skin_spread: float = 6.0  # std of each channel around the tone
    lips: tuple[float, float, float] = (0.86, 0.5, 0.56)  # lip colour / skin colour
    colour_spread: float = 8.0  # std of each channel of the hair, iris and lips around their colour
    hair_colours: tuple[tuple[float, float, float], ...] = (
        (12.0, 10.0, 14.0),  # blue-black
        (208.0, 176.0, 118.0),  # blond
        (224.0, 214.0, 196.0),  # platinum
        (122.0, 36.0, 22.0),  # auburn
        (92.0, 58.0, 122.0),  # dyed violet
        (70.0, 52.0, 40.0),  # brown
    )
    background: Range = (10.0, 245.0)  # each channel alone: coloured scenes, not lab greys
    centre_x: Range = (0.45, 0.55)
    centre_y: Range = (0.49, 0.57)
    half_w: Range = (0.27, 0.41)
    aspect: Range = (1.05, 1.5)  # half_h / half_w
    max_half_h: float = 0.5
    hairline: Range = (-0.95, -0.6)
    hair_volume: Range = (0.0, 0.25)
    eye_sep: Range = (0.32, 0.47)
    eye_y: Range = (-0.26, -0.12)
    eye_w: Range = (0.15, 0.23)
    eye_h: Range = (0.045, 0.085)
    brow_gap: Range = (0.12, 0.22)
    brow_arch: Range = (0.0, 0.09)
    brow_thick: Range = (0.02, 0.065)
    nose_y: Range = (0.1, 0.24)
    nose_w: Range = (0.1, 0.2)
    mouth_y: Range = (0.4, 0.56)
    mouth_w: Range = (0.22, 0.38)
    lip_upper: Range = (0.02, 0.05)
    lip_lower: Range = (0.03, 0.07)
    # faces: skin model (the lab's: shading 0.22, side light 0.08, no mottle, contour or blemishes).
    shading: Range = (0.3, 0.5)
    side_light: Range = (0.12, 0.3)  # either side
    mottle: Range = (0.025, 0.05)
    mottle_grid: tuple[int, int] = (36, 56)  # cells per image side (the lab's textures: 24 and 96)
    contour: Range = (0.1, 0.25)
    blemishes: tuple[int, int] = (4, 14)
    # resolution: capture side / output side, blur std in pixels at 64x64 after upsampling.
    capture_scale: Range = (0.4, 0.7)
    min_capture: int = 12
    blur: Range = (0.3, 1.0)
    upsample: tuple[int, ...] = (cv2.INTER_LINEAR, cv2.INTER_CUBIC)  # one per clip
    # compression: JPEG quality per clip; chroma is halved and restored before encoding.
    jpeg_quality: tuple[int, int] = (25, 60)
    chroma_factor: int = 2
    # lighting: white balance (red/blue gains 1 +- temperature, green gain 1 + tint), tone curve.
    temperature: Range = (-0.2, 0.2)
    tint: Range = (-0.06, 0.06)
    gamma: Range = (0.7, 1.4)
    contrast: Range = (0.7, 1.3)  # around mid grey
    directional: Range = (0.25, 0.55)  # relative brightness change from the image's centre to its edge
    vignette: Range = (0.15, 0.45)  # darkening at the corners
    colour_noise: Range = (2.0, 5.0)  # std per channel, grey levels, in blotches
    colour_noise_cell: int = 2  # blotch size in capture pixels
    # timing: frames from onset to apex and from apex to offset (inclusive ranges).
    rise: tuple[int, int] = (1, 3)
    fall: tuple[int, int] = (2, 6)


CONSTANTS = GapConstants()


@dataclasses.dataclass(frozen=True)
class Look:
    """The drawn in-the-wild look of one clip (every factor drawn; `factors` says which apply)."""

    factors: tuple[str, ...]
    capture_scale: float
    blur: float
    upsample: int
    jpeg_quality: int
    gains: tuple[float, float, float]  # white balance, RGB
    gamma: float
    contrast: float
    light_dir: float  # radians, 0 = brighter to the image's right
    directional: float
    vignette: float
    colour_noise: float

    def capture_size(self, size: int) -> int:
        """The side the clip is rendered at before `degrade` (`size` unless `resolution`)."""
        if "resolution" not in self.factors:
            return size
        return max(CONSTANTS.min_capture, round(size * self.capture_scale))


def parse(text: str | Iterable[str]) -> tuple[str, ...]:
    """Factor names from "faces,timing", "all" or an iterable, in FACTORS order; ConfigError if unknown."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    if ALL in names:
        return FACTORS
    unknown = [n for n in names if n not in FACTORS]
    if unknown:
        raise errors.ConfigError(
            f"unknown domain-gap factor {unknown[0]!r}; choose from {', '.join(FACTORS)} or {ALL}"
        )
    return tuple(f for f in FACTORS if f in names)


def check_layout(layout: str, factors: Iterable[str]) -> None:
    """ConfigError when domain-gap factors are asked of a layout that is not the macro set."""
    if tuple(factors) and (layout not in PROFILES or PROFILES[layout].kind != "macro"):
        macro = ", ".join(k for k, p in PROFILES.items() if p.kind == "macro")
        raise errors.ConfigError(
            f"the domain gap applies to the macro set only ({macro}), not to layout {layout!r}"
        )


def apply(spec: ClipSpec, factors: Iterable[str]) -> ClipSpec:
    """The clip with `factors` (validated) as its gap; `timing` also retimes its expressions."""
    names = parse(factors)
    check_layout(spec.layout, names)
    if not names:
        return spec
    events = _retime(spec) if "timing" in names else spec.events
    return dataclasses.replace(spec, events=events, gap=names)


def _retime(spec: ClipSpec) -> tuple[Event, ...]:
    """Each event rising in CONSTANTS.rise frames and falling in CONSTANTS.fall, from its onset."""
    c, last = CONSTANTS, spec.num_frames - 1
    rng = np.random.default_rng(np.random.SeedSequence([*spec.seed, STREAM, 1]))
    out = []
    for e in spec.events:
        rise = int(rng.integers(c.rise[0], c.rise[1] + 1))
        fall = int(rng.integers(c.fall[0], c.fall[1] + 1))
        onset = min(e.onset, last - rise)
        out.append(
            dataclasses.replace(e, onset=onset, apex=onset + rise, offset=min(last, onset + rise + fall))
        )
    return tuple(out)


def draw_look(spec: ClipSpec) -> Look:
    """Every factor's per-clip draw, in a fixed order from the clip's gap stream."""
    c = CONSTANTS
    rng = np.random.default_rng(np.random.SeedSequence([*spec.seed, STREAM, 0]))
    u = rng.uniform
    temperature, tint = u(*c.temperature), u(*c.tint)
    return Look(
        factors=spec.gap,
        capture_scale=u(*c.capture_scale),
        blur=u(*c.blur),
        upsample=int(c.upsample[rng.integers(len(c.upsample))]),
        jpeg_quality=int(rng.integers(c.jpeg_quality[0], c.jpeg_quality[1] + 1)),
        gains=(1.0 + temperature, 1.0 + tint, 1.0 - temperature),
        gamma=u(*c.gamma),
        contrast=u(*c.contrast),
        light_dir=u(0.0, 2 * math.pi),
        directional=u(*c.directional),
        vignette=u(*c.vignette),
        colour_noise=u(*c.colour_noise),
    )


def sample_identity(rng: np.random.Generator) -> face_lib.Identity:
    """Draw one person of the in-the-wild family (other proportions, colours and skin model)."""
    c = CONSTANTS
    u = rng.uniform
    tone = u(0.0, 1.0)
    skin = (1 - tone) * np.array(c.skin_light) + tone * np.array(c.skin_dark)
    skin = skin + u(*c.skin_olive) * np.array(c.olive_axis) + rng.normal(0, c.skin_spread, 3)
    hair = np.array(c.hair_colours[rng.integers(len(c.hair_colours))]) + rng.normal(0, c.colour_spread, 3)
    iris = face_lib.IRIS_COLOURS[rng.integers(len(face_lib.IRIS_COLOURS))] + rng.normal(0, c.colour_spread, 3)
    lips = skin * np.array(c.lips) + rng.normal(0, c.colour_spread, 3)
    background = rng.uniform(*c.background, 3)
    half_w = u(*c.half_w)

    def rgb(v: np.ndarray) -> tuple[float, float, float]:
        v = np.clip(v, 0, 255)
        return float(v[0]), float(v[1]), float(v[2])

    return face_lib.Identity(
        cx=u(*c.centre_x),
        cy=u(*c.centre_y),
        half_w=half_w,
        half_h=min(c.max_half_h, half_w * u(*c.aspect)),
        skin=rgb(skin),
        hair=rgb(hair),
        iris=rgb(iris),
        lips=rgb(lips),
        background=rgb(background),
        hairline=u(*c.hairline),
        hair_volume=u(*c.hair_volume),
        eye_sep=u(*c.eye_sep),
        eye_y=u(*c.eye_y),
        eye_w=u(*c.eye_w),
        eye_h=u(*c.eye_h),
        brow_gap=u(*c.brow_gap),
        brow_arch=u(*c.brow_arch),
        brow_thick=u(*c.brow_thick),
        nose_y=u(*c.nose_y),
        nose_w=u(*c.nose_w),
        mouth_y=u(*c.mouth_y),
        mouth_w=u(*c.mouth_w),
        lip_upper=u(*c.lip_upper),
        lip_lower=u(*c.lip_lower),
        texture_seed=int(rng.integers(2**31)),
        shading=u(*c.shading),
        side_light=u(*c.side_light) * (1.0 if rng.random() < 0.5 else -1.0),
        mottle=u(*c.mottle),
        mottle_grid=int(rng.integers(c.mottle_grid[0], c.mottle_grid[1] + 1)),
        contour=u(*c.contour),
        blemishes=int(rng.integers(c.blemishes[0], c.blemishes[1] + 1)),
    )


def light_map(look: Look, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """`lighting`: the clip's gain float32[H,W,3] (directional light, vignette, white balance) on
    image coordinates xx, yy float32[H,W] in [-0.5, 0.5)."""
    ramp = 2.0 * (math.cos(look.light_dir) * xx + math.sin(look.light_dir) * yy)  # [H,W], -1..1 edge to edge
    vignette = 1.0 - look.vignette * (xx**2 + yy**2) / 0.5  # [H,W], 1 - vignette at the corners
    gain = (np.float32(1.0) + np.float32(look.directional) * ramp) * vignette  # [H,W]
    return gain[..., None] * np.asarray(look.gains, np.float32)  # [H,W,3]


def tone_curve(look: Look) -> np.ndarray:
    """`lighting`: the clip's contrast and gamma as a lookup table uint8[256] for cv2.LUT."""
    x = np.arange(256, dtype=np.float64) / 255.0  # [256]
    x = np.clip(0.5 + look.contrast * (x - 0.5), 0.0, 1.0) ** look.gamma
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def colour_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """`lighting`: blotchy per-channel noise of std `sigma` on img float32[H,W,3], drawn from `rng`."""
    h, w = img.shape[:2]
    cell = CONSTANTS.colour_noise_cell
    small = rng.standard_normal((-(-h // cell), -(-w // cell), 3), dtype=np.float32)  # [h/cell,w/cell,3]
    blotches = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)  # [H,W,3]
    return img + blotches * np.float32(sigma)


def degrade(frame: np.ndarray, look: Look, size: int) -> np.ndarray:
    """`resolution` (upsample to `size`, blur) then `compression` (chroma, JPEG) of frame uint8[h,w,3]."""
    if "resolution" in look.factors:
        frame = cv2.resize(frame, (size, size), interpolation=look.upsample)  # [size,size,3]
        frame = cv2.GaussianBlur(frame, (0, 0), look.blur * size / REFERENCE_SIZE)
    if "compression" in look.factors:
        frame = _jpeg_round_trip(frame, look.jpeg_quality)
    return frame


def _jpeg_round_trip(frame: np.ndarray, quality: int) -> np.ndarray:
    """RGB uint8[H,W,3] with chroma down- and up-sampled, then JPEG-encoded at `quality` and decoded."""
    h, w = frame.shape[:2]
    f = CONSTANTS.chroma_factor
    ycc = cv2.cvtColor(frame, cv2.COLOR_RGB2YCrCb)  # [H,W,3]
    small = cv2.resize(ycc[..., 1:], (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    ycc[..., 1:] = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    bgr = cv2.cvtColor(cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
