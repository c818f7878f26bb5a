"""Every config file loads with and without `:tiny`, and the config argument is validated."""

import glob
import importlib.util
import os
import subprocess
import sys

import ml_collections
import pytest

from ma2mi_jax import configlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


def _load(path: str):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_configs_for_every_data_set():
    names = {os.path.basename(p)[:-3] for p in CONFIG_FILES}
    expected = {"dfew", "ferv39k", "afew", "casme2", "samm", "mmew"}
    assert expected <= names, expected - names
    assert any(n.startswith("synthetic") for n in names)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
@pytest.mark.parametrize("arg", [None, "tiny"])
def test_config_loads(path, arg):
    module = _load(path)
    assert module.__doc__ and "python scripts/" in module.__doc__, "docstring must give the command"
    config = module.get_config(arg)
    assert isinstance(config, ml_collections.ConfigDict)
    assert isinstance(config.seed, int)
    assert config.workdir
    assert config.get("dtype", "float32") in ("float32", "bfloat16")  # the autoencoder has none
    with pytest.raises((AttributeError, KeyError)):
        config.not_a_key = 1  # locked: new keys are refused


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_tiny_is_smaller(path):
    module = _load(path)
    full, tiny = module.get_config(), module.get_config("tiny")
    assert tiny.data.image_size < full.data.image_size
    if "model" in full:  # the autoencoder config has only a VAE
        assert tiny.model.resnet_width <= min(full.model.resnet_width, 8)
    assert sum(tiny.vae.block_out_channels) <= sum(full.vae.block_out_channels)
    assert tiny.train.batch_size <= full.train.batch_size
    assert tiny.workdir != full.workdir


def test_only_the_synthetic_configs_register_their_pairs():
    """The benchmark registers (docs/decisions.md#pair-registration); real data keeps the paper's raw
    pairs; `:tiny` registers nothing."""
    for path in CONFIG_FILES:
        module, name = _load(path), os.path.basename(path)[:-3]
        full, tiny = module.get_config(), module.get_config("tiny")
        if "model" not in full:
            continue
        synthetic = name.startswith("synthetic")
        assert (full.model.register_iterations > 0) == synthetic, name
        assert full.model.register_target == (name == "synthetic_pretrain"), name
        assert tiny.model.register_iterations == 0 and not tiny.model.register_target, name


def test_unknown_config_argument_is_refused():
    with pytest.raises(ValueError, match="unknown config argument"):
        configlib.parse_arg("tiny,huge")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--config.data.roott=/x", "'--config.data.roott'"),
        ("--config.nokey=1", "'--config.nokey'"),
    ],
)
def test_script_rejects_unknown_keys_by_name(override, message):
    result = subprocess.run(
        [sys.executable, "scripts/pretrain.py", "--config", "configs/dfew.py:tiny", override],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("script", ["pretrain.py", "loso.py"])
def test_scripts_answer_help(script):
    result = subprocess.run(
        [sys.executable, f"scripts/{script}", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    assert "--config" in result.stdout


def test_script_applies_overrides():
    """An existing key overrides (the flags are parsed once); the value reaches the job."""
    code = (
        "import sys; sys.argv = ['x', '--config', 'configs/dfew.py:tiny', '--config.train.batch_size=6'];"
        "from absl import flags; from ml_collections import config_flags; from ma2mi_jax import cli;"
        "c = config_flags.DEFINE_config_file('config', None, '');"
        "cli.run(lambda argv: print('batch', c.value.train.batch_size))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "batch 6" in result.stdout
