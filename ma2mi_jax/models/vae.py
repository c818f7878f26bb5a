"""The frozen Stable-Diffusion VAE (diffusers' FlaxAutoencoderKL) as pure encode/decode functions.

`load_vae` reads a local diffusers-format folder: Flax `diffusion_flax_model.msgpack`, or PyTorch
`diffusion_pytorch_model.safetensors` converted here without PyTorch. With no path it builds a
randomly initialised VAE and warns loudly (tests and the synthetic quick start only). The VAE's
parameters are a separate pytree that no optimiser ever sees; `encode` stops gradients.
diffusers 0.39 logs a deprecation warning for its Flax classes on every trace; it is silenced
inside this module only (`quiet_diffusers`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
FLAX_WEIGHTS = "diffusion_flax_model.msgpack"
PT_WEIGHTS = "diffusion_pytorch_model.safetensors"
# diffusers modules whose Flax classes log the deprecation notice (on every trace, in setup()).
_DIFFUSERS_LOGGERS = (
    "diffusers.models.vae_flax",
    "diffusers.models.modeling_flax_utils",
    "diffusers.models.attention_flax",
    "diffusers.models.resnet_flax",
    "diffusers.models.embeddings_flax",
    "diffusers.models.unets.unet_2d_blocks_flax",
)
DEPRECATION_PREFIX = "Flax classes are deprecated"
# Stable Diffusion's latent scaling (diffusers' default when a config.json names none).
SD_SCALING_FACTOR = 0.18215
# diffusers' GroupNorm default; smaller widths (tiny configs) use the largest divisor that fits.
MAX_NORM_GROUPS = 32
RANDOM_VAE_WARNING = (
    "vae.path is empty: using a RANDOMLY INITIALISED VAE. Latents and reconstructions mean nothing; "
    "this is only for tests and the synthetic quick start. For a real run set --config.vae.path to a "
    "local diffusers-format sd-vae-ft-ema folder (see third_party/README)."
)


class _DropFlaxDeprecation(logging.Filter):
    """Drops only diffusers' "Flax classes are deprecated" records."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(DEPRECATION_PREFIX)


_DROP = _DropFlaxDeprecation()


@contextlib.contextmanager
def quiet_diffusers() -> Iterator[None]:
    """Silence diffusers' Flax deprecation notice (its log record and warnings) inside the block only."""
    loggers = [logging.getLogger(n) for n in _DIFFUSERS_LOGGERS]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=f".*{DEPRECATION_PREFIX}.*")
        warnings.simplefilter("ignore", FutureWarning)
        for lg in loggers:
            lg.addFilter(_DROP)
        try:
            yield
        finally:
            for lg in loggers:
                lg.removeFilter(_DROP)


with quiet_diffusers():
    from diffusers import FlaxAutoencoderKL
    from diffusers.models.modeling_flax_pytorch_utils import rename_key, rename_key_and_reshape_tensor


def _norm_groups(block_out_channels: tuple[int, ...]) -> int:
    groups = MAX_NORM_GROUPS
    while any(c % groups for c in block_out_channels):
        groups //= 2
    return groups


def build_vae_module(
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512),
    layers_per_block: int = 2,
    latent_channels: int = 4,
    scaling_factor: float = 0.18215,
) -> FlaxAutoencoderKL:
    """A FlaxAutoencoderKL with SD's layout (one down/up block per entry of block_out_channels)."""
    n = len(block_out_channels)
    config = {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * n,
        "up_block_types": ("UpDecoderBlock2D",) * n,
        "block_out_channels": tuple(int(c) for c in block_out_channels),
        "layers_per_block": int(layers_per_block),
        "act_fn": "silu",
        "latent_channels": int(latent_channels),
        "norm_num_groups": _norm_groups(tuple(block_out_channels)),
        "scaling_factor": float(scaling_factor),
    }
    with quiet_diffusers():
        return FlaxAutoencoderKL.from_config(config)


