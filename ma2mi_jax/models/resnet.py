"""ResNet18 trunk (torchvision layout, NHWC, BatchNorm) without pooling or fc.

Module and parameter names follow torchvision's state-dict keys so that the ImageNet weights map
one-to-one (see `resnet_import.py`): `conv1`, `bn1`, `layer{1..4}_{0,1}` with `conv1`, `bn1`,
`conv2`, `bn2`, `downsample_conv`, `downsample_bn`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ma2mi_jax.cpu import small_map_conv

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


def _conv(features: int, kernel: int, stride: int, name: str, dtype: Any) -> nn.Conv:
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
        conv_general_dilated=small_map_conv.conv_general_dilated,  # layer4's 2x2 maps as a product
        name=name,
    )


def max_pool_reduce_window(x: jnp.ndarray) -> jnp.ndarray:
    """torchvision's stem max-pool (3x3, stride 2, padding 1) by reduce_window: [B,H,W,C] -> [B,H/2,W/2,C]."""
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def _pool_slices(x: jnp.ndarray) -> list[jnp.ndarray]:
    """The nine strided slices [B,Ho,Wo,C] of x [B,H,W,C] padded by -inf, window tap t = 3 * row + col."""
    _, h, w, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)  # [B,H+2,W+2,C]
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    return [padded[:, i : i + 2 * ho : 2, j : j + 2 * wo : 2] for i in range(3) for j in range(3)]


def _select_first_max(slices: list[jnp.ndarray]) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(max-pool output, tap of the first maximum in row-major window order int[B,Ho,Wo,C])."""
    first_max = jax.lax.stop_gradient(jnp.argmax(jnp.stack(slices), axis=0))  # [B,Ho,Wo,C] in 0..8
    out = jnp.zeros_like(slices[0])
    for i, window in enumerate(slices):
        out = jnp.where(first_max == i, window, out)
    return out, first_max


def _next(a: jnp.ndarray, axis: int) -> jnp.ndarray:
    """a shifted by one place towards the start along `axis` (a[i+1]), zero past the end."""
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, 1)
    return jnp.pad(jax.lax.slice_in_dim(a, 1, a.shape[axis], axis=axis), pad)


def _max_pool_even_fwd(x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(output, first-maximum taps): the taps are what the phase-wise gradient needs."""
    return _select_first_max(_pool_slices(x))


@jax.custom_vjp
def _max_pool_even(x: jnp.ndarray) -> jnp.ndarray:
    """`max_pool_by_slices` for even H and W, with the gradient assembled per stride-2 phase."""
    return _max_pool_even_fwd(x)[0]


def _max_pool_even_bwd(first_max: jnp.ndarray, g: jnp.ndarray) -> tuple[jnp.ndarray]:
    """Input row 2a is window a's middle row; row 2a+1 is window a's last and window a+1's first
    (columns alike), so each input place sums at most four windows' gradients, in window order."""
    G = [jnp.where(first_max == t, g, jnp.zeros_like(g)) for t in range(9)]  # [B,Ho,Wo,C] each
    ee = G[4]  # rows 2a, columns 2b
    eo = G[5] + _next(G[3], 2)  # rows 2a, columns 2b+1
    oe = G[7] + _next(G[1], 1)  # rows 2a+1, columns 2b
    oo = G[8] + _next(G[6], 2) + _next(G[2], 1) + _next(_next(G[0], 1), 2)
    b, ho, wo, c = g.shape
    dx = jnp.stack([jnp.stack([ee, eo], 3), jnp.stack([oe, oo], 3)], 2)  # [B,Ho,2,Wo,2,C]
    return (dx.reshape(b, 2 * ho, 2 * wo, c),)


_max_pool_even.defvjp(_max_pool_even_fwd, _max_pool_even_bwd)


def max_pool_by_slices(x: jnp.ndarray) -> jnp.ndarray:
    """The same max-pool as a selection among the window's nine strided slices.

    Same values and the same gradient as `max_pool_reduce_window`, ties included (the gradient goes
    to the first maximum in row-major window order, as XLA's select-and-scatter does), and faster
    forward + backward on XLA:CPU (docs/decisions.md#max-pool-by-slices-on-the-cpu). For even sides
    the gradient is assembled per stride-2 phase (at most four windows reach an input place) instead
    of as nine padded slices (docs/decisions.md#phase-wise-max-pool-gradient).
    """
    _, h, w, _ = x.shape
    if h % 2 == 0 and w % 2 == 0:
        return _max_pool_even(x)
    return _select_first_max(_pool_slices(x))[0]  # [B,Ho,Wo,C], gradient by autodiff


def stem_max_pool(x: jnp.ndarray) -> jnp.ndarray:
    """The stem's max-pool in the formulation fastest on the default backend (slices on the CPU)."""
    return max_pool_by_slices(x) if jax.default_backend() == "cpu" else max_pool_reduce_window(x)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: conv3x3-BN-ReLU-conv3x3-BN + (downsampled) identity, ReLU."""

    features: int
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """x: [B,H,W,Cin] -> [B,H/stride,W/stride,features]."""
        y = _conv(self.features, 3, self.stride, "conv1", self.dtype)(x)
        y = nn.relu(_bn("bn1", train, self.dtype)(y))
        y = _conv(self.features, 3, 1, "conv2", self.dtype)(y)
        y = _bn("bn2", train, self.dtype)(y)
        if self.stride != 1 or x.shape[-1] != self.features:
            x = _conv(self.features, 1, self.stride, "downsample_conv", self.dtype)(x)
            x = _bn("downsample_bn", train, self.dtype)(x)
        return nn.relu(y + x)


class ResNet18Trunk(nn.Module):
    """ResNet18 up to layer4: [B,H,W,3] normalised image -> [B,H/32,W/32,8*width] feature map.

    `width` is the base width (64 = torchvision); tests use 8. Parameters are float32, compute
    runs in `dtype`. Forward FLOPs: `flops.resnet18_flops(image_size, width)` (3.63 GFLOPs at 224).
    """

    width: int = 64
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """x: [B,H,W,3] (already normalised) -> [B,ceil(H/32),ceil(W/32),8*width]."""
        x = x.astype(self.dtype)
        x = _conv(self.width, 7, 2, "conv1", self.dtype)(x)  # [B,H/2,W/2,w]
        x = nn.relu(_bn("bn1", train, self.dtype)(x))
        x = stem_max_pool(x)  # [B,H/4,W/4,w]
        for stage, (blocks, stride) in enumerate(zip(BLOCKS_PER_STAGE, STAGE_STRIDES, strict=True)):
            features = self.width * 2**stage
            for b in range(blocks):
                x = BasicBlock(features, stride if b == 0 else 1, self.dtype, name=f"layer{stage + 1}_{b}")(
                    x, train
                )
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
