"""Loss functions on constructed inputs with known values."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ma2mi_jax import configlib, losses


def _onehot_positions(batch: int, h: int, w: int, channels: int) -> jnp.ndarray:
    """Every position i gets the unit vector e_i, the same in every face: [B,h,w,C]."""
    eye = np.eye(channels, dtype=np.float32)[: h * w].reshape(h, w, channels)
    return jnp.asarray(np.broadcast_to(eye, (batch, h, w, channels)))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ---- L_rec and classification -------------------------------------------------------------------


def test_l1_and_cross_entropy_known_values():
    pred = jnp.array([[1.0, -2.0], [0.5, 3.0]], jnp.bfloat16)
    target = jnp.zeros((2, 2))
    assert losses.l1_loss(pred, target).dtype == jnp.float32
    assert float(losses.l1_loss(pred, target)) == pytest.approx((1 + 2 + 0.5 + 3) / 4)
    assert float(losses.cross_entropy(jnp.zeros((3, 4)), jnp.array([0, 1, 3]))) == pytest.approx(np.log(4))
    logits = jnp.array([[2.0, 0.0], [0.0, 1.0]])
    expected = -(np.log(np.exp(2) / (np.exp(2) + 1)) + np.log(np.exp(1) / (np.exp(1) + 1))) / 2
    assert float(losses.cross_entropy(logits, jnp.array([0, 1]))) == pytest.approx(expected, rel=1e-6)


# ---- L_dis --------------------------------------------------------------------------------------


def test_distinct_identical_features_give_one_and_orthogonal_zero():
    P = jnp.ones((2, 3, 3, 8)) * jnp.arange(1.0, 9.0)
    assert float(losses.distinct_loss(P)) == pytest.approx(1.0, abs=1e-6)
    assert float(losses.distinct_loss(_onehot_positions(2, 3, 3, 16))) == pytest.approx(0.0, abs=1e-7)
    assert float(losses.distinct_loss(jnp.ones((2, 1, 1, 8)))) == 0.0  # one position: nothing to compare


def test_distinct_matches_brute_force():
    P = np.random.default_rng(0).normal(size=(2, 2, 3, 5)).astype(np.float32)
    per_face = []
    for b in range(2):
        p = P[b].reshape(6, 5)
        per_face.append(np.mean([_cos(p[i], p[j]) for i in range(6) for j in range(6) if i != j]))
    assert float(losses.distinct_loss(jnp.asarray(P, jnp.bfloat16))) == pytest.approx(
        np.mean(per_face), abs=2e-2
    )
    assert float(losses.distinct_loss(jnp.asarray(P))) == pytest.approx(np.mean(per_face), rel=1e-5)


def test_zero_features_have_finite_gradients():
    P = jnp.zeros((2, 2, 2, 4)).at[0, 0, 0].set(1.0)
    for fn in (losses.distinct_loss, losses.consistency_loss):
        g = jax.grad(fn)(P)
        assert bool(jnp.all(jnp.isfinite(g)))


# ---- L_con --------------------------------------------------------------------------------------


def test_consistency_known_values():
    N, tau = 4, 0.1
    P = _onehot_positions(3, 2, 2, 8)  # place i identical across faces, orthogonal to other places
    expected = np.log(1 + (N - 1) * np.exp(-1 / tau))
    assert float(losses.consistency_loss(P, tau, "ce")) == pytest.approx(
        expected, rel=1e-3
    )  # f32 near log(1)
    assert float(losses.consistency_loss(P, tau, "cos")) == pytest.approx(0.0, abs=1e-6)
    # Face b's places permuted (i -> i + 1): place i of a now matches place i - 1 of b.
    shifted = P.at[1].set(jnp.roll(P[1].reshape(N, 8), 1, axis=0).reshape(2, 2, 8))
    assert float(losses.consistency_loss(shifted, tau, "cos")) == pytest.approx(2 / 3, abs=1e-6)


def test_consistency_matches_brute_force_with_batch_rolled_by_one():
    P = np.random.default_rng(1).normal(size=(3, 2, 2, 6)).astype(np.float32)
    tau = 0.2
    ce, cs = [], []
    for a in range(3):
        b = (a - 1) % 3  # jnp.roll(P, 1, axis=0)[a] == P[a - 1]
        pa, pb = P[a].reshape(4, 6), P[b].reshape(4, 6)
        for i in range(4):
            logits = np.array([_cos(pa[i], pb[j]) / tau for j in range(4)])
            ce.append(-(logits[i] - np.log(np.exp(logits).sum())))
            cs.append(1 - _cos(pa[i], pb[i]))
    assert float(losses.consistency_loss(jnp.asarray(P), tau, "ce")) == pytest.approx(np.mean(ce), rel=1e-5)
    assert float(losses.consistency_loss(jnp.asarray(P), tau, "cos")) == pytest.approx(np.mean(cs), rel=1e-5)
    with pytest.raises(ValueError, match="con_form"):
        losses.consistency_loss(jnp.asarray(P), tau, "l2")


# ---- random_affine and warp ---------------------------------------------------------------------


def test_random_affine_ranges_and_determinism():
    theta = losses.random_affine(jax.random.PRNGKey(0), 64, 10.0, 0.08)
    assert theta.shape == (64, 2, 3) and theta.dtype == jnp.float32
    # Entries on the 1/THETA_GRID grid: a rotation to within that rounding.
    on_grid = np.asarray(theta, np.float64) * losses.THETA_GRID
    np.testing.assert_array_equal(on_grid, np.round(on_grid))
    R = np.asarray(theta[:, :, :2])
    np.testing.assert_allclose(
        R @ np.transpose(R, (0, 2, 1)), np.broadcast_to(np.eye(2), (64, 2, 2)), atol=4 / losses.THETA_GRID
    )
    angles = np.degrees(np.arctan2(R[:, 1, 0], R[:, 0, 0]))
    assert np.all(np.abs(angles) <= 10.0 + 0.1) and np.abs(angles).max() > 5.0
    shifts = np.asarray(theta[:, :, 2])
    assert np.all(np.abs(shifts) <= 0.16 + 1 / losses.THETA_GRID) and np.abs(shifts).max() > 0.08
    np.testing.assert_array_equal(theta, losses.random_affine(jax.random.PRNGKey(0), 64, 10.0, 0.08))
    identity = losses.random_affine(jax.random.PRNGKey(1), 2, 0.0, 0.0)
    np.testing.assert_allclose(identity, np.broadcast_to([[1, 0, 0], [0, 1, 0]], (2, 2, 3)), atol=1e-7)


def _theta(rows) -> jnp.ndarray:
    return jnp.asarray([rows], jnp.float32)


def test_warp_identity_shift_and_rotation():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 6, 6, 2)).astype(np.float32))
    out, inside = losses.warp(x, _theta([[1, 0, 0], [0, 1, 0]]))
    np.testing.assert_allclose(out, x, atol=1e-6)
    assert float(inside.min()) == 1.0
    # Shift by exactly two pixels: output column j samples input column j + 2; the last two are outside.
    out, inside = losses.warp(x, _theta([[1, 0, 2 * 2 / 6], [0, 1, 0]]))
    np.testing.assert_allclose(out[:, :, :4], x[:, :, 2:], atol=1e-5)
    np.testing.assert_array_equal(inside[0, :, :, 0], np.tile([1, 1, 1, 1, 0, 0], (6, 1)))
    assert float(jnp.abs(out[:, :, 4:]).max()) == 0.0
    # Half a pixel: bilinear average of neighbours.
    out, _ = losses.warp(x, _theta([[1, 0, 1 / 6], [0, 1, 0]]))
    np.testing.assert_allclose(out[:, :, :5], (x[:, :, :5] + x[:, :, 1:]) / 2, atol=1e-5)
    # 90 degrees about the centre: out[r, c] = in[c, W-1-r] = np.rot90.
    out, inside = losses.warp(x, _theta([[0, -1, 0], [1, 0, 0]]))
    np.testing.assert_allclose(out[0], np.rot90(np.asarray(x[0]), 1, axes=(0, 1)), atol=1e-5)
    assert float(inside.min()) == 1.0


def test_warp_same_theta_moves_image_and_feature_map_together():
    # A 4x4 map made by 2x2 average pooling of an 8x8 image: shifting the image by 2 px and the map
    # by 1 cell is the same normalised translation (0.5), the convention L_equ relies on.
    img = jnp.asarray(np.random.default_rng(3).normal(size=(1, 8, 8, 1)).astype(np.float32))
    pool = lambda a: a.reshape(1, a.shape[1] // 2, 2, a.shape[2] // 2, 2, 1).mean((2, 4))
    theta = _theta([[1, 0, 0.5], [0, 1, -0.5]])
    moved_img, _ = losses.warp(img, theta)
    moved_map, inside = losses.warp(pool(img), theta)
    m = np.asarray(inside[0, :, :, 0]).astype(bool)
    assert m.sum() == 9
    np.testing.assert_allclose(
        np.asarray(pool(moved_img))[0, :, :, 0][m], np.asarray(moved_map)[0, :, :, 0][m], atol=1e-5
    )


# ---- L_equ --------------------------------------------------------------------------------------


def _frames(seed: int) -> jnp.ndarray:
    return jax.random.randint(jax.random.PRNGKey(seed), (3, 16, 16, 3), 0, 256).astype(jnp.uint8)


def test_equivariant_map_gives_zero_only_thanks_to_the_mask():
    M = jnp.asarray(np.random.default_rng(4).normal(size=(3, 5)).astype(np.float32))
    affine = lambda fr: fr.astype(jnp.float32) @ M / 255.0 + 1.0  # per-pixel affine: commutes with T
    frames = _frames(5)
    rng = jax.random.PRNGKey(6)
    loss = losses.equivariance_loss(affine, frames, rng, max_rotation_deg=10.0, max_shift=0.08)
    assert float(loss) == pytest.approx(0.0, abs=1e-9)
    # Outside the frame F(T(x)) = F(0) = 1 while T(F(x)) = 0: only the mask makes the loss vanish.
    theta = losses.random_affine(rng, 3, 10.0, 0.08)
    moved, inside = losses.warp(frames.astype(jnp.float32), theta)
    moved_map, _ = losses.warp(affine(frames), theta)
    assert float(inside.min()) == 0.0
    assert float(jnp.mean(jnp.square(affine(moved) - moved_map))) > 0.01


def test_non_equivariant_map_is_penalised_and_identity_transform_is_free():
    ramp = jnp.linspace(0.0, 1.0, 16)[None, :, None, None] * jnp.ones((1, 1, 16, 1))
    fixed_pattern = lambda fr: fr.astype(jnp.float32) / 255.0 * 0.0 + ramp  # ignores the face
    frames = _frames(7)
    assert float(losses.equivariance_loss(fixed_pattern, frames, jax.random.PRNGKey(8), 10.0, 0.08)) > 1e-4
    # No rotation and no shift: T is the identity, so any map costs nothing.
    conv = lambda fr: jax.lax.conv_general_dilated(
        fr.astype(jnp.float32) / 255.0,
        jnp.ones((3, 3, 3, 4)),
        (2, 2),
        "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    assert float(losses.equivariance_loss(conv, frames, jax.random.PRNGKey(9), 0.0, 0.0)) == pytest.approx(
        0.0, abs=1e-9
    )


# ---- L_pos --------------------------------------------------------------------------------------


def test_position_loss_weights_and_skipped_terms():
    frames = _frames(10)
    calls = []
    M = jnp.asarray(np.random.default_rng(11).normal(size=(3, 6)).astype(np.float32))

    def pmap(fr):
        calls.append(fr.shape)
        pooled = fr.astype(jnp.float32).reshape(3, 4, 4, 4, 4, 3).mean((2, 4))  # [B,4,4,3]
        return jnp.tanh(pooled @ M / 255.0 + jnp.arange(16.0).reshape(1, 4, 4, 1) / 16.0)

    P = pmap(frames)
    cfg = configlib.pretrain_base().position_loss
    cfg.w_dis, cfg.w_con, cfg.w_equ = 0.5, 2.0, 3.0
    total, parts = losses.position_loss(pmap, frames, P, jax.random.PRNGKey(12), cfg)
    assert set(parts) == {"dis", "con", "equ"}
    assert float(parts["dis"]) == pytest.approx(float(losses.distinct_loss(P)), rel=1e-6)
    assert float(parts["con"]) == pytest.approx(
        float(losses.consistency_loss(P, cfg.tau, cfg.con_form)), rel=1e-6
    )
    assert float(parts["equ"]) > 0
    expected = 0.5 * parts["dis"] + 2.0 * parts["con"] + 3.0 * parts["equ"]
    assert float(total) == pytest.approx(float(expected), rel=1e-6)
    calls.clear()
    cfg.w_equ = 0.0
    total, parts = losses.position_loss(pmap, frames, P, jax.random.PRNGKey(12), cfg)
    assert calls == [] and float(parts["equ"]) == 0.0  # no second encoder forward
    with pytest.raises(KeyError, match=r"position_loss\.tau"):
        losses.position_loss(pmap, frames, P, jax.random.PRNGKey(0), {"w_dis": 1, "w_con": 1, "w_equ": 0})


def test_position_loss_jits_and_is_float32_for_bf16_maps():
    frames = _frames(13)
    pmap = lambda fr: (fr.astype(jnp.bfloat16) / 255).reshape(3, 4, 4, 4, 4, 3).mean((2, 4))
    cfg = configlib.pretrain_base().position_loss
    fn = jax.jit(lambda fr, key: losses.position_loss(pmap, fr, pmap(fr), key, cfg))
    total, parts = fn(frames, jax.random.PRNGKey(0))
    assert total.dtype == jnp.float32 and all(v.dtype == jnp.float32 for v in parts.values())
    again, _ = fn(frames, jax.random.PRNGKey(0))
    assert float(total) == float(again)
