"""Frozen VAE wrapper: random init, encode/decode, loading diffusers folders, quiet deprecation."""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any

import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from safetensors.numpy import save_file

from ma2mi_jax import configlib
from ma2mi_jax.models import flops
from ma2mi_jax.models import vae as vae_lib

TINY = {"block_out_channels": (8, 16, 16), "layers_per_block": 1, "latent_channels": 4}
# Writing a diffusers PyTorch-format folder is what a user's downloaded SD-VAE looks like; only the
# tests write one (the library only reads them).
_INDEXED = re.compile(r"^(.*)_(\d+)$")
_ATTN_TO_PT = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def flax_to_pytorch_vae(params: Any) -> dict[str, np.ndarray]:
    """Inverse of `pytorch_to_flax_vae`: Flax params -> diffusers AutoencoderKL state dict (numpy)."""
    state = {}
    for path, value in traverse_util.flatten_dict(params).items():
        *mods, leaf = path
        value = np.asarray(value, dtype=np.float32)
        names = []
        for m in mods:
            if m in _ATTN_TO_PT:
                names.append(_ATTN_TO_PT[m])
                continue
            match = _INDEXED.match(m)
            names.append(f"{match.group(1)}.{match.group(2)}" if match else m)
        if leaf == "kernel":
            value = np.transpose(value, (3, 2, 0, 1)) if value.ndim == 4 else value.T
            leaf = "weight"
        elif leaf == "scale":
            leaf = "weight"
        state[".".join([*names, leaf])] = np.ascontiguousarray(value)
    return state


def save_vae_pytorch_format(folder: str, module: Any, params: Any) -> None:
    """Write config.json + diffusion_pytorch_model.safetensors as diffusers' PyTorch AutoencoderKL would."""
    os.makedirs(folder, exist_ok=True)
    config = {k: v for k, v in dict(module.config).items() if not k.startswith("_")}
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
    config["_class_name"] = "AutoencoderKL"
    config.pop("dtype", None)
    with open(os.path.join(folder, vae_lib.CONFIG_NAME), "w") as f:
        json.dump(config, f, indent=2)
    save_file(flax_to_pytorch_vae(params), os.path.join(folder, vae_lib.PT_WEIGHTS))


SIZE = 32


@pytest.fixture(scope="module")
def tiny_vae() -> vae_lib.FrozenVAE:
    with pytest.warns(UserWarning, match="RANDOMLY INITIALISED VAE"):
        return vae_lib.load_vae("", image_size=SIZE, seed=0, **TINY)


def _frames(seed: int, batch: int = 2) -> jnp.ndarray:
    return jax.random.randint(jax.random.PRNGKey(seed), (batch, SIZE, SIZE, 3), 0, 256).astype(jnp.uint8)


def _assert_same_params(a, b) -> None:
    fa, fb = traverse_util.flatten_dict(a), traverse_util.flatten_dict(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg="/".join(k))


def test_random_vae_shapes_and_scaled_mean(tiny_vae):
    frames = _frames(0)
    assert tiny_vae.latent_grid(SIZE) == 8 and tiny_vae.downsample == 4 and tiny_vae.latent_channels == 4
    z = jax.jit(tiny_vae.encode)(tiny_vae.params, frames)
    assert z.shape == (2, 8, 8, 4) and z.dtype == jnp.float32
    # encode = scaling_factor * posterior mean, frames mapped to [-1, 1] and to NCHW for diffusers.
    x = jnp.transpose(frames.astype(jnp.float32) / 127.5 - 1.0, (0, 3, 1, 2))
    with vae_lib.quiet_diffusers():
        posterior = tiny_vae.module.apply({"params": tiny_vae.params}, x, method="encode").latent_dist
    np.testing.assert_allclose(z, 0.18215 * posterior.mean, rtol=1e-5, atol=1e-6)
    images = jax.jit(tiny_vae.decode)(tiny_vae.params, z)
    assert images.shape == (2, SIZE, SIZE, 3) and images.dtype == jnp.uint8
    # Float frames in [0, 255] give the same latents as uint8.
    np.testing.assert_allclose(tiny_vae.encode(tiny_vae.params, frames.astype(jnp.float32)), z, atol=1e-5)


def test_sd_layout_latent_grid_224_and_same_seed_same_vae(tiny_vae):
    module = vae_lib.build_vae_module()  # SD's (128, 256, 512, 512): downsampling 8
    assert vae_lib.FrozenVAE(module, params=None).latent_grid(224) == 28
    with pytest.raises(ValueError, match="not divisible"):
        vae_lib.FrozenVAE(module, params=None).latent_grid(100)
    again = vae_lib.init_vae_params(tiny_vae.module, SIZE, seed=0)
    _assert_same_params(again, tiny_vae.params)


def test_encode_passes_no_gradient(tiny_vae):
    frames = _frames(1)
    g = jax.grad(lambda p: jnp.sum(tiny_vae.encode(p, frames) ** 2))(tiny_vae.params)
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(g))


