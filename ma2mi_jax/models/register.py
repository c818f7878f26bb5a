"""Pair registration: x_{t+k} aligned to x_t (head pose and lighting) before the action encoder.

The action encoder sees x_{t+k} - x_t, and in unaligned video that difference is dominated by head
motion and lighting drift, not by the expression (docs/decisions.md#pair-registration). Registration
fits, by Gauss-Newton (forward-additive Lucas-Kanade) on the smoothed grey frames, a similarity
transform (translation, rotation, zoom about the frame centre) and a lighting field (gain with a
linear gradient) that map x_{t+k} onto x_t:

    x_t(u) ~ (a + b_x u_x + b_y u_y) * x_{t+k}(W(u)),   W(u) = (1 + s) R(theta) u + t

and returns the two frames resampled halfway, x_t at u - d(u)/2 and x_{t+k} at u + d(u)/2 with
d = W(u) - u, so that both carry the same bilinear smoothing and their difference no rigid edge;
the lighting field is applied to x_{t+k}. A non-rigid expression change is what no similarity
transform explains, so it stays in the difference. Nothing here is learnt or differentiated.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ma2mi_jax import resample

BORDER = 4  # pixels at each edge left out of the fit (edge-repeated samples there)
SMOOTH = (1.0, 4.0, 6.0, 4.0, 1.0)  # binomial kernel of the grey frames the fit reads


def _smooth_grey(frames: jax.Array) -> jax.Array:
    """Frames [B,H,W,C] -> grey [B,H,W] smoothed by the separable binomial kernel, edges repeated."""
    g = jnp.mean(frames.astype(jnp.float32), axis=-1)  # [B,H,W]
    k = jnp.asarray(SMOOTH, jnp.float32) / sum(SMOOTH)
    r = len(SMOOTH) // 2
    g = jnp.pad(g, ((0, 0), (r, r), (0, 0)), mode="edge")
    g = sum(k[i] * g[:, i : i + g.shape[1] - 2 * r] for i in range(len(SMOOTH)))
    g = jnp.pad(g, ((0, 0), (0, 0), (r, r)), mode="edge")
    return sum(k[i] * g[:, :, i : i + g.shape[2] - 2 * r] for i in range(len(SMOOTH)))


def _warp_positions(p: jax.Array, ux: jax.Array, uy: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Similarity p [B,4] = (t_x, t_y, theta, s) at centred coords [H,W] -> d_x, d_y [B,H,W]."""
    tx, ty, th, s = (p[:, i, None, None] for i in range(4))
    cos, sin = jnp.cos(th), jnp.sin(th)
    wx = (1 + s) * (cos * ux - sin * uy) + tx
    wy = (1 + s) * (sin * ux + cos * uy) + ty
    return wx - ux, wy - uy


def fit_similarity(frame0: jax.Array, frame1: jax.Array, iterations: int) -> tuple[jax.Array, jax.Array]:
    """Frames [B,H,W,C] -> similarity p [B,4], lighting q [B,3] = (a, b_x, b_y) mapping frame1 onto frame0."""
    b, h, w, _ = frame0.shape
    g0, g1 = _smooth_grey(frame0), _smooth_grey(frame1)  # [B,H,W]
    # Gradients of g1 (central differences), sampled with it at the warped positions.
    gx = jnp.gradient(g1, axis=2)
    gy = jnp.gradient(g1, axis=1)
    stack = jnp.stack([g1, gx, gy], axis=-1)  # [B,H,W,3]
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    uy, ux = jnp.mgrid[0:h, 0:w].astype(jnp.float32)
    ux, uy = ux - cx, uy - cy  # [H,W], centred
    inside = jnp.zeros((h, w), jnp.float32).at[BORDER : h - BORDER, BORDER : w - BORDER].set(1.0)
    nx, ny = ux / w, uy / h  # lighting gradient coordinates, [-0.5, 0.5]

    def step(_, state):
        p, q = state  # [B,4], [B,3]
        dx, dy = _warp_positions(p, ux, uy)
        samp = resample.bilinear(stack, ux + dx + cx, uy + dy + cy)  # [B,H,W,3]
        i1, i1x, i1y = samp[..., 0], samp[..., 1], samp[..., 2]
        light = q[:, 0, None, None] + q[:, 1, None, None] * nx + q[:, 2, None, None] * ny  # [B,H,W]
        resid = light * i1 - g0  # [B,H,W]
        th, s = p[:, 2, None, None], p[:, 3, None, None]
        cos, sin = jnp.cos(th), jnp.sin(th)
        # d W / d theta and d W / d s at u.
        dwx_th, dwy_th = (1 + s) * (-sin * ux - cos * uy), (1 + s) * (cos * ux - sin * uy)
        dwx_s, dwy_s = cos * ux - sin * uy, sin * ux + cos * uy
        jac = jnp.stack(
            [
                light * i1x,
                light * i1y,
                light * (i1x * dwx_th + i1y * dwy_th),
                light * (i1x * dwx_s + i1y * dwy_s),
                i1,
                i1 * nx,
                i1 * ny,
            ],
            axis=-1,
        )  # [B,H,W,7]
        jac = jac * inside[..., None]
        jtj = jnp.einsum("bhwi,bhwj->bij", jac, jac) + 1e-6 * jnp.eye(7)  # [B,7,7]
        jtr = jnp.einsum("bhwi,bhw->bi", jac, resid * inside)  # [B,7]
        delta = jnp.linalg.solve(jtj, -jtr[..., None])[..., 0]  # [B,7]
        return p + delta[:, :4], q + delta[:, 4:]

    p0 = jnp.zeros((b, 4), jnp.float32)
    q0 = jnp.tile(jnp.asarray([[1.0, 0.0, 0.0]], jnp.float32), (b, 1))
    return jax.lax.fori_loop(0, iterations, step, (p0, q0))


def register_pair(frame0: jax.Array, frame1: jax.Array, iterations: int) -> tuple[jax.Array, jax.Array]:
    """Frames [B,H,W,C] in [0,255] -> (x_t, x_{t+k}) f32 [B,H,W,C], resampled halfway to one pose, light."""
    frame0 = jax.lax.stop_gradient(frame0.astype(jnp.float32))
    frame1 = jax.lax.stop_gradient(frame1.astype(jnp.float32))
    _, h, w, _ = frame0.shape
    p, q = fit_similarity(frame0, frame1, iterations)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    uy, ux = jnp.mgrid[0:h, 0:w].astype(jnp.float32)
    ux, uy = ux - cx, uy - cy
    dx, dy = _warp_positions(p, ux, uy)  # [B,H,W]
    half = resample.round_positions
    out0 = resample.bilinear(frame0, half(ux - dx / 2 + cx), half(uy - dy / 2 + cy))
    out1 = resample.bilinear(frame1, half(ux + dx / 2 + cx), half(uy + dy / 2 + cy))
    light = q[:, 0, None, None] + q[:, 1, None, None] * (ux / w) + q[:, 2, None, None] * (uy / h)
    return out0, out1 * light[..., None]  # [B,H,W,C] each


def registered_motion(frame0: jax.Array, frame1: jax.Array, iterations: int) -> jax.Array:
    """Frames [B,H,W,C] in [0,255] -> x_{t+k} - x_t after `register_pair`, f32[B,H,W,C].

    What the action encoder reads (before normalisation) when the model registers the pair itself.
    """
    r0, r1 = register_pair(frame0, frame1, iterations)  # [B,H,W,C] each
    return r1 - r0