@dataclass
class FrozenVAE:
    """A frozen VAE: `module` (FlaxAutoencoderKL), its `params` pytree and the latent scaling factor."""

    module: FlaxAutoencoderKL
    params: Any
    scaling_factor: float = 0.18215

    @property
    def downsample(self) -> int:
        """Spatial reduction factor image -> latent (8 for SD's four blocks)."""
        return 2 ** (len(self.module.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        """Channels of the latent (4 for SD)."""
        return int(self.module.config.latent_channels)

    def latent_grid(self, image_size: int) -> int:
        """Latent side for a square image of image_size pixels (28 at 224 for SD)."""
        if image_size % self.downsample:
            raise ValueError(
                f"data.image_size={image_size} is not divisible by the VAE's downsampling {self.downsample}"
            )
        return image_size // self.downsample

    def encode(self, params: Any, frames: jnp.ndarray) -> jnp.ndarray:
        """frames uint8/float [B,H,W,3] in [0,255] -> scaled latent mean f32[B,H/f,W/f,C], no gradient."""
        params = jax.lax.stop_gradient(params)
        x = frames.astype(jnp.float32) / 127.5 - 1.0  # [-1, 1]
        x = jnp.transpose(x, (0, 3, 1, 2))  # NCHW, as diffusers' Flax VAE expects
        with quiet_diffusers():
            out = self.module.apply({"params": params}, x, method="encode")
        mean = out.latent_dist.mean  # [B,h,w,C]: diffusers returns moments channel-last
        return jax.lax.stop_gradient(mean.astype(jnp.float32) * self.scaling_factor)

    def decode_float(self, params: Any, latents: jnp.ndarray) -> jnp.ndarray:
        """Scaled latents [B,h,w,C] -> float images [B,H,W,3] in [-1,1] (unclipped)."""
        z = latents.astype(jnp.float32) / self.scaling_factor
        with quiet_diffusers():
            out = self.module.apply({"params": params}, z, method="decode")
        return jnp.transpose(out.sample, (0, 2, 3, 1))  # NCHW -> NHWC

    def decode(self, params: Any, latents: jnp.ndarray) -> jnp.ndarray:
        """Scaled latents [B,h,w,C] -> uint8 images [B,H,W,3] (for pictures)."""
        x = self.decode_float(params, latents)
        return jnp.clip(jnp.round((x + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def init_vae_params(module: FlaxAutoencoderKL, image_size: int, seed: int = 0) -> Any:
    """Random VAE parameters (float32) for a square image_size input; same seed, same parameters.

    Uses an "rbg" key under jit: XLA compiles this initialisation faster on a CPU than with the
    default threefry key, and a random VAE is only ever a stand-in for tests
    (docs/decisions.md#rbg-key-for-random-initialisation).
    """
    x = jnp.zeros((1, 3, image_size, image_size), jnp.float32)
    with quiet_diffusers():
        return jax.jit(module.init)(jax.random.key(seed, impl="rbg"), x)["params"]


def _param_shapes(module: FlaxAutoencoderKL) -> dict[tuple[str, ...], Any]:
    size = 2 ** (len(module.config.block_out_channels) - 1) * 2
    x = jax.ShapeDtypeStruct((1, 3, size, size), jnp.float32)
    with quiet_diffusers():
        shapes = jax.eval_shape(lambda s: module.init(jax.random.PRNGKey(0), s), x)["params"]
    return traverse_util.flatten_dict(shapes)


def pytorch_to_flax_vae(state: dict[str, np.ndarray], module: FlaxAutoencoderKL, source: str = "") -> Any:
    """Convert a diffusers AutoencoderKL state dict (numpy) to Flax params; strict about keys and shapes."""
    expected = _param_shapes(module)
    out: dict[tuple[str, ...], jnp.ndarray] = {}
    unexpected, misshaped = [], []
    for pt_key, tensor in state.items():
        tensor = np.asarray(tensor, dtype=np.float32)
        pt_tuple = tuple(rename_key(pt_key).split("."))
        try:
            flax_key, flax_tensor = rename_key_and_reshape_tensor(pt_tuple, tensor, expected)
        except AssertionError:
            misshaped.append(f"{pt_key}: {tensor.shape}")
            continue
        if flax_key not in expected:
            unexpected.append(pt_key)
        elif tuple(flax_tensor.shape) != tuple(expected[flax_key].shape):
            misshaped.append(f"{pt_key}: {tensor.shape} -> expected {tuple(expected[flax_key].shape)}")
        else:
            out[flax_key] = jnp.asarray(flax_tensor)
    missing = ["/".join(k) for k in expected if k not in out]
    if missing or unexpected or misshaped:
        lines = [f"{source or 'VAE state dict'} does not match the VAE described by its config.json:"]
        if missing:
            lines.append(f"  missing ({len(missing)}): {', '.join(sorted(missing))}")
        if unexpected:
            lines.append(f"  unexpected ({len(unexpected)}): {', '.join(sorted(unexpected))}")
        if misshaped:
            lines.append(f"  wrong shape ({len(misshaped)}): {'; '.join(misshaped)}")
        raise ValueError("\n".join(lines))
    return traverse_util.unflatten_dict(out)


def _load_folder(path: str) -> tuple[FlaxAutoencoderKL, Any]:
    if not os.path.isfile(os.path.join(path, CONFIG_NAME)):
        raise FileNotFoundError(f"VAE folder {path} (config key vae.path) has no {CONFIG_NAME}")
    with open(os.path.join(path, CONFIG_NAME)) as f:
        config = json.load(f)
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    if os.path.isfile(os.path.join(path, FLAX_WEIGHTS)):
        with quiet_diffusers():
            module, params = FlaxAutoencoderKL.from_pretrained(path, dtype=jnp.float32)
        return module, params
    if os.path.isfile(os.path.join(path, PT_WEIGHTS)):
        from safetensors.numpy import load_file

        with quiet_diffusers():
            module = FlaxAutoencoderKL.from_config(config)
        source = os.path.join(path, PT_WEIGHTS)
        return module, pytorch_to_flax_vae(load_file(source), module, source)
    raise FileNotFoundError(
        f"VAE folder {path} (config key vae.path) has neither {FLAX_WEIGHTS} nor {PT_WEIGHTS}; "
        "download sd-vae-ft-ema in diffusers format (see third_party/README)"
    )


def load_vae(
    path: str,
    *,
    image_size: int,
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512),
    layers_per_block: int = 2,
    latent_channels: int = 4,
    scaling_factor: float = 0.0,
    seed: int = 0,
) -> FrozenVAE:
    """Load a diffusers-format VAE folder, or build a random one (loud warning) when path is "".

    `scaling_factor` 0 takes the folder's config.json value (SD's 0.18215 for the random VAE); any
    other value overrides it, with a warning when they differ.
    """
    if not path:
        log.warning(RANDOM_VAE_WARNING)
        warnings.warn(RANDOM_VAE_WARNING, UserWarning, stacklevel=2)
        scaling_factor = scaling_factor or SD_SCALING_FACTOR
        module = build_vae_module(block_out_channels, layers_per_block, latent_channels, scaling_factor)
        params = init_vae_params(module, image_size, seed)
    else:
        if not os.path.isdir(path):
            raise FileNotFoundError(
                f"VAE folder not found: {path} (config key vae.path); set it to a local diffusers-format "
                "sd-vae-ft-ema folder, or to '' for a random VAE (tests only)"
            )
        module, params = _load_folder(path)
        file_factor = float(module.config.get("scaling_factor", SD_SCALING_FACTOR))
        if not scaling_factor:
            scaling_factor = file_factor
        elif not np.isclose(file_factor, scaling_factor):
            log.warning(
                "%s: config.json scaling_factor %.5f differs from vae.scaling_factor %.5f; using the latter",
                path,
                file_factor,
                scaling_factor,
            )
    vae = FrozenVAE(module=module, params=params, scaling_factor=float(scaling_factor))
    vae.latent_grid(image_size)  # validates divisibility early
    return vae


def vae_from_config(vae_cfg: Any, image_size: int, seed: int = 0) -> FrozenVAE:
    """FrozenVAE from config.vae (path, scaling_factor, block_out_channels, layers_per_block, ...)."""
    return load_vae(
        str(vae_cfg.path),
        image_size=int(image_size),
        block_out_channels=tuple(vae_cfg.block_out_channels),
        layers_per_block=int(vae_cfg.layers_per_block),
        latent_channels=int(vae_cfg.latent_channels),
        scaling_factor=float(vae_cfg.scaling_factor),
        seed=int(seed),
    )