def test_pytorch_safetensors_folder_round_trip(tiny_vae, tmp_path):
    folder = str(tmp_path / "vae_pt")
    save_vae_pytorch_format(folder, tiny_vae.module, tiny_vae.params)
    assert sorted(os.listdir(folder)) == ["config.json", "diffusion_pytorch_model.safetensors"]
    from safetensors.numpy import load_file

    keys = set(load_file(os.path.join(folder, vae_lib.PT_WEIGHTS)))
    # diffusers' torch layout: dotted indices, to_q/to_out.0 attention, conv weights [O,I,kh,kw].
    assert "encoder.down_blocks.0.resnets.0.conv1.weight" in keys
    assert "encoder.mid_block.attentions.0.to_out.0.weight" in keys
    loaded = vae_lib.load_vae(folder, image_size=SIZE)
    _assert_same_params(loaded.params, tiny_vae.params)
    frames = _frames(2)
    np.testing.assert_allclose(
        loaded.encode(loaded.params, frames), tiny_vae.encode(tiny_vae.params, frames), atol=1e-6
    )


def test_flax_msgpack_folder(tiny_vae, tmp_path):
    folder = str(tmp_path / "vae_flax")
    with vae_lib.quiet_diffusers():
        tiny_vae.module.save_pretrained(folder, params=tiny_vae.params)
    assert os.path.isfile(os.path.join(folder, vae_lib.FLAX_WEIGHTS))
    loaded = vae_lib.load_vae(folder, image_size=SIZE)
    _assert_same_params(loaded.params, tiny_vae.params)


def test_torch_diffusers_autoencoder_matches(tmp_path):
    """A folder written by diffusers' PyTorch AutoencoderKL loads without torch and encodes the same."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ref = diffusers.AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=TINY["block_out_channels"],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=SIZE,
    ).eval()
    with torch.no_grad():  # move every weight off its init so a mis-mapped key shows
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folder = str(tmp_path / "vae_torch")
    ref.save_pretrained(folder, safe_serialization=True)
    loaded = vae_lib.load_vae(folder, image_size=SIZE)
    frames = _frames(3)
    x = torch.from_numpy(np.asarray(frames, np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2)
    with torch.no_grad():
        want = ref.encode(x).latent_dist.mean.permute(0, 2, 3, 1).numpy() * 0.18215
    np.testing.assert_allclose(loaded.encode(loaded.params, frames), want, rtol=1e-3, atol=1e-4)


def test_missing_and_bad_folders(tiny_vae, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere.*vae\.path"):
        vae_lib.load_vae(str(tmp_path / "nowhere"), image_size=SIZE)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        vae_lib.load_vae(str(empty), image_size=SIZE)
    folder = str(tmp_path / "broken")
    save_vae_pytorch_format(folder, tiny_vae.module, tiny_vae.params)
    from safetensors.numpy import load_file, save_file

    path = os.path.join(folder, vae_lib.PT_WEIGHTS)
    state = load_file(path)
    del state["decoder.conv_out.bias"]
    state["encoder.extra.weight"] = np.zeros(3, np.float32)
    state["encoder.conv_in.weight"] = np.zeros((8, 3, 5, 5), np.float32)
    save_file(state, path)
    with pytest.raises(ValueError) as err:
        vae_lib.load_vae(folder, image_size=SIZE)
    msg = str(err.value)
    assert (
        "decoder/conv_out/bias" in msg and "encoder.extra.weight" in msg and "encoder.conv_in.weight" in msg
    )


def test_vae_from_config_and_quiet_deprecation():
    cfg = configlib.pretrain_base()
    cfg.vae.block_out_channels, cfg.vae.layers_per_block = TINY["block_out_channels"], 1
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    root = logging.getLogger("diffusers")
    root.addHandler(handler)
    try:
        with pytest.warns(UserWarning, match="vae.path"):
            vae = vae_lib.vae_from_config(cfg.vae, image_size=SIZE, seed=1)
        jax.jit(vae.encode)(vae.params, _frames(4))  # traces every diffusers Flax module
        assert not [r for r in records if vae_lib.DEPRECATION_PREFIX in r.getMessage()]
        # Outside the wrapper diffusers still speaks: the filter is scoped to our calls.
        jax.eval_shape(lambda x: vae.module.init(jax.random.PRNGKey(0), x), jnp.zeros((1, 3, 8, 8)))
        assert [r for r in records if vae_lib.DEPRECATION_PREFIX in r.getMessage()]
    finally:
        root.removeHandler(handler)
    assert vae.latent_grid(SIZE) == 8 and vae.scaling_factor == pytest.approx(0.18215)


def test_vae_encoder_flops_from_xla():
    tiny = flops.vae_encoder_flops(SIZE, **TINY)
    # The first conv alone (3x3, 3 -> 8 channels at 32x32) is ~0.44 MFLOPs; the tiny encoder is ~7M.
    assert 2 * 9 * 3 * 8 * SIZE * SIZE < tiny < 2e7
    # Convolutions grow with the pixel count (x4); the mid-block attention grows with its square.
    assert 4 * tiny < flops.vae_encoder_flops(2 * SIZE, **TINY) < 5 * tiny
