"""Losses of MA2MI as pure functions (docs/method.md): L_rec, L_dis, L_con, L_equ, classification CE.

Every loss computes in float32 whatever the model's compute dtype (in float64 when given float64, for
the gradient checks of tests/test_gradients.py). Feature maps are NHWC
[B,h,w,C]; "positions" are the h*w spatial indices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from ma2mi_jax import resample
from ma2mi_jax.precision import at_least_f32

# Guards the norm in cosine similarity (all-zero ReLU features give cos = 0, not NaN).
NORM_EPS = 1e-8
CON_FORMS = ("ce", "cos")
# L_equ's transforms have entries on this grid, so that the frames' source positions are exact.
THETA_GRID = 2.0**10


def l1_loss(pred: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """Mean absolute error over all elements (L_rec, Eq. 9)."""
    return jnp.mean(jnp.abs(at_least_f32(pred) - at_least_f32(target)))


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Mean softmax cross-entropy of logits [B,K] against integer labels [B]."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(at_least_f32(logits), labels))


def _unit_positions(P: jnp.ndarray) -> jnp.ndarray:
    """[B,h,w,C] -> L2-normalised per-position features [B,h*w,C] in float32."""
    B, h, w, C = P.shape
    p = at_least_f32(P).reshape(B, h * w, C)
    return p * jax.lax.rsqrt(jnp.maximum(jnp.sum(p * p, -1, keepdims=True), NORM_EPS**2))


def distinct_loss(P: jnp.ndarray) -> jnp.ndarray:
    """L_dis (Eq. 2): mean over i != j of cos(p_i, p_j), averaged over the batch; 0 for a 1x1 map."""
    p = _unit_positions(P)  # [B,N,C]
    N = p.shape[1]
    if N < 2:
        return jnp.zeros((), p.dtype)
    sim = jnp.einsum("bic,bjc->bij", p, p)  # [B,N,N]
    off_diag = jnp.sum(sim, axis=(1, 2)) - jnp.trace(sim, axis1=1, axis2=2)  # [B]
    return jnp.mean(off_diag / (N * (N - 1)))


def consistency_loss(P: jnp.ndarray, tau: float = 0.1, form: str = "ce") -> jnp.ndarray:
    """L_con (Eqs. 3-4) between each face a and b = the batch rolled by one; phi(i) = i.

    form "ce": mean_i -log softmax_j(cos(p^a_i, p^b_j) / tau)[i]; form "cos": mean_i 1 - cos(p^a_i, p^b_i).
    """
    if form not in CON_FORMS:
        raise ValueError(f"unknown position_loss.con_form {form!r}; valid: {list(CON_FORMS)}")
    a = _unit_positions(P)  # [B,N,C]
    b = jnp.roll(a, 1, axis=0)
    if form == "cos":
        return jnp.mean(1.0 - jnp.sum(a * b, -1))
    logits = jnp.einsum("bic,bjc->bij", a, b) / tau  # [B,N,N]
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.diagonal(logp, axis1=1, axis2=2))


def random_affine(rng: jax.Array, batch: int, max_rotation_deg: float, max_shift: float) -> jnp.ndarray:
    """Random rotation (+-max_rotation_deg) and shift (+-max_shift of the side) -> theta f32[B,2,3].

    theta maps output normalised coordinates (x, y in [-1, 1], pixel centres as align_corners=False)
    to the input coordinates sampled, as torch's affine_grid. Entries are rounded to 1/THETA_GRID.
    """
    k_rot, k_shift = jax.random.split(rng)
    angle = jnp.deg2rad(jax.random.uniform(k_rot, (batch,), jnp.float32, -max_rotation_deg, max_rotation_deg))
    # A side spans 2 in normalised coordinates, so a shift of s of the side is 2 s.
    shift = 2.0 * jax.random.uniform(k_shift, (batch, 2), jnp.float32, -max_shift, max_shift)
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    row0 = jnp.stack([cos, -sin, shift[:, 0]], axis=-1)
    row1 = jnp.stack([sin, cos, shift[:, 1]], axis=-1)
    theta = jnp.stack([row0, row1], axis=1)  # [B,2,3]
    return jnp.round(theta * THETA_GRID) / THETA_GRID


def warp(x: jnp.ndarray, theta: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Bilinear affine warp of x [B,H,W,C] by theta [B,2,3] -> (warped f32[B,H,W,C], inside f32[B,H,W,1]).

    Output pixels whose source point falls outside the frame are 0 and have inside = 0. Source points
    inside the frame but beyond the outermost pixel centres take the edge value. Source positions
    are rounded to 1/32 pixel (`resample`): on uint8-valued frames the warp is exact.
    """
    _, H, W, _ = x.shape
    xs = (2.0 * jnp.arange(W, dtype=jnp.float32) + 1.0) / W - 1.0  # [W] pixel centres
    ys = (2.0 * jnp.arange(H, dtype=jnp.float32) + 1.0) / H - 1.0  # [H]
    gx, gy = jnp.meshgrid(xs, ys)  # [H,W] each
    t = theta.astype(jnp.float32)[:, :, :, None, None]  # [B,2,3,1,1]
    src_x = t[:, 0, 0] * gx + t[:, 0, 1] * gy + t[:, 0, 2]  # [B,H,W] normalised source x
    src_y = t[:, 1, 0] * gx + t[:, 1, 1] * gy + t[:, 1, 2]
    u = resample.round_positions(((src_x + 1.0) * W - 1.0) / 2.0)  # [B,H,W] source column
    v = resample.round_positions(((src_y + 1.0) * H - 1.0) / 2.0)  # [B,H,W] source row
    inside = (u >= -0.5) & (u <= W - 0.5) & (v >= -0.5) & (v <= H - 0.5)  # [B,H,W]
    out = resample.bilinear(x, jnp.clip(u, 0.0, W - 1.0), jnp.clip(v, 0.0, H - 1.0))  # [B,H,W,C]
    mask = inside[..., None].astype(out.dtype)  # [B,H,W,1]
    return out * mask, mask


