"""DiT conditioned on the MIACNet vector c (adaLN-Zero), predicting the next latent (docs/method.md, Eq. 8).

Follows facebookresearch/DiT (models.py) with these changes: no timestep and no label embedding;
c goes through a Dense-SiLU-Dense MLP (the shape of DiT's TimestepEmbedder MLP) to the hidden size
and drives adaLN-Zero modulation in every block and in the final layer; no learned sigma (the
output has `out_channels`, default = input channels). The 2-D sin-cos position embedding is fixed
and computed for the actual token grid, so any latent (28x28 at 224) or pixel grid works.
With `map_condition` (beyond the paper, docs/method.md) the fused map
MIACNet pools into c is also resized to the token grid and added to the tokens through a
zero-initialised Dense, so at initialisation the model is the paper's.
Forward FLOPs per sample: `flops.dit_flops(variant, grid, in_channels)`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ma2mi_jax.precision import at_least_f32


@dataclass(frozen=True)
class DiTSpec:
    """Size of a DiT variant: blocks, hidden width, attention heads, patch side, MLP ratio."""

    depth: int
    hidden: int
    heads: int
    patch: int
    mlp_ratio: float = 4.0


# DiT paper, Table 1 (S, B, L, XL); T is a tiny size for CPU tests.
VARIANTS: dict[str, tuple[int, int, int]] = {
    "T": (2, 64, 4),
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}
_NAME = re.compile(r"^(?P<size>[A-Za-z]+)/(?P<patch>\d+)$")
# DiT's LayerNorms: no affine parameters, eps 1e-6; adaLN modulation chunks per block.
LN_EPS = 1e-6
BLOCK_MODULATIONS = 6
FINAL_MODULATIONS = 2
# DiT initialises the timestep-embedding MLP with N(0, 0.02); we keep it for the c-MLP.
COND_INIT_STD = 0.02
POS_EMBED_BASE = 10000.0


def parse_variant(name: str) -> DiTSpec:
    """Parse "B/2", "XL/8", "T/4" ... into a DiTSpec; unknown names raise ValueError listing valid ones."""
    m = _NAME.match(str(name).strip())
    valid = ", ".join(f"{k}/<patch>" for k in VARIANTS)
    if m is None or m.group("size").upper() not in VARIANTS or int(m.group("patch")) < 1:
        raise ValueError(f"unknown DiT variant {name!r} (config key model.dit); valid: {valid}, e.g. 'B/2'")
    depth, hidden, heads = VARIANTS[m.group("size").upper()]
    return DiTSpec(depth=depth, hidden=hidden, heads=heads, patch=int(m.group("patch")))


def sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    """DiT's get_1d_sincos_pos_embed_from_grid: positions [M] -> [M, dim] = [sin, cos]."""
    omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
    omega = 1.0 / POS_EMBED_BASE**omega  # [dim/2]
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)  # [M, dim/2]
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int) -> np.ndarray:
    """DiT's fixed 2-D sin-cos embedding for a grid_h x grid_w token grid -> [grid_h*grid_w, dim]."""
    if dim % 4:
        raise ValueError(f"DiT hidden size {dim} must be divisible by 4 for the 2-D sin-cos embedding")
    gw, gh = np.meshgrid(np.arange(grid_w), np.arange(grid_h))  # [gh, gw] each, row-major tokens
    # DiT: emb_h uses grid[0] (the column index), emb_w uses grid[1] (the row index).
    return np.concatenate([sincos_1d(dim // 2, gw), sincos_1d(dim // 2, gh)], axis=1).astype(np.float32)


def patchify(x: jnp.ndarray, p: int) -> jnp.ndarray:
    """[B,H,W,C] -> [B,(H/p)*(W/p),p*p*C] tokens in row-major order."""
    B, H, W, C = x.shape
    x = x.reshape(B, H // p, p, W // p, p, C).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(B, (H // p) * (W // p), p * p * C)


def unpatchify(x: jnp.ndarray, p: int, h: int, w: int) -> jnp.ndarray:
    """[B,h*w,p*p*C] -> [B,h*p,w*p,C] (inverse of `patchify`)."""
    B, _, D = x.shape
    C = D // (p * p)
    x = x.reshape(B, h, w, p, p, C).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(B, h * p, w * p, C)


def modulate(x: jnp.ndarray, shift: jnp.ndarray, scale: jnp.ndarray) -> jnp.ndarray:
    """x [B,T,D] * (1 + scale[B,D]) + shift[B,D]."""
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


def _dense(features: int, dtype: Any, name: str, zero: bool = False, std: float | None = None) -> nn.Dense:
    if zero:
        kernel_init = nn.initializers.zeros
    elif std is not None:
        kernel_init = nn.initializers.normal(std)
    else:
        kernel_init = nn.initializers.xavier_uniform()
    return nn.Dense(
        features,
        kernel_init=kernel_init,
        bias_init=nn.initializers.zeros,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


def _layer_norm(name: str, dtype: Any) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LN_EPS, use_bias=False, use_scale=False, dtype=dtype, name=name)


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero: gated attention and MLP, modulated by the condition."""

    hidden: int
    heads: int
    mlp_ratio: float = 4.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, cond: jnp.ndarray) -> jnp.ndarray:
        """x [B,T,D], cond [B,D] -> [B,T,D]."""
        B, T, D = x.shape
        mods = _dense(BLOCK_MODULATIONS * D, self.dtype, "adaLN_modulation", zero=True)(nn.silu(cond))
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = jnp.split(
            mods, BLOCK_MODULATIONS, -1
        )

        y = modulate(_layer_norm("norm1", self.dtype)(x), shift_msa, scale_msa)
        qkv = _dense(3 * D, self.dtype, "qkv")(y).reshape(B, T, 3, self.heads, D // self.heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B,T,N,H] each
        y = jax.nn.dot_product_attention(q, k, v).reshape(B, T, D)
        y = _dense(D, self.dtype, "proj")(y)
        x = x + gate_msa[:, None, :] * y

        y = modulate(_layer_norm("norm2", self.dtype)(x), shift_mlp, scale_mlp)
        y = _dense(int(D * self.mlp_ratio), self.dtype, "fc1")(y)
        y = nn.gelu(y, approximate=True)
        y = _dense(D, self.dtype, "fc2")(y)
        return x + gate_mlp[:, None, :] * y


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm + zero-initialised linear to patch pixels."""

    patch: int
    out_channels: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, cond: jnp.ndarray) -> jnp.ndarray:
        """x [B,T,D], cond [B,D] -> [B,T,p*p*out]."""
        D = x.shape[-1]
        mods = _dense(FINAL_MODULATIONS * D, self.dtype, "adaLN_modulation", zero=True)(nn.silu(cond))
        shift, scale = jnp.split(mods, FINAL_MODULATIONS, -1)
        x = modulate(_layer_norm("norm_final", self.dtype)(x), shift, scale)
        return _dense(self.patch * self.patch * self.out_channels, self.dtype, "linear", zero=True)(x)


class DiT(nn.Module):
    """DiT(z [B,H,W,Cin], c [B,Dc]) -> prediction [B,H,W,out_channels or Cin] in float32.

    `residual`: the prediction is z + DiT's output, so the zero-initialised final layer starts
    exactly at "copy z" and everything learned is the change z_{t+k} - z_t (docs/method.md;
    docs/decisions.md#residual-dit).
    """

    variant: str = "B/2"
    out_channels: int | None = None
    dtype: Any = jnp.float32
    residual: bool = False
    map_condition: bool = False

    @property
    def spec(self) -> DiTSpec:
        """Sizes parsed from `variant`."""
        return parse_variant(self.variant)

    @nn.compact
    def __call__(self, z: jnp.ndarray, c: jnp.ndarray, cmap: jnp.ndarray | None = None) -> jnp.ndarray:
        """z [B,H,W,Cin] latent (or pixels), c [B,Dc], cmap [B,h',w',Dc] (map_condition) -> [B,H,W,Cout]."""
        spec = self.spec
        _, H, W, C = z.shape
        p = spec.patch
        if H % p or W % p:
            raise ValueError(
                f"DiT {self.variant}: input grid {H}x{W} is not divisible by the patch size {p}; "
                "change model.dit or data.image_size"
            )
        h, w = H // p, W // p
        out_channels = self.out_channels or C

        x = _dense(spec.hidden, self.dtype, "x_embedder")(patchify(z.astype(self.dtype), p))  # [B,T,D]
        x = x + jnp.asarray(sincos_2d(spec.hidden, h, w), self.dtype)[None]
        if self.map_condition:
            if cmap is None:
                raise ValueError("DiT(map_condition=True) needs the fused map cmap [B,h',w',Dc]")
            B, Dc = cmap.shape[0], cmap.shape[-1]
            grid_map = jax.image.resize(cmap.astype(self.dtype), (B, h, w, Dc), "linear")  # [B,h,w,Dc]
            x = x + _dense(spec.hidden, self.dtype, "map_embedder", zero=True)(grid_map.reshape(B, h * w, Dc))

        cond = _dense(spec.hidden, self.dtype, "c_embedder_0", std=COND_INIT_STD)(c.astype(self.dtype))
        cond = _dense(spec.hidden, self.dtype, "c_embedder_2", std=COND_INIT_STD)(nn.silu(cond))  # [B,D]

        for i in range(spec.depth):
            x = DiTBlock(spec.hidden, spec.heads, spec.mlp_ratio, self.dtype, name=f"blocks_{i}")(x, cond)
        x = FinalLayer(p, out_channels, self.dtype, name="final_layer")(x, cond)  # [B,T,p*p*Cout]
        out = at_least_f32(unpatchify(x, p, h, w))  # [B,H,W,Cout]
        if self.residual:
            if out_channels != C:
                raise ValueError(f"a residual DiT needs out_channels = input channels ({out_channels}, {C})")
            out = out + at_least_f32(z)
        return out
