"""The pair transform of `augment`, drawn on the host as a matrix and applied on the device.

Same family and ranges as `augment.pair_transform` + `augment.apply`: a horizontal flip, a rotation
about the image centre (degrees, counter-clockwise), an integer shift of up to `crop_pad` pixels,
composed into one affine map, resampled once with bilinear interpolation, edge pixels repeated
outside. Onset and apex of a pair get the same transform (one 6-channel warp).

The host draws each pair's transform (`sample_matrices`, numpy, seeded) as the inverse 2x3 matrix
(destination -> source pixel) with entries on a 2^-10 grid; the device computes source positions
with them, rounds them to 1/32 pixel as cv2 does, and interpolates with 1/32 weights. Every product
and sum is then exact in float32, so the warped pixels are the same bits in any compiled program
(vmapped over folds or not, fused or not), and within a grey level of cv2's warpAffine
(tests/test_device_augment.py; docs/decisions.md#exact-resampling-grid). A pair's registered
difference (fine-tuning's "motion", integers in fixed point) is warped at the same positions without
rounding, `augment_motion`. Drawing on the host and warping on the device keeps the decoded pairs on
the device and the host's cores free for the step (docs/decisions.md#fine-tuning-augmentation-on-the-device).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ma2mi_jax import resample


@dataclasses.dataclass(frozen=True)
class PairAugment:
    """Ranges of the random pair transform (`data.augment`): shift, rotation, flip."""

    crop_pad: int = 0
    rotation_deg: float = 0.0
    flip: bool = False

    @classmethod
    def from_config(cls, augment: Any) -> PairAugment:
        """From `data.augment` (crop_pad, rotation_deg, flip), checked by `finetune.validate`."""
        return cls(int(augment.crop_pad), float(augment.rotation_deg), bool(augment.flip))

    @property
    def is_identity(self) -> bool:
        """True when every sampled transform is the identity."""
        return self.crop_pad == 0 and self.rotation_deg == 0.0 and not self.flip


MATRIX_GRID = 2.0**10  # matrix entries are multiples of 1/MATRIX_GRID (exact products up to 2^13 px)


def sample_matrices(rng: np.random.Generator, count: int, aug: PairAugment, size: int) -> np.ndarray:
    """`count` random transforms of a `size` x `size` pair as inverse matrices float32[count,2,3].

    Drawn in the order flip, angle, shift, each only when its range is on.
    """
    flip = rng.integers(0, 2, count).astype(bool) if aug.flip else np.zeros(count, bool)
    if aug.rotation_deg > 0:
        angle = rng.uniform(-aug.rotation_deg, aug.rotation_deg, count)
    else:
        angle = np.zeros(count)
    if aug.crop_pad > 0:
        shift = rng.integers(-aug.crop_pad, aug.crop_pad + 1, (count, 2))
    else:
        shift = np.zeros((count, 2), np.int64)
    return inverse_matrices(flip, angle, shift, size)


def inverse_matrices(flip: np.ndarray, angle_deg: np.ndarray, shift: np.ndarray, size: int) -> np.ndarray:
    """Inverse (destination -> source) of shift . rotation . flip (`augment.matrix`), float32[n,2,3].

    flip bool[n], angle_deg f64[n] (counter-clockwise), shift int[n,2] (dx, dy); entries rounded to
    the 1/MATRIX_GRID grid.
    """
    c = (size - 1) / 2.0
    theta = np.deg2rad(np.asarray(angle_deg, np.float64))
    cos, sin = np.cos(theta), np.sin(theta)
    # Undo the shift, then rotate by -angle about the centre: p = R(-angle) (q - shift - c) + c.
    u0 = -np.asarray(shift, np.float64)[:, 0] - c
    v0 = -np.asarray(shift, np.float64)[:, 1] - c
    a, b, tx = cos, -sin, cos * u0 - sin * v0 + c
    d, e, ty = sin, cos, sin * u0 + cos * v0 + c
    # Undo the flip last: x -> (size - 1) - x.
    a, b, tx = np.where(flip, -a, a), np.where(flip, -b, b), np.where(flip, (size - 1) - tx, tx)
    m = np.stack([np.stack([a, b, tx], -1), np.stack([d, e, ty], -1)], 1)  # [n,2,3]
    return (np.round(m * MATRIX_GRID) / MATRIX_GRID).astype(np.float32)


def identity_matrices(count: int) -> np.ndarray:
    """`count` identity transforms, float32[count,2,3]."""
    return np.broadcast_to(np.asarray([[1, 0, 0], [0, 1, 0]], np.float32), (count, 2, 3)).copy()


def source_positions(inverse: jax.Array, height: int, width: int) -> tuple[jax.Array, jax.Array]:
    """Source (x, y) f32[B,H,W] of every destination pixel under inverse matrices f32[B,2,3], 1/32 grid."""
    ys, xs = jnp.meshgrid(
        jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32), indexing="ij"
    )  # [H,W]
    m = inverse[:, :, :, None, None]  # [B,2,3,1,1]
    x = m[:, 0, 0] * xs + m[:, 0, 1] * ys + m[:, 0, 2]  # exact: 2^-10 grid times integers
    y = m[:, 1, 0] * xs + m[:, 1, 1] * ys + m[:, 1, 2]
    return resample.round_positions(x), resample.round_positions(y)


def warp(frames: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """Bilinear samples of uint8[B,H,W,C] at source positions f32[B,H,W], edges repeated -> uint8[B,H,W,C]."""
    out = resample.bilinear(frames, x, y)  # [B,H,W,C] float32, exact
    return jnp.clip(jnp.floor(out + 0.5), 0, 255).astype(jnp.uint8)  # round half up, as cv2


def augment_frames(frames: jax.Array, inverse: jax.Array, aug: PairAugment) -> jax.Array:
    """Warp each row of uint8[B,H,W,C] (onset and apex stacked on C) by its inverse matrix f32[B,2,3]."""
    if aug.is_identity:
        return frames
    _, h, w, _ = frames.shape
    x, y = source_positions(inverse, h, w)
    return warp(frames, x, y)


def augment_motion(motion: jax.Array, inverse: jax.Array, aug: PairAugment) -> jax.Array:
    """Warp each row of a fixed-point difference int[B,H,W,C] like `augment_frames` -> f32, unrounded.

    Integer samples times 1/32 weights: the result is exact in float32, as the frames are.
    """
    if aug.is_identity:
        return motion.astype(jnp.float32)
    _, h, w, _ = motion.shape
    x, y = source_positions(inverse, h, w)
    return resample.bilinear(motion, x, y)  # f32[B,H,W,C]
