"""Speed of the pieces of the train steps, each jitted alone, at the synthetic configs' shapes.

python benchmarks/pieces.py                      # batch 32, 64x64, ResNet width 8, DiT T/2
python benchmarks/pieces.py --batch 16 --steps 50

Each piece runs on random inputs; `fwd` is the forward, `fwd+bwd` the forward and the gradients a
train step needs. Besides the library's pieces it times the reformulations that were tried on the
CPU (the stem as space-to-depth + 4x4 convolution or as im2col, the max-pool as nine strided maxima)
so that their figures stay reproducible; they are not used by the library
(docs/decisions.md#the-stem-stays-a-convolution, docs/decisions.md#max-pool-by-slices-on-the-cpu).
The script uses only functions that older versions of the library also have, so it can time a
checkout of an earlier commit (PYTHONPATH=<checkout> python benchmarks/pieces.py).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from ma2mi_jax import cli, losses
from ma2mi_jax.models import dit as dit_lib
from ma2mi_jax.models import resnet

try:  # absent in checkouts before them (the script times older commits too)
    from ma2mi_jax.cpu import kernels, small_map_conv
except ImportError:
    kernels = small_map_conv = None

BATCH = flags.DEFINE_integer("batch", 32, "Batch size (the synthetic pre-training config's).")
SIZE = flags.DEFINE_integer("size", 64, "Image side in pixels.")
WIDTH = flags.DEFINE_integer("width", 8, "ResNet base width.")
STEPS = flags.DEFINE_integer("steps", 30, "Timed calls per piece (the median is printed).")
DN = ("NHWC", "HWIO", "NHWC")


def median_ms(fn: Callable, *args) -> float:
    """Median wall time (ms) of the jitted fn over --steps calls, after one compiling call."""
    jitted = jax.jit(fn)
    jax.block_until_ready(jitted(*args))
    seconds = []
    for _ in range(STEPS.value):
        t0 = time.perf_counter()
        jax.block_until_ready(jitted(*args))
        seconds.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(seconds))


def stem(x, k):
    """The trunk's 7x7 stride-2 convolution, padding 3, as the library runs it."""
    return jax.lax.conv_general_dilated(x, k, (2, 2), ((3, 3), (3, 3)), dimension_numbers=DN)


def stem_space_to_depth(x, k):
    """The same convolution as a space-to-depth of the padded input and a 4x4 stride-1 convolution."""
    b, h, w, c = x.shape
    xp = jnp.pad(x, ((0, 0), (3, 3 + h % 2), (3, 3 + w % 2), (0, 0)))  # even sides
    hp, wp = xp.shape[1] // 2, xp.shape[2] // 2
    xs = xp.reshape(b, hp, 2, wp, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, 4 * c)
    kp = jnp.pad(k, ((0, 1), (0, 1), (0, 0), (0, 0)))  # [8,8,c,o]
    ks = kp.reshape(4, 2, 4, 2, c, -1).transpose(0, 2, 1, 3, 4, 5).reshape(4, 4, 4 * c, -1)
    return jax.lax.conv_general_dilated(xs, ks, (1, 1), "VALID", dimension_numbers=DN)


def stem_im2col(x, k):
    """The same convolution as 49 strided slices concatenated (im2col) and one matrix product."""
    kh = k.shape[0]
    xp = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kh // 2, kh // 2), (0, 0)))
    ho, wo = (x.shape[1] - 1) // 2 + 1, (x.shape[2] - 1) // 2 + 1
    cols = [xp[:, i : i + 2 * ho - 1 : 2, j : j + 2 * wo - 1 : 2] for i in range(kh) for j in range(kh)]
    return jnp.einsum("bhwk,ko->bhwo", jnp.concatenate(cols, -1), k.reshape(-1, k.shape[-1]))


