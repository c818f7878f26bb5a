"""Pair registration (models/register.py): recovers a known pose and lighting change, keeps a local one."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ma2mi_jax import resample
from ma2mi_jax.models import miacnet, register

S = 48
# One compiled program each (every call here has the shape [1,S,S,3] and 8 iterations).
register_pair = jax.jit(register.register_pair, static_argnums=2)
fit_similarity = jax.jit(register.fit_similarity, static_argnums=2)
register_motion = jax.jit(register.registered_motion, static_argnums=2)


def _face(rng: np.random.Generator) -> np.ndarray:
    """A smooth face-like frame f32[1,S,S,3]: a bright ellipse with a few dark blobs."""
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) / S - 0.5
    img = 60.0 + 140.0 / (1.0 + np.exp(((xx / 0.32) ** 2 + (yy / 0.42) ** 2 - 1.0) * 12.0))
    for _ in range(6):
        cx, cy = rng.uniform(-0.2, 0.2, 2)
        img -= 50.0 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 0.05**2))
    return np.repeat(img[None, ..., None], 3, axis=-1)


def _transformed(img: np.ndarray, p: tuple[float, float, float, float], gain: float) -> np.ndarray:
    """img sampled at W(u) = (1 + s) R(theta) u + t about the centre, times gain: f32[1,S,S,3]."""
    c = (S - 1) / 2.0
    uy, ux = np.mgrid[0:S, 0:S].astype(np.float32) - c
    tx, ty, th, s = p
    # The inverse map: frame1(W(u)) = frame0(u), so frame1(v) = frame0(W^-1(v)).
    vx, vy = (ux - tx) / (1 + s), (uy - ty) / (1 + s)
    sx = np.cos(th) * vx + np.sin(th) * vy
    sy = -np.sin(th) * vx + np.cos(th) * vy
    out = resample.bilinear(jnp.asarray(img), jnp.asarray(sx + c)[None], jnp.asarray(sy + c)[None])
    return np.asarray(out) * gain


def _inner(x: np.ndarray) -> np.ndarray:
    return np.asarray(x)[:, 6:-6, 6:-6]


def test_identical_frames_are_left_as_they_are():
    img = np.rint(_face(np.random.default_rng(0)))
    out0, out1 = register_pair(img, img, 8)
    np.testing.assert_allclose(np.asarray(out0), img, atol=1e-3)
    np.testing.assert_allclose(np.asarray(out1), img, atol=1e-3)


@pytest.mark.parametrize(
    "p", [(1.5, -0.8, 0.0, 0.0), (0.4, 0.3, np.deg2rad(3.0), 0.01), (-2.0, 1.0, -0.05, -0.01)]
)
def test_pose_and_gain_are_recovered(p):
    img = _face(np.random.default_rng(1))
    moved = _transformed(img, p, gain=1.1)
    fit_p, fit_q = fit_similarity(img, moved, 8)
    np.testing.assert_allclose(np.asarray(fit_p)[0], p, atol=0.03)
    assert abs(float(fit_q[0, 0]) - 1 / 1.1) < 0.01
    out0, out1 = register_pair(img, moved, 8)
    raw = np.abs(_inner(moved) - _inner(img)).mean()
    aligned = np.abs(_inner(out1) - _inner(out0)).mean()
    assert aligned < 0.1 * raw, (raw, aligned)


def test_a_local_change_stays_in_the_difference():
    img = _face(np.random.default_rng(2))
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) / S - 0.5
    blob = 15.0 * np.exp(-((xx - 0.1) ** 2 + (yy + 0.1) ** 2) / (2 * 0.04**2))[None, ..., None]
    changed = _transformed(img + blob, (1.0, 0.5, 0.02, 0.0), gain=0.95)
    out0, out1 = register_pair(img, changed, 8)
    diff = np.abs(np.asarray(out1 - out0)).mean(-1)[0]  # [S,S]
    at_blob = diff[blob[0, ..., 0] > 7.5].mean()
    elsewhere = diff[6:-6, 6:-6][blob[0, 6:-6, 6:-6, 0] < 0.5].mean()
    assert at_blob > 8.0 and elsewhere < 1.0, (at_blob, elsewhere)


def test_miacnet_action_input_is_registered():
    """Registered, a pure pose change gives (nearly) the action features of no motion at all."""
    img = _face(np.random.default_rng(3))
    moved = _transformed(img, (1.2, -0.7, 0.03, 0.0), gain=1.05)
    model = miacnet.MIACNet(width=4, fusion="none", register_iterations=8)
    v = jax.jit(model.init, static_argnames="train")(jax.random.key(0), img, img, train=False)
    apply = jax.jit(lambda m, a, b: m.apply(v, a, b, train=False)["c"], static_argnums=0)
    still, reg = apply(model, img, img), apply(model, img, moved)
    raw = apply(miacnet.MIACNet(width=4, fusion="none"), img, moved)
    assert float(jnp.abs(reg - still).max()) < 0.1 * float(jnp.abs(raw - still).max())


def test_a_pair_registered_beforehand_gives_what_the_model_registers_itself():
    """Fine-tuning registers every pair once (`fold_step.fold_data`, int16 fixed point) and passes the
    difference as `motion`: the condition is the model's own registered one, to float rounding."""
    from ma2mi_jax.train.finetune import fold_step

    rng = np.random.default_rng(5)
    img = _face(rng)
    pairs = np.stack(
        [np.concatenate([img, _transformed(img, (0.8 * i, -0.5, 0.02 * i, 0.01), 1.03)]) for i in range(3)]
    )  # [3,2,S,S,3] float
    pairs = np.clip(np.round(pairs), 0, 255).astype(np.uint8)
    data = fold_step.fold_data(pairs, np.zeros(3, np.int32), register_iterations=8, batch_size=2)
    assert data["motion"].dtype == np.int16 and data["motion"].shape == (3, S, S, 3)
    exact = np.asarray(register_motion(jnp.asarray(pairs[:, 0]), jnp.asarray(pairs[:, 1]), 8))
    scale = fold_step.MOTION_SCALE
    np.testing.assert_allclose(data["motion"] / scale, exact, atol=0.5 / scale + 1e-3)
    assert np.abs(exact).max() > 5  # the pairs differ
    assert "motion" not in fold_step.fold_data(pairs, np.zeros(3, np.int32))
    batch = fold_step.gather_batch(jax.tree.map(jnp.asarray, data), jnp.arange(3))
    model = miacnet.MIACClassifier(num_classes=3, width=4, fusion="add", register_iterations=8)
    v = jax.jit(model.init, static_argnames="train")(
        jax.random.key(0), batch["frame0"], batch["frame1"], train=False
    )
    features = jax.jit(
        lambda a, b, m: model.apply(v, a, b, train=False, return_features=True, motion=m)[1]
    )  # c [B,C]
    itself = features(batch["frame0"], batch["frame1"], None)
    once = features(batch["frame0"], batch["frame1"], batch["motion"])
    unregistered = miacnet.MIACClassifier(num_classes=3, width=4, fusion="add").apply(
        v, batch["frame0"], batch["frame1"], train=False, return_features=True
    )[1]
    np.testing.assert_allclose(once, itself, rtol=0, atol=2e-3 * float(jnp.abs(itself).max()))
    assert float(jnp.abs(unregistered - itself).max()) > 10 * float(jnp.abs(once - itself).max())
