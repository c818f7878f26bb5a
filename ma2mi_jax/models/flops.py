"""Forward FLOPs per sample of each network (a multiply-add counts as 2 FLOPs).

Analytic counts of the matrix products and convolutions (normalisations, activations, pooling
and additions are left out: they are below 1 % for these networks). Published figures usually
count multiply-adds: torchvision ResNet18 at 224 = 1.81 G MACs (3.63 GFLOPs here), DiT-B/2 on a
32x32 latent = 23.0 "Gflops" in the DiT paper (MACs, so 46 GFLOPs here).

| network (224 input)                   | GFLOPs / sample |
|---------------------------------------|-----------------|
| ResNet18 trunk                        | 3.63            |
| MIACNet (add, two trunks)             | 7.25            |
| DiT-S/2 on the 28x28x4 latent         | 9.06            |
| DiT-B/2 on the 28x28x4 latent         | 34.8            |
| DiT-L/2 on the 28x28x4 latent         | 122.5           |
| DiT-XL/2 on the 28x28x4 latent        | 180.2           |
| SD VAE encoder (XLA count, no padding)| 205             |
`xla_flops` measures any jitted function with XLA's cost analysis (used for the VAE encoder).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ma2mi_jax.models.dit import parse_variant
from ma2mi_jax.models.resnet import BLOCKS_PER_STAGE, STAGE_STRIDES
from ma2mi_jax.models.vae import build_vae_module, quiet_diffusers

MAC = 2  # FLOPs per multiply-add


def _conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def _conv_flops(size_in: int, cin: int, cout: int, kernel: int, stride: int) -> tuple[int, int]:
    """FLOPs of one square conv on a square map, and its output side."""
    out = _conv_out(size_in, kernel, stride, kernel // 2)
    return MAC * kernel * kernel * cin * cout * out * out, out


def resnet18_flops(image_size: int, width: int = 64) -> int:
    """Forward FLOPs of the ResNet18 trunk (no fc) on one image_size x image_size RGB image."""
    total, s = _conv_flops(image_size, 3, width, 7, 2)
    s = _conv_out(s, 3, 2, 1)  # max-pool
    cin = width
    for stage, (blocks, stride) in enumerate(zip(BLOCKS_PER_STAGE, STAGE_STRIDES, strict=True)):
        cout = width * 2**stage
        for b in range(blocks):
            st = stride if b == 0 else 1
            f1, s_out = _conv_flops(s, cin, cout, 3, st)
            f2, _ = _conv_flops(s_out, cout, cout, 3, 1)
            total += f1 + f2
            if st != 1 or cin != cout:
                total += _conv_flops(s, cin, cout, 1, st)[0]
            s, cin = s_out, cout
    return total


def miacnet_flops(image_size: int, width: int = 64, fusion: str = "add") -> int:
    """Forward FLOPs of MIACNet: action trunk, position trunk (unless fusion 'none'), the fusion's conv."""
    trunk = resnet18_flops(image_size, width)
    if fusion == "none":
        return trunk
    total = 2 * trunk
    if fusion in ("concat", "concat_relu", "add_conv"):
        s = image_size
        for _ in range(5):
            s = _conv_out(s, 3, 2, 1)
        c = 8 * width
        cin, k = (c, 3) if fusion == "add_conv" else (2 * c, 1)
        total += MAC * cin * c * k * k * s * s
    return total


def dit_flops(
    variant: str, grid: int, in_channels: int, cond_dim: int = 512, out_channels: int | None = None
) -> int:
    """Forward FLOPs of our DiT on a grid x grid x in_channels input with a cond_dim condition."""
    spec = parse_variant(variant)
    D, p = spec.hidden, spec.patch
    T = (grid // p) ** 2
    out_channels = out_channels or in_channels
    mlp = int(D * spec.mlp_ratio)
    macs = T * p * p * in_channels * D  # patch embedding
    macs += cond_dim * D + D * D  # c-MLP
    per_block = 6 * D * D  # adaLN modulation
    per_block += T * (3 * D * D + D * D + 2 * D * mlp)  # qkv, proj, MLP
    per_block += 2 * T * T * D  # QK^T and attention x V
    macs += spec.depth * per_block
    macs += 2 * D * D + T * D * p * p * out_channels  # final layer
    return MAC * macs


def xla_flops(fn: Callable[..., Any], *args: Any) -> float:
    """FLOPs XLA's cost analysis reports for fn(*args); args may be jax.ShapeDtypeStruct (no compile)."""
    cost = jax.jit(fn).lower(*args).cost_analysis()
    if isinstance(cost, list | tuple):
        cost = cost[0]
    return float(cost["flops"])


def vae_encoder_flops(
    image_size: int,
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512),
    layers_per_block: int = 2,
    latent_channels: int = 4,
) -> float:
    """Forward FLOPs of the SD VAE encoder (mean only) per image, from XLA's cost analysis."""
    module = build_vae_module(block_out_channels, layers_per_block, latent_channels)
    x = jax.ShapeDtypeStruct((1, 3, image_size, image_size), jnp.float32)

    def encode(params: Any, x: jnp.ndarray) -> jnp.ndarray:
        return module.apply({"params": params}, x, method="encode").latent_dist.mean

    with quiet_diffusers():
        params = jax.eval_shape(lambda s: module.init(jax.random.PRNGKey(0), s), x)["params"]
        return xla_flops(encode, params, x)
