"""Bilinear sampling on a 1/32-pixel grid, shared by the fine-tuning augmentation and L_equ.

Source positions are rounded to 1/SUBPIXEL pixel (cv2's INTER_BITS = 5), so the interpolation
weights are multiples of 1/32 and their products multiples of 1/1024. On integer-valued images
(uint8 frames) every product and sum is then exact in float32: the samples are the same bits in any
compiled program (fused or not, vmapped or not) and in a float64 evaluation. That matters because
what is sampled feeds ReLUs and max-pools, whose gradients jump when an input moves by one ulp
(docs/decisions.md#exact-resampling-grid).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SUBPIXEL = 32.0  # source positions are multiples of 1/SUBPIXEL pixel


def round_positions(p: jax.Array) -> jax.Array:
    """Source positions (pixel units, any shape) rounded half up to the 1/SUBPIXEL grid."""
    return jnp.floor(p * SUBPIXEL + 0.5) / SUBPIXEL


def bilinear(image: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """Samples of image [B,H,W,C] at source positions x, y f32[B,h,w] (pixels), edges repeated.

    -> [B,h,w,C] in float32 (or the image's wider float type). One gather per sample: the image
    padded by its edge holds, at every position, its 2x2 neighbourhood in 4C channels; a position
    clamped to [-1, size-1] then reads the repeated edge wherever it falls outside. Positions should
    be on the 1/SUBPIXEL grid (`round_positions`) for the exactness above.
    """
    b, h, w, c = image.shape
    out_shape = x.shape[1:]
    x0, y0 = jnp.floor(x), jnp.floor(y)
    wx, wy = (x - x0)[..., None], (y - y0)[..., None]  # [B,h,w,1]
    padded = jnp.pad(image, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")  # [B,H+2,W+2,C]
    quad = jnp.concatenate(
        [padded[:, :-1, :-1], padded[:, :-1, 1:], padded[:, 1:, :-1], padded[:, 1:, 1:]], axis=-1
    )  # [B,H+1,W+1,4C]: top-left, top-right, bottom-left, bottom-right
    xi = jnp.clip(x0, -1, w - 1).astype(jnp.int32) + 1
    yi = jnp.clip(y0, -1, h - 1).astype(jnp.int32) + 1
    cells = (h + 1) * (w + 1)  # rows of one image's table
    idx = (yi * (w + 1) + xi).reshape(b, -1) + cells * jnp.arange(b, dtype=jnp.int32)[:, None]  # [B,h*w]
    # One gather from the whole batch's table, the same values as a gather batched over B (XLA's
    # operand batching dimension), and faster where the warp runs alone
    # (docs/decisions.md#flat-gather-in-bilinear-sampling).
    got = quad.reshape(b * cells, 4 * c)[idx]  # [B,h*w,4C]
    dtype = jnp.promote_types(image.dtype, jnp.float32)
    got = got.reshape(b, *out_shape, 4, c).astype(dtype)
    top = got[..., 0, :] * (1 - wx) + got[..., 1, :] * wx
    bottom = got[..., 2, :] * (1 - wx) + got[..., 3, :] * wx
    return top * (1 - wy) + bottom * wy  # [B,h,w,C]
