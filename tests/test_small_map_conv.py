"""Convolutions on maps within the kernel's reach as one matrix product (cpu/small_map_conv.py)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from ma2mi_jax.cpu import kernels, small_map_conv
from ma2mi_jax.models import resnet

DN = ("NHWC", "HWIO", "NHWC")


def _same_conv(x, k):
    kh, kw = k.shape[:2]
    return lax.conv_general_dilated(x, k, (1, 1), ((kh // 2,) * 2, (kw // 2,) * 2), dimension_numbers=DN)


def _conv_primitives(fn, *args) -> int:
    jaxpr = jax.make_jaxpr(fn)(*args)
    return sum(eqn.primitive.name == "conv_general_dilated" for eqn in jaxpr.jaxpr.eqns)


@pytest.mark.parametrize(("kernel", "hw"), [(3, (2, 2)), (3, (1, 1)), (3, (1, 2)), (5, (3, 3)), (5, (2, 3))])
def test_dense_form_gives_the_convolution_and_its_gradients(kernel, hw):
    rng = np.random.default_rng(kernel * 10 + hw[0])
    x = jnp.asarray(rng.normal(size=(4, *hw, 6)).astype(np.float32))  # [B,H,W,C]
    k = jnp.asarray(rng.normal(size=(kernel, kernel, 6, 5)).astype(np.float32))  # [kh,kw,C,O]
    g = jnp.asarray(rng.normal(size=(4, *hw, 5)).astype(np.float32))
    assert small_map_conv.is_full_window(hw, (kernel, kernel), (1, 1), ((kernel // 2,) * 2,) * 2, None, None)
    want, got = _same_conv(x, k), small_map_conv.dense_conv(x, k)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    forms = (_same_conv, small_map_conv.dense_conv)
    grads = [jax.grad(lambda x, k, f=f: jnp.sum(f(x, k) * g), (0, 1))(x, k) for f in forms]
    for a, b in zip(*grads, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


def test_hook_takes_the_product_only_where_every_output_sees_every_input():
    rng = np.random.default_rng(0)
    k = jnp.asarray(rng.normal(size=(3, 3, 4, 4)).astype(np.float32))
    hook = lambda x, strides=(1, 1), pad=((1, 1), (1, 1)): small_map_conv.conv_general_dilated(
        x, k, strides, pad, dimension_numbers=lax.conv_dimension_numbers(x.shape, k.shape, DN)
    )
    small = jnp.asarray(rng.normal(size=(2, 2, 2, 4)).astype(np.float32))
    assert _conv_primitives(hook, small) == 0
    np.testing.assert_allclose(hook(small), _same_conv(small, k), rtol=1e-5, atol=1e-5)
    large = jnp.asarray(rng.normal(size=(2, 3, 3, 4)).astype(np.float32))  # corners miss a tap
    strided = lambda x: hook(x, strides=(2, 2))
    valid = lambda x: hook(x, pad=((0, 0), (0, 0)))
    for fn, x in ((hook, large), (strided, small), (valid, large)):
        assert _conv_primitives(fn, x) == 1
    np.testing.assert_array_equal(hook(large), _same_conv(large, k))  # the same lax call, bit for bit
    # A 1-d convolution passes through untouched.
    line, k1, dn = jnp.asarray(rng.normal(size=(2, 2, 4)).astype(np.float32)), k[1], ("NHC", "HIO", "NHC")
    got = small_map_conv.conv_general_dilated(line, k1, (1,), ((1, 1),), dimension_numbers=dn)
    want = lax.conv_general_dilated(line, k1, (1,), ((1, 1),), dimension_numbers=dn)
    np.testing.assert_array_equal(got, want)


def test_resnet_layer4_at_64px_runs_as_products_with_unchanged_parameters():
    trunk = resnet.ResNet18Trunk(width=8, ops=kernels.trunk_ops())
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 64, 64, 3)).astype(np.float32))
    variables = trunk.init(jax.random.key(0), x, train=False)
    # A new function for each formulation: jax caches traces by function.
    make_apply = lambda: lambda v, x: trunk.apply(v, x, train=True, mutable=["batch_stats"])[0]
    apply = make_apply()
    # 20 convolutions (stem, 16 in the blocks, 3 downsamples); layer4's three stride-1 3x3 ones see 2x2 maps.
    assert _conv_primitives(apply, variables, x) == 17
    g = jnp.asarray(np.random.default_rng(2).normal(size=(4, 2, 2, 64)).astype(np.float32))
    loss = lambda p, v=variables: jnp.sum(apply({**v, "params": p}, x) * g)
    # Compiled, as training runs them (op by op, the products' many small operations dominate).
    fast_out, fast_grads = jax.jit(apply)(variables, x), jax.jit(jax.grad(loss))(variables["params"])
    xla_convs = dataclasses.replace(kernels.trunk_ops(), conv_general_dilated=lax.conv_general_dilated)
    trunk = resnet.ResNet18Trunk(width=8, ops=xla_convs)
    apply = make_apply()
    assert _conv_primitives(apply, variables, x) == 20
    reference = trunk.init(jax.random.key(0), x, train=False)
    for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(variables), strict=True):
        np.testing.assert_array_equal(a, b)  # the same parameters and initial values
    np.testing.assert_allclose(fast_out, jax.jit(apply)(variables, x), rtol=1e-4, atol=1e-5)
    reference_grads = jax.tree_util.tree_leaves_with_path(jax.jit(jax.grad(loss))(variables["params"]))
    for (path, want), got in zip(reference_grads, jax.tree.leaves(fast_grads), strict=True):
        assert float(jnp.linalg.norm(got - want)) <= 1e-5 * float(jnp.linalg.norm(want)) + 1e-7, path
