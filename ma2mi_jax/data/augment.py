"""One random geometric transform per pair, applied identically to both frames (one cv2.warpAffine).

The transform is: horizontal flip, then rotation about the image centre, then a shift by up to
`crop_pad` pixels -- the same as padding the image by `crop_pad` on every side (edge pixels
repeated) and cropping a `size` x `size` window back out. Flip, rotation and shift are composed
into one affine matrix so the frame is resampled once; outside pixels repeat the edge.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np


@dataclasses.dataclass(frozen=True)
class Transform:
    """A sampled transform: flip, rotation in degrees (counter-clockwise) and shift in pixels."""

    flip: bool = False
    angle_deg: float = 0.0
    dx: int = 0  # content moves right by dx pixels
    dy: int = 0  # content moves down by dy pixels

    @property
    def is_identity(self) -> bool:
        """True when applying the transform returns the frame unchanged."""
        return not self.flip and self.angle_deg == 0.0 and self.dx == 0 and self.dy == 0


IDENTITY = Transform()


def pair_transform(
    rng: np.random.Generator, size: int, crop_pad: int, rotation_deg: float, flip: bool
) -> Transform:
    """Sample one transform for a `size` x `size` pair (shift <= crop_pad, |angle| <= rotation_deg)."""
    if crop_pad < 0 or rotation_deg < 0:
        raise ValueError(
            f"data.augment.crop_pad ({crop_pad}) and data.augment.rotation_deg ({rotation_deg}) must be >= 0"
        )
    if crop_pad >= size:
        raise ValueError(f"data.augment.crop_pad ({crop_pad}) must be smaller than the image size ({size})")
    do_flip = bool(rng.integers(2)) if flip else False
    angle = float(rng.uniform(-rotation_deg, rotation_deg)) if rotation_deg > 0 else 0.0
    if crop_pad > 0:
        dx, dy = (int(v) for v in rng.integers(-crop_pad, crop_pad + 1, size=2))
    else:
        dx = dy = 0
    return Transform(flip=do_flip, angle_deg=angle, dx=dx, dy=dy)


def matrix(transform: Transform, height: int, width: int) -> np.ndarray:
    """The 2x3 forward affine matrix (source -> destination pixel) of `transform` for an HxW frame."""
    m = np.eye(3, dtype=np.float64)
    if transform.flip:  # x -> (W - 1) - x
        m = np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ m
    if transform.angle_deg != 0.0:
        centre = ((width - 1) / 2.0, (height - 1) / 2.0)
        rot = np.vstack([cv2.getRotationMatrix2D(centre, transform.angle_deg, 1.0), [0.0, 0.0, 1.0]])
        m = rot @ m
    if transform.dx or transform.dy:
        m = np.array([[1.0, 0.0, transform.dx], [0.0, 1.0, transform.dy], [0.0, 0.0, 1.0]]) @ m
    return m[:2]


def apply_pair(transform: Transform, frame0: np.ndarray, frame1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply one `transform` to both uint8[H,W,3] frames in one 6-channel warp (same pixels as `apply`)."""
    if transform.is_identity:
        return frame0, frame1
    both = apply(transform, np.concatenate([frame0, frame1], axis=-1))  # uint8[H,W,6]
    return both[..., :3], both[..., 3:]


def apply(transform: Transform, frame: np.ndarray) -> np.ndarray:
    """Apply `transform` to uint8[H,W,C]; returns uint8[H,W,C] (the input itself for the identity)."""
    if transform.is_identity:
        return frame
    h, w = frame.shape[:2]
    if not transform.angle_deg and not transform.dx and not transform.dy:
        return np.ascontiguousarray(frame[:, ::-1])  # flip only: exact and cheaper than a warp
    return cv2.warpAffine(
        frame, matrix(transform, h, w), (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
