"""torchvision's stem max-pool (3x3, stride 2, padding 1) as a selection among nine strided slices.

Faster forward and backward on XLA:CPU than reduce_window and its select-and-scatter gradient,
with the same values and gradient, ties included (docs/decisions.md#max-pool-by-slices-on-the-cpu).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _pool_slices(x: jnp.ndarray) -> list[jnp.ndarray]:
    """The nine strided slices [B,Ho,Wo,C] of x [B,H,W,C] padded by -inf, window tap t = 3 * row + col."""
    _, h, w, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)  # [B,H+2,W+2,C]
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    return [padded[:, i : i + 2 * ho : 2, j : j + 2 * wo : 2] for i in range(3) for j in range(3)]


def _select_first_max(slices: list[jnp.ndarray]) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(max-pool output, tap of the first maximum in row-major window order int[B,Ho,Wo,C])."""
    first_max = jax.lax.stop_gradient(jnp.argmax(jnp.stack(slices), axis=0))  # [B,Ho,Wo,C] in 0..8
    out = jnp.zeros_like(slices[0])
    for i, window in enumerate(slices):
        out = jnp.where(first_max == i, window, out)
    return out, first_max


def _next(a: jnp.ndarray, axis: int) -> jnp.ndarray:
    """a shifted by one place towards the start along `axis` (a[i+1]), zero past the end."""
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, 1)
    return jnp.pad(jax.lax.slice_in_dim(a, 1, a.shape[axis], axis=axis), pad)


def _max_pool_even_fwd(x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(output, first-maximum taps): the taps are what the phase-wise gradient needs."""
    return _select_first_max(_pool_slices(x))


@jax.custom_vjp
def _max_pool_even(x: jnp.ndarray) -> jnp.ndarray:
    """`max_pool_by_slices` for even H and W, with the gradient assembled per stride-2 phase."""
    return _max_pool_even_fwd(x)[0]


def _max_pool_even_bwd(first_max: jnp.ndarray, g: jnp.ndarray) -> tuple[jnp.ndarray]:
    """Input row 2a is window a's middle row; row 2a+1 is window a's last and window a+1's first
    (columns alike), so each input place sums at most four windows' gradients, in window order."""
    G = [jnp.where(first_max == t, g, jnp.zeros_like(g)) for t in range(9)]  # [B,Ho,Wo,C] each
    ee = G[4]  # rows 2a, columns 2b
    eo = G[5] + _next(G[3], 2)  # rows 2a, columns 2b+1
    oe = G[7] + _next(G[1], 1)  # rows 2a+1, columns 2b
    oo = G[8] + _next(G[6], 2) + _next(G[2], 1) + _next(_next(G[0], 1), 2)
    b, ho, wo, c = g.shape
    dx = jnp.stack([jnp.stack([ee, eo], 3), jnp.stack([oe, oo], 3)], 2)  # [B,Ho,2,Wo,2,C]
    return (dx.reshape(b, 2 * ho, 2 * wo, c),)


_max_pool_even.defvjp(_max_pool_even_fwd, _max_pool_even_bwd)


def max_pool_by_slices(x: jnp.ndarray) -> jnp.ndarray:
    """The same max-pool as a selection among the window's nine strided slices.

    Same values and the same gradient as `max_pool_reduce_window`, ties included (the gradient goes
    to the first maximum in row-major window order, as XLA's select-and-scatter does), and faster
    forward + backward on XLA:CPU (docs/decisions.md#max-pool-by-slices-on-the-cpu). For even sides
    the gradient is assembled per stride-2 phase (at most four windows reach an input place) instead
    of as nine padded slices (docs/decisions.md#phase-wise-max-pool-gradient).
    """
    _, h, w, _ = x.shape
    if h % 2 == 0 and w % 2 == 0:
        return _max_pool_even(x)
    return _select_first_max(_pool_slices(x))[0]  # [B,Ho,Wo,C], gradient by autodiff
