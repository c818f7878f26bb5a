"""DiT conditioned by c: variants, parameter count, shapes, adaLN-Zero init, pos-embed, FLOPs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ma2mi_jax.models import dit, flops


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _dense(i: int, o: int) -> int:
    return i * o + o


def _block(D: int) -> int:
    # qkv, proj, fc1, fc2, adaLN (6 D); LayerNorms have no parameters.
    return _dense(D, 3 * D) + _dense(D, D) + _dense(D, 4 * D) + _dense(4 * D, D) + _dense(D, 6 * D)


def test_parse_variant():
    assert dit.parse_variant("B/2") == dit.DiTSpec(depth=12, hidden=768, heads=12, patch=2)
    assert dit.parse_variant("T/2") == dit.DiTSpec(depth=2, hidden=64, heads=4, patch=2)
    assert dit.parse_variant("XL/8") == dit.DiTSpec(depth=28, hidden=1152, heads=16, patch=8)
    assert dit.parse_variant("S/4").patch == 4 and dit.parse_variant("L/16").depth == 24
    for bad in ("Q/2", "B", "B/0", "B/x", ""):
        with pytest.raises(ValueError, match=r"model\.dit.*XL/<patch>"):
            dit.parse_variant(bad)


def test_param_count_b2_against_dit_paper():
    D, p, cin, cond = 768, 2, 4, 512
    model = dit.DiT("B/2")
    z = jax.ShapeDtypeStruct((1, 28, 28, cin), jnp.float32)
    c = jax.ShapeDtypeStruct((1, cond), jnp.float32)
    params = jax.eval_shape(lambda z, c: model.init(jax.random.PRNGKey(0), z, c), z, c)["params"]
    blocks = 12 * _block(D)
    patch_embed = _dense(p * p * cin, D)
    final_adaln = _dense(D, 2 * D)
    ours = patch_embed + _dense(cond, D) + _dense(D, D) + blocks + final_adaln + _dense(D, p * p * cin)
    assert _count(params) == ours == 129_731_344
    # DiT-B/2 as published (facebookresearch/DiT, 256x256, 1000 classes):
    #   t_embedder MLP 256 -> D -> D, y_embedder table (1000 + 1 CFG null class) x D,
    #   learned sigma (2 * 4 = 8 output channels), and the fixed 16x16-token pos_embed, which DiT
    #   stores as a (frozen) nn.Parameter and so counts in sum(p.numel()): 130.5M.
    # Ours replaces t_embedder + y_embedder by the 512 -> D -> D c-MLP, predicts 4 channels (no
    # sigma) and keeps the sin-cos embedding as a constant, so it has 0.78M fewer parameters.
    dit_published = (
        patch_embed
        + _dense(256, D)
        + _dense(D, D)
        + 1001 * D
        + blocks
        + final_adaln
        + _dense(D, p * p * 8)
        + (32 // p) ** 2 * D
    )
    assert round(dit_published / 1e6, 1) == 130.5
    difference = (1001 * D + _dense(256, D) - _dense(cond, D)) + (
        _dense(D, p * p * 8) - _dense(D, p * p * cin)
    )
    assert dit_published - ours == difference + (32 // p) ** 2 * D


def test_shapes_224_tiny_and_pixels():
    model = dit.DiT("B/2")
    z = jax.ShapeDtypeStruct((2, 28, 28, 4), jnp.float32)
    c = jax.ShapeDtypeStruct((2, 512), jnp.float32)
    out = jax.eval_shape(lambda z, c: model.init_with_output(jax.random.PRNGKey(0), z, c)[0], z, c)
    assert out.shape == (2, 28, 28, 4) and out.dtype == jnp.float32
    tiny = dit.DiT("T/2")
    for grid in (4, 8):
        y, _ = jax.jit(tiny.init_with_output)(
            jax.random.key(0, impl="rbg"), jnp.ones((2, grid, grid, 4)), jnp.ones((2, 64))
        )
        assert y.shape == (2, grid, grid, 4)
    # Pixel-space variant: RGB in, RGB out, larger patch.
    pix = dit.DiT("T/4", out_channels=3)
    y, _ = jax.jit(pix.init_with_output)(
        jax.random.key(0, impl="rbg"), jnp.ones((2, 32, 32, 3)), jnp.ones((2, 64))
    )
    assert y.shape == (2, 32, 32, 3)


def test_indivisible_grid_is_a_clear_error():
    with pytest.raises(ValueError, match=r"7x7 is not divisible by the patch size 2"):
        dit.DiT("T/2").init(jax.random.key(0, impl="rbg"), jnp.ones((1, 7, 7, 4)), jnp.ones((1, 8)))


def test_adaln_zero_init_gives_exact_zero_and_c_conditions_after_training():
    model = dit.DiT("T/2")
    kz, kc = jax.random.split(jax.random.PRNGKey(0))
    z = jax.random.normal(kz, (3, 8, 8, 4))
    c = jax.random.normal(kc, (3, 16))
    variables = jax.jit(model.init)(jax.random.key(1, impl="rbg"), z, c)
    apply = jax.jit(model.apply)
    assert np.all(np.asarray(apply(variables, z, c)) == 0.0)
    p = variables["params"]
    for i in range(2):
        assert not np.any(p[f"blocks_{i}"]["adaLN_modulation"]["kernel"])
    assert not np.any(p["final_layer"]["linear"]["kernel"]) and not np.any(p["final_layer"]["linear"]["bias"])
    # Once parameters move away from zero, the output depends on z and on c.
    rng = np.random.default_rng(0)
    moved = {"params": jax.tree.map(lambda x: x + 0.05 * rng.standard_normal(x.shape).astype(np.float32), p)}
    y = apply(moved, z, c)
    assert float(jnp.abs(y).mean()) > 1e-3
    assert float(jnp.abs(y - apply(moved, z, c + 1.0)).mean()) > 1e-4
    assert float(jnp.abs(y - apply(moved, z + 1.0, c)).mean()) > 1e-4


def test_residual_dit_starts_exactly_at_its_input_and_adds_the_same_change():
    kz, kc = jax.random.split(jax.random.PRNGKey(2))
    z = jax.random.normal(kz, (2, 8, 8, 4))
    c = jax.random.normal(kc, (2, 16))
    plain, residual = dit.DiT("T/2"), dit.DiT("T/2", residual=True)
    variables = jax.jit(plain.init)(jax.random.key(1, impl="rbg"), z, c)  # same parameters for both
    np.testing.assert_array_equal(residual.apply(variables, z, c), z)  # copies z_t at initialisation
    rng = np.random.default_rng(1)
    moved = jax.tree.map(lambda x: x + 0.05 * rng.standard_normal(x.shape).astype(np.float32), variables)
    np.testing.assert_allclose(
        residual.apply(moved, z, c), z + plain.apply(moved, z, c), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="residual DiT needs out_channels"):
        dit.DiT("T/2", out_channels=3, residual=True).init(jax.random.key(0), z, c)


def _dit_reference_pos_embed(embed_dim: int, grid_size: int) -> np.ndarray:
    """facebookresearch/DiT models.get_2d_sincos_pos_embed, restated."""
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape([2, 1, grid_size, grid_size])

    def one_d(dim, pos):
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], axis=1)


def test_pos_embed_matches_dit_and_handles_rectangles():
    np.testing.assert_allclose(dit.sincos_2d(64, 7, 7), _dit_reference_pos_embed(64, 7), atol=1e-6)
    rect = dit.sincos_2d(32, 2, 3)
    assert rect.shape == (6, 32)
    np.testing.assert_allclose(rect[1], dit.sincos_2d(32, 3, 3)[1], atol=1e-6)  # row 0, column 1


def test_patchify_round_trip():
    x = jnp.arange(2 * 8 * 12 * 3, dtype=jnp.float32).reshape(2, 8, 12, 3)
    tokens = dit.patchify(x, 4)
    assert tokens.shape == (2, 6, 48)
    np.testing.assert_array_equal(tokens[0, 1].reshape(4, 4, 3), x[0, 0:4, 4:8])
    np.testing.assert_array_equal(dit.unpatchify(tokens, 4, 2, 3), x)


def test_bf16_compute_float32_params_and_output():
    model = dit.DiT("T/2", dtype=jnp.bfloat16)
    init = jax.jit(model.init_with_output)
    y, variables = init(jax.random.key(0, impl="rbg"), jnp.ones((1, 4, 4, 4)), jnp.ones((1, 8)))
    assert y.dtype == jnp.float32
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))


def test_flops_against_dit_paper_and_xla():
    # DiT paper (Table 4) Gflops at 256x256 (32x32 latent), counted as multiply-adds.
    published = {"S/2": 6.06, "B/2": 23.01, "L/2": 80.71, "XL/2": 118.64}
    for name, gmacs in published.items():
        ours = flops.dit_flops(name, 32, 4, cond_dim=0) / 2 / 1e9  # without our c-MLP
        assert abs(ours - gmacs) / gmacs < 0.01, name
    model = dit.DiT("B/2")
    z = jax.ShapeDtypeStruct((1, 28, 28, 4), jnp.float32)
    c = jax.ShapeDtypeStruct((1, 512), jnp.float32)
    params = jax.eval_shape(lambda z, c: model.init(jax.random.PRNGKey(0), z, c), z, c)
    measured = flops.xla_flops(model.apply, params, z, c)
    analytic = flops.dit_flops("B/2", 28, 4)
    # XLA adds the softmax, LayerNorm, GELU and modulation element-wise work on top of the matmuls.
    assert analytic <= measured < 1.05 * analytic


def test_map_condition_starts_as_the_paper_model_and_then_reads_the_map():
    kz, kc, km = jax.random.split(jax.random.PRNGKey(3), 3)
    z = jax.random.normal(kz, (2, 8, 8, 4))  # token grid 4x4 at patch 2
    c = jax.random.normal(kc, (2, 16))
    cmap = jax.random.normal(km, (2, 2, 2, 16))  # a 2x2 fused map, resized to the 4x4 grid
    plain, mapped = dit.DiT("T/2"), dit.DiT("T/2", map_condition=True)
    variables = jax.jit(mapped.init)(jax.random.key(1, impl="rbg"), z, c, cmap)
    extra = set(variables["params"]) - set(plain.init(jax.random.key(1, impl="rbg"), z, c)["params"])
    assert extra == {"map_embedder"}
    assert float(jnp.abs(variables["params"]["map_embedder"]["kernel"]).max()) == 0.0  # zero-initialised
    rng = np.random.default_rng(2)
    moved = jax.tree.map(lambda x: x + 0.05 * rng.standard_normal(x.shape).astype(np.float32), variables)
    base = {"params": {k: v for k, v in moved["params"].items() if k != "map_embedder"}}
    zero_map = {"params": {**moved["params"], "map_embedder": variables["params"]["map_embedder"]}}
    # with its map embedder at zero the model is the paper's, whatever the map
    np.testing.assert_allclose(
        mapped.apply(zero_map, z, c, cmap), plain.apply(base, z, c), rtol=1e-5, atol=1e-6
    )
    # the gradient reaches the zero-initialised embedder, and a trained embedder makes the map matter
    grad = jax.grad(lambda p: jnp.mean(mapped.apply({"params": p}, z, c, cmap) ** 2))(zero_map["params"])
    assert float(jnp.abs(grad["map_embedder"]["kernel"]).max()) > 1e-6
    y = mapped.apply(moved, z, c, cmap)
    assert float(jnp.abs(y - mapped.apply(moved, z, c, cmap + 1.0)).mean()) > 1e-4
    with pytest.raises(ValueError, match="needs the fused map"):
        mapped.apply(moved, z, c)
