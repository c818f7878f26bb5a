"""ResNet18 trunk (torchvision layout, NHWC, BatchNorm) without pooling or fc.

Module and parameter names follow torchvision's state-dict keys so that the ImageNet weights map
one-to-one (see `resnet_import.py`): `conv1`, `bn1`, `layer{1..4}_{0,1}` with `conv1`, `bn1`,
`conv2`, `bn2`, `downsample_conv`, `downsample_bn`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# torchvision's BatchNorm2d: momentum 0.1 (Flax keeps 1 - momentum of the old value), eps 1e-5.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
# torchvision ResNet18: two BasicBlocks per stage, strides of the four stages.
BLOCKS_PER_STAGE = (2, 2, 2, 2)
STAGE_STRIDES = (1, 2, 2, 2)
# Total downsampling of the trunk (stem conv /2, max-pool /2, three strided stages).
TRUNK_STRIDE = 32

# torchvision initialises convolutions with kaiming_normal_(mode="fan_out", nonlinearity="relu").
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _bn(name: str, train: bool, dtype: Any) -> nn.BatchNorm:
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


def max_pool_reduce_window(x: jnp.ndarray) -> jnp.ndarray:
    """torchvision's stem max-pool (3x3, stride 2, padding 1) by reduce_window: [B,H,W,C] -> [B,H/2,W/2,C]."""
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


@dataclasses.dataclass(frozen=True)
class TrunkOps:
    """The trunk's convolution primitive and stem max-pool: XLA's own unless `cpu.kernels` swaps them."""

    conv_general_dilated: Callable = jax.lax.conv_general_dilated
    stem_max_pool: Callable = max_pool_reduce_window


def _conv(features: int, kernel: int, stride: int, name: str, dtype: Any, ops: TrunkOps) -> nn.Conv:
    pad = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        kernel_init=conv_init,
        dtype=dtype,
        param_dtype=jnp.float32,
        conv_general_dilated=ops.conv_general_dilated,
        name=name,
    )


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: conv3x3-BN-ReLU-conv3x3-BN + (downsampled) identity, ReLU."""

    features: int
    stride: int = 1
    dtype: Any = jnp.float32
    ops: TrunkOps = TrunkOps()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """x: [B,H,W,Cin] -> [B,H/stride,W/stride,features]."""
        y = _conv(self.features, 3, self.stride, "conv1", self.dtype, self.ops)(x)
        y = nn.relu(_bn("bn1", train, self.dtype)(y))
        y = _conv(self.features, 3, 1, "conv2", self.dtype, self.ops)(y)
        y = _bn("bn2", train, self.dtype)(y)
        if self.stride != 1 or x.shape[-1] != self.features:
            x = _conv(self.features, 1, self.stride, "downsample_conv", self.dtype, self.ops)(x)
            x = _bn("downsample_bn", train, self.dtype)(x)
        return nn.relu(y + x)


class ResNet18Trunk(nn.Module):
    """ResNet18 up to layer4: [B,H,W,3] normalised image -> [B,H/32,W/32,8*width] feature map.

    `width` is the base width (64 = torchvision); tests use 8. Parameters are float32, compute
    runs in `dtype`; `ops` are XLA's convolution and max-pool unless `cpu.kernels.trunk_ops()`
    supplies the CPU forms (same parameters, same values up to rounding).
    Forward FLOPs: `flops.resnet18_flops(image_size, width)` (3.63 GFLOPs at 224).
    """

    width: int = 64
    dtype: Any = jnp.float32
    ops: TrunkOps = TrunkOps()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """x: [B,H,W,3] (already normalised) -> [B,ceil(H/32),ceil(W/32),8*width]."""
        x = x.astype(self.dtype)
        x = _conv(self.width, 7, 2, "conv1", self.dtype, self.ops)(x)  # [B,H/2,W/2,w]
        x = nn.relu(_bn("bn1", train, self.dtype)(x))
        x = self.ops.stem_max_pool(x)  # [B,H/4,W/4,w]
        for stage, (blocks, stride) in enumerate(zip(BLOCKS_PER_STAGE, STAGE_STRIDES, strict=True)):
            features = self.width * 2**stage
            for b in range(blocks):
                name = f"layer{stage + 1}_{b}"
                x = BasicBlock(features, stride if b == 0 else 1, self.dtype, self.ops, name=name)(x, train)
        return x  # [B,H/32,W/32,8*width]


def feature_grid(image_size: int) -> int:
    """Side of the trunk's output map for a square input of `image_size` pixels."""
    size = image_size
    # stem conv (k7 s2 p3), max-pool (k3 s2 p1), then three stride-2 3x3 convs (p1).
    size = (size + 2 * 3 - 7) // 2 + 1
    size = (size + 2 * 1 - 3) // 2 + 1
    for _ in range(3):
        size = (size + 2 * 1 - 3) // 2 + 1
    return size
