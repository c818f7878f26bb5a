"""Bad pre-training config values fail before any compute with a message naming the key."""

from __future__ import annotations

import os

import pytest

from ma2mi_jax.train.pretrain import checks
from tests.helpers.configs import tiny_pretrain_config


@pytest.fixture
def root(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    return str(d)


def _config(root, **overrides):
    return tiny_pretrain_config({"data.root": root, **overrides})


def test_tiny_config_is_valid(root):
    checks.validate_pretrain_config(_config(root), num_devices=1)
    checks.validate_pretrain_config(_config(root, space="pixel"), num_devices=4)
    checks.validate_pretrain_config(_config(root, objective="supervised"), num_devices=2)


@pytest.mark.parametrize(
    ("overrides", "num_devices", "key"),
    [
        ({"model.dit": "Q/2"}, 1, "model.dit"),
        ({"model.dit": "T/3"}, 1, "model.dit"),  # patch 3 does not divide the 8x8 latent grid
        ({"data.k_min": 5, "data.k_max": 2}, 1, "data.k_min"),
        ({"data.k_min": 0}, 1, "data.k_min"),
        ({"train.batch_size": 6}, 4, "train.batch_size"),
        ({"vae.path": "/no/such/vae"}, 1, "vae.path"),
        ({"data.root": "/no/such/data"}, 1, "data.root"),
        ({"dtype": "float16"}, 1, "dtype"),
        ({"space": "voxel"}, 1, "space"),
        ({"objective": "contrastive"}, 1, "objective"),
        ({"model.fusion": "sum"}, 1, "model.fusion"),
        ({"train.final_lr_ratio": 0.0}, 1, "train.final_lr_ratio"),
        ({"train.steps": 0, "train.epochs": 0}, 1, "train.steps"),
        ({"train.checkpoint_every": 0}, 1, "train.checkpoint_every"),
        ({"position_loss.tau": 0.0}, 1, "position_loss.tau"),
        ({"position_loss.con_form": "l2"}, 1, "position_loss.con_form"),
        ({"data.image_size": 36}, 1, "data.image_size"),  # not divisible by the VAE's 4
        ({"data.latent_cache": True, "space": "pixel"}, 1, "data.latent_cache"),
        ({"init": "/no/such/run"}, 1, "init"),
        ({"model.register_iterations": -1}, 1, "model.register_iterations"),
        ({"model.register_target": True}, 1, "model.register_target"),  # nothing registered
        (
            {"model.register_target": True, "model.register_iterations": 4, "data.latent_cache": True},
            1,
            "model.register_target",
        ),
    ],
)
def test_bad_value_names_its_key(root, overrides, num_devices, key):
    with pytest.raises(checks.ConfigError) as e:
        checks.validate_pretrain_config(_config(root, **overrides), num_devices=num_devices)
    assert f"{key}=" in str(e.value) or f"{key} " in str(e.value)


def test_every_problem_is_listed(root):
    config = _config(root, **{"model.dit": "Q/2", "data.k_min": 9, "vae.path": "/no/vae"})
    with pytest.raises(checks.ConfigError) as e:
        checks.validate_pretrain_config(config)
    text = str(e.value)
    assert "model.dit" in text and "data.k_min" in text and "vae.path" in text


def test_pixel_space_ignores_the_vae_folder(root):
    checks.validate_pretrain_config(_config(root, space="pixel", **{"vae.path": "/no/vae"}))


def test_train_and_evaluate_fails_before_writing_anything(root, tmp_path):
    from ma2mi_jax.train.pretrain import job as pretrain

    workdir = str(tmp_path / "run")
    with pytest.raises(checks.ConfigError, match=r"data\.k_min"):
        pretrain.train_and_evaluate(_config(root, **{"data.k_min": 3, "data.k_max": 1}), workdir)
    assert not os.path.exists(workdir)