def equivariance_loss(
    position_map_fn: Callable[[jnp.ndarray], jnp.ndarray],
    frames: jnp.ndarray,
    rng: jax.Array,
    max_rotation_deg: float,
    max_shift: float,
    P: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """L_equ (Eq. 5): mean squared || F_p(T(x)) - T(F_p(x)) || over positions inside the frame.

    position_map_fn: frames [B,H,W,3] in [0,255] -> P [B,h,w,C]; P = position_map_fn(frames) may be
    passed to save a forward. T is one random rotation + shift per sample, applied to the frames at
    image resolution and to P at feature resolution (the same normalised theta).
    """
    theta = random_affine(rng, frames.shape[0], max_rotation_deg, max_shift)
    moved, _ = warp(frames, theta)  # [B,H,W,3], black outside
    P_of_moved = at_least_f32(position_map_fn(moved))  # F_p(T(x)) [B,h,w,C]
    if P is None:
        P = position_map_fn(frames)
    moved_P, inside = warp(P, theta)  # T(F_p(x)), inside [B,h,w,1]
    sq = jnp.square(P_of_moved - moved_P) * inside
    count = jnp.sum(inside) * P_of_moved.shape[-1]
    return jnp.sum(sq) / jnp.maximum(count, 1.0)


def _cfg(cfg: Any, key: str) -> Any:
    try:
        return cfg[key]
    except (KeyError, TypeError, AttributeError) as e:
        raise KeyError(f"position loss config has no key {key!r} (config.position_loss.{key})") from e


def position_loss(
    position_map_fn: Callable[[jnp.ndarray], jnp.ndarray],
    frames: jnp.ndarray,
    P: jnp.ndarray,
    rng: jax.Array,
    cfg: Any,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """L_pos = w_dis L_dis + w_con L_con + w_equ L_equ on P = position_map_fn(frames).

    cfg: config.position_loss (w_dis, w_con, w_equ, con_form, tau, max_rotation_deg, max_shift).
    A zero weight skips its term's computation (L_equ costs a second encoder forward).
    Returns (total, {"dis", "con", "equ"}) in float32.
    """
    zero = jnp.zeros((), jnp.float32)
    w_dis, w_con, w_equ = float(_cfg(cfg, "w_dis")), float(_cfg(cfg, "w_con")), float(_cfg(cfg, "w_equ"))
    dis = distinct_loss(P) if w_dis else zero
    con = consistency_loss(P, float(_cfg(cfg, "tau")), str(_cfg(cfg, "con_form"))) if w_con else zero
    equ = (
        equivariance_loss(
            position_map_fn,
            frames,
            rng,
            float(_cfg(cfg, "max_rotation_deg")),
            float(_cfg(cfg, "max_shift")),
            P=P,
        )
        if w_equ
        else zero
    )
    total = w_dis * dis + w_con * con + w_equ * equ
    return total, {"dis": dis, "con": con, "equ": equ}