def max_pool(y):
    """The trunk's 3x3 stride-2 max-pool, padding 1, as the library runs it."""
    return nn.max_pool(y, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def max_pool_slices(y):
    """The max-pool as the maximum of nine strided slices (tried: ties share the gradient)."""
    _, h, w, _ = y.shape
    yp = jnp.pad(y, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    out = yp[:, : 2 * ho : 2, : 2 * wo : 2]
    for i in range(3):
        for j in range(3):
            out = jnp.maximum(out, yp[:, i : i + 2 * ho : 2, j : j + 2 * wo : 2])
    return out


def weight_grad(f: Callable, g: jax.Array) -> Callable:
    """x, k -> (f(x, k), d<f(x,k), g>/dk): a forward and its weight gradient."""
    return lambda x, k: jax.value_and_grad(lambda k: jnp.sum(f(x, k) * g))(k)


def input_and_weight_grads(f: Callable, g: jax.Array) -> Callable:
    """x, k -> (f(x, k), d<f(x,k), g>/d(x, k)): a forward and both gradients of a layer inside a trunk."""
    return lambda x, k: jax.value_and_grad(lambda x, k: jnp.sum(f(x, k) * g), (0, 1))(x, k)


def input_grad(f: Callable, g: jax.Array) -> Callable:
    """y -> (f(y), d<f(y), g>/dy)."""
    return lambda y: jax.value_and_grad(lambda y: jnp.sum(f(y) * g))(y)


def pieces() -> list[str]:
    """One figure line per piece."""
    b, s, w = BATCH.value, SIZE.value, WIDTH.value
    rng = np.random.default_rng(0)
    normal = lambda *shape: jnp.asarray(rng.standard_normal(shape), jnp.float32)
    x, k = normal(b, s, s, 3), 0.1 * normal(7, 7, 3, w)
    g_stem = normal(b, s // 2, s // 2, w)
    y = jax.nn.relu(normal(b, s // 2, s // 2, w))
    g_pool = normal(b, s // 4, s // 4, w)
    lines = [
        f"stem_fwd_ms: {median_ms(stem, x, k):.3f} ms (7x7 s2, [{b},{s},{s},3] -> {w})",
        f"stem_fwd_wgrad_ms: {median_ms(weight_grad(stem, g_stem), x, k):.3f} ms",
        f"stem_s2d_fwd_ms: {median_ms(stem_space_to_depth, x, k):.3f} ms (tried, not used)",
        f"stem_s2d_fwd_wgrad_ms: {median_ms(weight_grad(stem_space_to_depth, g_stem), x, k):.3f} ms",
        f"stem_im2col_fwd_ms: {median_ms(stem_im2col, x, k):.3f} ms (tried, not used)",
        f"stem_im2col_fwd_wgrad_ms: {median_ms(weight_grad(stem_im2col, g_stem), x, k):.3f} ms",
        f"maxpool_fwd_bwd_ms: {median_ms(input_grad(max_pool, g_pool), y):.3f} ms (3x3 s2, {w} channels)",
        f"maxpool_slices_fwd_bwd_ms: {median_ms(input_grad(max_pool_slices, g_pool), y):.3f} ms (tried)",
    ]
    if kernels is not None:  # the library's choice for the backend, where it has one
        ms = median_ms(input_grad(kernels.trunk_ops().stem_max_pool, g_pool), y)
        lines.append(f"maxpool_library_fwd_bwd_ms: {ms:.3f} ms (the library's, {jax.default_backend()})")
    frames = jnp.asarray(rng.integers(0, 256, (b, s, s, 3)), jnp.uint8)
    theta = losses.random_affine(jax.random.PRNGKey(0), b, 10.0, 0.08)
    warp_frames = lambda f, t: losses.warp(f, t)[0]
    lines.append(f"equ_warp_frames_ms: {median_ms(warp_frames, frames, theta):.3f} ms (L_equ, the frames)")
    grid = resnet.feature_grid(s)
    p_map, g_map = normal(b, grid, grid, 8 * w), normal(b, grid, grid, 8 * w)
    warp_map = lambda p: jax.value_and_grad(lambda p: jnp.sum(losses.warp(p, theta)[0] * g_map))(p)
    lines.append(f"equ_warp_map_fwd_bwd_ms: {median_ms(warp_map, p_map):.3f} ms (L_equ, P and its gradient)")

    # layer4's stride-1 3x3 convolution on its grid x grid map (2x2 at 64 px), forward + both gradients
    c4 = 8 * w
    x4, k4, g4 = normal(b, grid, grid, c4), 0.05 * normal(3, 3, c4, c4), normal(b, grid, grid, c4)
    conv4 = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=DN)
    lines.append(
        f"layer4_conv_fwd_bwd_ms: {median_ms(input_and_weight_grads(conv4, g4), x4, k4):.3f} ms "
        f"(3x3 on [{b},{grid},{grid},{c4}], lax convolution)"
    )
    if small_map_conv is not None:  # the library's form for maps within the kernel's reach
        numbers = jax.lax.conv_dimension_numbers(x4.shape, k4.shape, DN)
        hook = lambda x, k: small_map_conv.conv_general_dilated(
            x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=numbers
        )
        ms = median_ms(input_and_weight_grads(hook, g4), x4, k4)
        lines.append(f"layer4_conv_library_fwd_bwd_ms: {ms:.3f} ms")

    bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
    bn_vars = bn.init(jax.random.PRNGKey(0), y)
    bn_loss = lambda v, y: jnp.sum(bn.apply(v, y, mutable=["batch_stats"])[0] * y)
    bn_step = lambda v, y: jax.value_and_grad(bn_loss, argnums=(0, 1))(v, y)
    lines.append(
        f"batchnorm_fwd_bwd_ms: {median_ms(bn_step, bn_vars, y):.3f} ms (train mode, the stem's output)"
    )

    ops = kernels.trunk_ops() if kernels is not None else None  # the library's forms, where it has them
    trunk = resnet.ResNet18Trunk(width=w) if ops is None else resnet.ResNet18Trunk(width=w, ops=ops)
    t_vars = trunk.init(jax.random.PRNGKey(0), x, train=False)
    g_out = normal(b, grid, grid, 8 * w)

    def trunk_step(params, stats, x):
        def loss(p):
            out, upd = trunk.apply(
                {"params": p, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
            )
            return jnp.sum(out * g_out), upd

        return jax.value_and_grad(loss, has_aux=True)(params)

    lines.append(
        f"resnet_trunk_fwd_bwd_ms: {median_ms(trunk_step, t_vars['params'], t_vars['batch_stats'], x):.3f} ms"
    )
    dit = dit_lib.DiT(variant="T/2", out_channels=4, residual=True)
    z, c = normal(b, s // 8, s // 8, 4), normal(b, 8 * w)
    d_params = dit.init(jax.random.PRNGKey(0), z, c)["params"]
    dit_loss = lambda p, z, c: jnp.mean(jnp.abs(dit.apply({"params": p}, z, c) - z))
    dit_step = jax.value_and_grad(dit_loss)
    lines.append(f"dit_fwd_bwd_ms: {median_ms(dit_step, d_params, z, c):.3f} ms (T/2, residual, L1)")
    return lines


def main(argv: list[str]) -> None:
    cli.check_no_extra_args(argv)
    lines = common.header("train-step pieces")
    lines.append(f"shapes: batch {BATCH.value}, {SIZE.value}x{SIZE.value}, width {WIDTH.value}")
    common.print_block(lines + pieces())


if __name__ == "__main__":
    cli.run(main)
