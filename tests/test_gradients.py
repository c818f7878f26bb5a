"""Float32 gradients under `jit` against a float64 evaluation of the same loss, for every parameter leaf.

The float64 reference runs the same modules with `dtype=float64` on float64 copies of the
parameters and inputs (`jax.enable_x64`); the losses and model outputs keep float64 through
`precision.at_least_f32`. Parameters are the init plus noise, so that every leaf (the adaLN-Zero
and zero-initialised head included) has a gradient, and frame pairs are smooth images with a
small motion between them, as the method sees them. The float32 programs are compiled at XLA's
default backend optimisation level (`DEFAULT_LEVEL`), whatever level the tests run at (conftest):
what is checked is what a user's run computes.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from ma2mi_jax import losses
from ma2mi_jax.models import miacnet
from ma2mi_jax.models import vae as vae_lib
from ma2mi_jax.train.finetune import fold_step
from ma2mi_jax.train.pretrain import state
from ma2mi_jax.train.pretrain import step as pretrain_step
from tests.helpers.configs import config_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ||g32 - g64|| / ||g64|| per leaf: float32 rounding (2^-24 ~ 6e-8) grown through ~40 layers and
# the batch-norm backward's cancellations stays near 1e-5; a misrounded reduction or an input
# that moves by an ulp in front of a ReLU / max-pool gives 1e-3 and more.
RELATIVE_TOLERANCE = 1e-4
BATCH = 8
# XLA's defaults (DefaultDebugOptionsIgnoringFlags), whatever conftest's XLA_FLAGS chose.
DEFAULT_LEVEL = {"xla_backend_optimization_level": 3, "xla_cpu_use_fusion_emitters": True}


def _smooth_pairs(size: int, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth uint8 frames [B,H,W,3] and the same frames with a small smooth change added."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 215, (batch, 5, 5, 3))
    grid = np.linspace(0, 4, size)
    i0 = np.minimum(grid.astype(int), 3)
    w = (grid - i0)[None, :, None, None]
    rows = coarse[:, i0] * (1 - w) + coarse[:, i0 + 1] * w  # [B,size,5,3]
    w = (grid - i0)[None, None, :, None]
    frames = rows[:, :, i0] * (1 - w) + rows[:, :, i0 + 1] * w  # [B,size,size,3]
    bump = np.sin(np.linspace(0, np.pi, size))[None, :, None, None]  # [1,size,1,1]
    change = 3.0 * bump * rng.uniform(-1, 1, (batch, 1, 1, 1))
    frame0 = np.round(frames).astype(np.uint8)
    frame1 = np.clip(np.round(frames + change), 0, 255).astype(np.uint8)
    return frame0, frame1


def _init(init_fn):
    """Initial variables, jitted with an "rbg" key: compiles much faster than eager threefry."""
    return jax.device_get(jax.jit(init_fn)(jax.random.key(0, impl="rbg")))


def _perturbed(params, seed: int, scale: float = 0.05):
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    noisy = [x + scale * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, noisy)


def _to64(tree):
    def cast(x):
        x = np.asarray(x)
        return x.astype(np.float64) if np.issubdtype(x.dtype, np.floating) else x

    return jax.tree_util.tree_map(cast, tree)


def _relative_errors(got, ref) -> dict[str, float]:
    errors = {}
    paths_and_leaves = jax.tree_util.tree_flatten_with_path(got)[0]
    for (path, g), r in zip(paths_and_leaves, jax.tree_util.tree_leaves(ref), strict=True):
        g, r = np.asarray(g, np.float64), np.asarray(r, np.float64)
        assert g.shape == r.shape
        norm = np.linalg.norm(r)
        assert norm > 0, f"{jax.tree_util.keystr(path)} has no gradient: the check would say nothing"
        errors[jax.tree_util.keystr(path)] = float(np.linalg.norm(g - r) / norm)
    return errors


def _check(errors: dict[str, float]) -> None:
    worst = sorted(errors.items(), key=lambda kv: -kv[1])[:5]
    assert worst[0][1] <= RELATIVE_TOLERANCE, "float32 gradients off their float64 reference: " + ", ".join(
        f"{k} {v:.1e}" for k, v in worst
    )


def _pretrain_config(dtype: str):
    config = config_file(os.path.join(REPO, "configs", "synthetic_pretrain.py"), "tiny")
    config.dtype = dtype
    assert pretrain_step.position_loss_on(config) and config.position_loss.w_equ > 0
    return config


def test_pretraining_gradients_of_every_leaf_match_float64():
    c32, c64 = _pretrain_config("float32"), _pretrain_config("float64")
    size = int(c32.data.image_size)
    vae = vae_lib.vae_from_config(c32.vae, size, seed=0)
    m32, m64 = state.build_models(c32, 0, vae), state.build_models(c64, 0, vae)
    params, stats = _init(lambda k: state.init_variables(m32, k))
    params = _perturbed(params, 1)
    frame0, frame1 = _smooth_pairs(size, BATCH, seed=2)
    # Latents as the latent cache hands them to the step (float32); their values do not matter here.
    rng = np.random.default_rng(3)
    latent0 = rng.normal(size=(BATCH, m32.grid, m32.grid, m32.channels)).astype(np.float32)
    latent1 = (latent0 + 0.1 * rng.normal(size=latent0.shape)).astype(np.float32)
    batch = {"frame0": frame0, "frame1": frame1, "latent0": latent0, "latent1": latent1}
    key = jax.random.PRNGKey(3)

    def gradient(models, config):
        loss_fn = pretrain_step.make_loss_fn(models, config, vae)
        return jax.grad(lambda p, s, b: loss_fn(p, s, {}, b, key)[0])

    g32 = jax.jit(gradient(m32, c32), compiler_options=DEFAULT_LEVEL)(params, stats, batch)
    with jax.enable_x64(True):
        g64 = jax.jit(gradient(m64, c64))(_to64(params), _to64(stats), _to64(batch))
        assert jax.tree_util.tree_leaves(g64)[0].dtype == jnp.float64
    _check(_relative_errors(g32, g64))


def test_finetuning_gradients_of_every_leaf_match_float64():
    config = config_file(os.path.join(REPO, "configs", "synthetic_loso.py"), "tiny")
    classes = len(tuple(config.data.class_names))
    size = int(config.data.image_size)
    m32 = miacnet.classifier_from_config(config.model, classes, jnp.float32)
    m64 = miacnet.classifier_from_config(config.model, classes, jnp.float64)
    frame0, frame1 = _smooth_pairs(size, BATCH, seed=4)
    variables = _init(lambda k: m32.init(k, frame0[:1], frame1[:1], train=False))
    params = _perturbed({"classifier": variables["params"]}, 5)
    stats = variables["batch_stats"]
    batch = {"frame0": frame0, "frame1": frame1, "label": np.arange(BATCH, dtype=np.int32) % classes}
    key = jax.random.PRNGKey(6)

    def gradient(model):
        objective = fold_step.make_objective(model, losses.cross_entropy)
        return jax.grad(lambda p, s, b: objective(p, s, b, key, None)[0])

    g32 = jax.jit(gradient(m32), compiler_options=DEFAULT_LEVEL)(params, stats, batch)
    with jax.enable_x64(True):
        g64 = jax.jit(gradient(m64))(_to64(params), _to64(stats), _to64(batch))
        assert jax.tree_util.tree_leaves(g64)[0].dtype == jnp.float64
    _check(_relative_errors(g32, g64))


def test_equivariance_warp_of_frames_is_exact():
    # L_equ's warp of uint8 frames: theta on the 2^-10 grid, sources on the 1/32 grid, so every
    # sample is a multiple of 1/1024 computed without rounding: jitted (fused) and op-by-op runs
    # give the same bits, which is what keeps the position encoder's gradient stable.
    frames = jax.random.randint(jax.random.PRNGKey(7), (4, 16, 16, 3), 0, 256).astype(jnp.uint8)
    theta = losses.random_affine(jax.random.PRNGKey(8), 4, 10.0, 0.08)
    on_grid = np.asarray(theta, np.float64) * losses.THETA_GRID
    np.testing.assert_array_equal(on_grid, np.round(on_grid))
    moved, inside = jax.jit(losses.warp)(frames, theta)
    with jax.disable_jit():
        moved_eager, inside_eager = losses.warp(frames, theta)
    np.testing.assert_array_equal(np.asarray(inside), np.asarray(inside_eager))
    np.testing.assert_array_equal(np.asarray(moved), np.asarray(moved_eager))
    scaled = np.asarray(moved, np.float64) * 1024
    np.testing.assert_array_equal(scaled, np.round(scaled))
    assert 0.0 < float(inside.mean()) < 1.0  # some pixels fell outside
    assert float(jnp.mean(jnp.abs(moved - frames.astype(jnp.float32)))) > 1.0  # it moved
