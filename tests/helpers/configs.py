"""The configs the tests run: any config file's `get_config`, and the tiny pre-training and fine-tuning ones.

Both tiny configs take dotted-key overrides ({"train.lr": 1e-3}); a list value becomes a tuple, as
the configs hold sequences (and as JSON, which the subprocess runs pass them through, has no tuples).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import ml_collections

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRETRAIN_CONFIG = os.path.join(REPO, "configs", "synthetic_pretrain.py")
FINETUNE_CONFIG = os.path.join(REPO, "configs", "synthetic_loso.py")


def config_file(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """`get_config(arg)` of a config file, e.g. configs/synthetic_autoencoder.py."""
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def override(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
    """Set each dotted key of `overrides` in `config` (lists as tuples); returns `config`."""
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = tuple(value) if isinstance(value, list) else value
    return config


def tiny_pretrain_config(overrides: dict[str, Any]) -> ml_collections.ConfigDict:
    """configs/synthetic_pretrain.py:tiny with dotted-key overrides, e.g. {"data.root": ...}."""
    return override(config_file(PRETRAIN_CONFIG, "tiny"), overrides)


def tiny_finetune_config(root: str, workdir: str, **overrides: Any) -> ml_collections.ConfigDict:
    """configs/synthetic_loso.py:tiny on the data set `root`, from scratch, into `workdir`, with overrides."""
    config = config_file(FINETUNE_CONFIG, "tiny")
    config.data.root = root
    config.init = "scratch"
    config.workdir = workdir
    return override(config, overrides)
