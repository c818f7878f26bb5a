"""Convolutions on maps no larger than the kernel's reach, as one matrix product (fast on XLA:CPU).

When every output place sees every input place (stride 1, "same" padding, an input of at most
k//2 + 1 places per side: the 2x2 maps of a ResNet18's layer4 at 64 px, 1x1 at 32 px), a k x k
convolution is a dense layer over the flattened map: out[b, (p, o)] = sum_(q, c) x[b, (q, c)]
W[q - p + k//2, c, o]. XLA:CPU runs these small convolutions as generic convolutions, well below
the speed of the equivalent matrix product (docs/decisions.md#small-map-convolutions-on-the-cpu); the
weight matrix is gathered from the kernel, so parameters, initialisation and gradients are those of
the convolution.
Every other convolution is left to `lax.conv_general_dilated`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

NHWC = ("NHWC", "HWIO", "NHWC")


def _taps(size: int, kernel: int) -> np.ndarray:
    """int[size_in, size_out]: the kernel tap through which input place q reaches output place p."""
    q, p = np.arange(size)[:, None], np.arange(size)[None, :]
    return q - p + kernel // 2


def is_full_window(
    map_hw: Sequence[int],
    kernel_hw: Sequence[int],
    strides: Sequence[int],
    padding: Any,
    lhs_dilation: Sequence[int] | None,
    rhs_dilation: Sequence[int] | None,
) -> bool:
    """True when every output place of this 2-d convolution sees every input place through the kernel."""
    (h, w), (kh, kw) = map_hw, kernel_hw
    plain = (tuple(strides), tuple(lhs_dilation or (1, 1)), tuple(rhs_dilation or (1, 1))) == ((1, 1),) * 3
    same = not isinstance(padding, str) and tuple(map(tuple, padding)) == ((kh // 2,) * 2, (kw // 2,) * 2)
    return plain and same and kh % 2 == 1 and kw % 2 == 1 and h <= kh // 2 + 1 and w <= kw // 2 + 1


def dense_conv(x: jnp.ndarray, kernel: jnp.ndarray, precision: Any = None) -> jnp.ndarray:
    """The stride-1 "same" convolution of x [B,H,W,C] by kernel [kh,kw,C,O] as one product -> [B,H,W,O].

    Only valid where `is_full_window` holds (every tap index lands inside the kernel)."""
    b, h, w, c = x.shape
    kh, kw, _, o = kernel.shape
    ti, tj = _taps(h, kh), _taps(w, kw)  # [H_in,H_out], [W_in,W_out]
    wbig = kernel[ti[:, None, :, None], tj[None, :, None, :]]  # [H_in,W_in,H_out,W_out,C,O]
    wbig = wbig.transpose(0, 1, 4, 2, 3, 5).reshape(h * w * c, h * w * o)  # [(q,c), (p,o)]
    return jnp.matmul(x.reshape(b, h * w * c), wbig, precision=precision).reshape(b, h, w, o)


def conv_general_dilated(
    lhs: jnp.ndarray,
    rhs: jnp.ndarray,
    window_strides: Sequence[int],
    padding: Any,
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    precision: Any = None,
    **kwargs: Any,
) -> jnp.ndarray:
    """`lax.conv_general_dilated` (the hook of `nn.Conv`), as `dense_conv` where that is the same op."""
    if (
        lhs.ndim == 4
        and feature_group_count == 1
        and not kwargs
        and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
        == lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC)
        and is_full_window(lhs.shape[1:3], rhs.shape[:2], window_strides, padding, lhs_dilation, rhs_dilation)
    ):
        return dense_conv(lhs, rhs, precision)
    return lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        precision=precision,
        **kwargs,
    )
