"""The domain autoencoder: trains, writes a diffusers folder, and loads back through vae.path."""

import json
import os

import jax
import numpy as np
import pytest

from ma2mi_jax.data.readers import registry as readers
from ma2mi_jax.models import vae as vae_lib
from ma2mi_jax.train import autoencoder
from tests.helpers.configs import REPO, config_file
from tests.helpers.pretrain import make_dfew


def _config(root: str):
    config = config_file(os.path.join(REPO, "configs", "synthetic_autoencoder.py"), "tiny")
    config.data.root = root
    return config


def test_psnr_at_known_values():
    x = np.full((2, 4, 4, 3), 100, np.uint8)
    assert autoencoder.psnr(x, x + 1) == pytest.approx(20 * np.log10(255.0))
    assert autoencoder.psnr(x, x + 10) == pytest.approx(20 * np.log10(25.5))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = make_dfew(str(tmp_path_factory.mktemp("dfew") / "DFEW"))
    out = str(tmp_path_factory.mktemp("vae") / "vae")
    config = _config(root)
    summary = autoencoder.train_autoencoder(config, out)
    return config, out, summary


def test_writes_a_diffusers_folder_with_picture_and_summary(trained):
    _, out, summary = trained
    assert sorted(os.listdir(out)) == sorted(
        [vae_lib.CONFIG_NAME, vae_lib.FLAX_WEIGHTS, autoencoder.PICTURE_FILE, autoencoder.SUMMARY_FILE]
    )
    with open(os.path.join(out, autoencoder.PICTURE_FILE), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(out, vae_lib.CONFIG_NAME)) as f:
        cfg = json.load(f)
    assert cfg["_class_name"] == "FlaxAutoencoderKL" and cfg["block_out_channels"] == [8, 16, 16]
    assert cfg["scaling_factor"] == pytest.approx(summary["scaling_factor"])
    assert np.isfinite(summary["psnr_held_out_db"]) and summary["held_out_frames"] > 0
    assert not [e for e in os.listdir(os.path.dirname(out)) if ".tmp-" in e]  # nothing half-written


def test_round_trips_through_vae_path_with_its_scaling_factor(trained):
    config, out, summary = trained
    with config.unlocked():
        config.vae.path = out  # vae.scaling_factor stays 0: the folder's value is used
    vae = vae_lib.vae_from_config(config.vae, config.data.image_size)
    assert vae.scaling_factor == pytest.approx(summary["scaling_factor"])
    frames = autoencoder.load_frames(readers.read_macro(config.data)[0][:2], 2, config.data.image_size)
    z = np.asarray(jax.jit(vae.encode)(vae.params, frames))
    assert z.shape == (len(frames), 8, 8, 4) and np.isfinite(z).all()
    # the scaling factor was 1 / std of held-out latent means: scaled latents are of unit size
    assert 0.2 < float(np.std(z)) < 5.0
    # a config value other than the folder's overrides it
    with config.unlocked():
        config.vae.scaling_factor = 0.5
    assert vae_lib.vae_from_config(config.vae, config.data.image_size).scaling_factor == 0.5
