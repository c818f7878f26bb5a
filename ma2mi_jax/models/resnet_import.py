"""Import ImageNet ResNet18 weights from a torchvision-format state dict (no PyTorch needed).

Supported files: `.safetensors` (read with `safetensors.numpy`), `.npz` (one array per
torchvision key), and `.pth`/`.pt` when PyTorch is installed (loaded with `weights_only=True`).
The result is `{"params": ..., "batch_stats": ...}` for `ResNet18Trunk(width=64)`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ma2mi_jax.models.resnet import ResNet18Trunk

log = logging.getLogger(__name__)

# Keys a torchvision resnet18 state dict has that the trunk does not use.
IGNORED_PREFIXES = ("fc.",)
IGNORED_SUFFIXES = (".num_batches_tracked",)
# State dicts saved from DataParallel / DistributedDataParallel carry this prefix.
WRAPPER_PREFIX = "module."


def _torch_key_to_flax(key: str) -> tuple[str, tuple[str, ...]]:
    """Map one torchvision key to (collection, flax path), e.g. layer1.0.bn1.weight -> params/..."""
    parts = key.split(".")
    leaf = parts[-1]
    mods = parts[:-1]
    # layer1.0.conv1 -> layer1_0/conv1 ; layer2.0.downsample.0 -> layer2_0/downsample_conv
    path: list[str] = []
    i = 0
    while i < len(mods):
        m = mods[i]
        if m.startswith("layer") and i + 1 < len(mods) and mods[i + 1].isdigit():
            path.append(f"{m}_{mods[i + 1]}")
            i += 2
        elif m == "downsample" and i + 1 < len(mods):
            path.append(
                {"0": "downsample_conv", "1": "downsample_bn"}.get(mods[i + 1], f"downsample_{mods[i + 1]}")
            )
            i += 2
        else:
            path.append(m)
            i += 1
    is_bn = path[-1].startswith("bn") or path[-1] == "downsample_bn"
    if is_bn:
        table = {
            "weight": ("params", "scale"),
            "bias": ("params", "bias"),
            "running_mean": ("batch_stats", "mean"),
            "running_var": ("batch_stats", "var"),
        }
    else:
        table = {"weight": ("params", "kernel"), "bias": ("params", "bias")}
    collection, name = table.get(leaf, ("params", leaf))
    return collection, (*path, name)


def _convert_array(value: np.ndarray) -> np.ndarray:
    """torch conv weight [O,I,kh,kw] -> flax [kh,kw,I,O]; vectors unchanged."""
    value = np.asarray(value, dtype=np.float32)
    if value.ndim == 4:
        return np.transpose(value, (2, 3, 1, 0))
    return value


def expected_variables(width: int = 64) -> dict[str, Any]:
    """Shapes of ResNet18Trunk(width) variables, computed with eval_shape (no memory)."""
    model = ResNet18Trunk(width=width)
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)


def torchvision_to_flax(state: dict[str, np.ndarray], width: int = 64, source: str = "state dict") -> dict:
    """Convert a torchvision resnet18 state dict (numpy arrays) to ResNet18Trunk variables.

    fc.* and num_batches_tracked keys are ignored (logged). Any missing, unexpected or mis-shaped
    key raises ValueError naming every such key.
    """
    expected = {col: traverse_util.flatten_dict(tree) for col, tree in expected_variables(width).items()}
    out: dict[str, dict[tuple[str, ...], np.ndarray]] = {"params": {}, "batch_stats": {}}
    ignored, unexpected, misshaped = [], [], []
    for key, value in state.items():
        key = key.removeprefix(WRAPPER_PREFIX)
        if key.startswith(IGNORED_PREFIXES) or key.endswith(IGNORED_SUFFIXES):
            ignored.append(key)
            continue
        collection, path = _torch_key_to_flax(key)
        if path not in expected.get(collection, {}):
            unexpected.append(key)
            continue
        array = _convert_array(value)
        want = tuple(expected[collection][path].shape)
        if array.shape != want:
            misshaped.append(f"{key}: file {tuple(np.shape(value))} -> {array.shape}, expected {want}")
            continue
        out[collection][path] = array
    missing = [
        f"{col}/{'/'.join(path)}" for col, flat in expected.items() for path in flat if path not in out[col]
    ]
    if missing or unexpected or misshaped:
        lines = [f"{source} is not a torchvision resnet18 (width {width}) state dict:"]
        if missing:
            lines.append(f"  missing ({len(missing)}): {', '.join(sorted(missing))}")
        if unexpected:
            lines.append(f"  unexpected ({len(unexpected)}): {', '.join(sorted(unexpected))}")
        if misshaped:
            lines.append(f"  wrong shape ({len(misshaped)}): {'; '.join(misshaped)}")
        lines.append("  Use torchvision.models.resnet18(weights='IMAGENET1K_V1').state_dict() saved as-is.")
        raise ValueError("\n".join(lines))
    if ignored:
        log.info("%s: ignored %d key(s) not used by the trunk: %s", source, len(ignored), ", ".join(ignored))
    return {col: traverse_util.unflatten_dict(flat) for col, flat in out.items()}


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """Read a state dict from .safetensors, .npz or .pth/.pt into numpy arrays."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ResNet18 weight file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".safetensors":
        from safetensors.numpy import load_file

        return dict(load_file(path))
    if ext == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    if ext in (".pth", ".pt"):
        try:
            import torch
        except ImportError as e:
            raise ImportError(
                f"{path}: reading .pth/.pt needs PyTorch, which is not installed. Convert the file to "
                ".safetensors or .npz on a machine with PyTorch, or `pip install torch`."
            ) from e
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict):
            raise ValueError(f"{path}: expected a state dict (a dict of tensors), found {type(obj).__name__}")
        return {k: v.detach().cpu().float().numpy() for k, v in obj.items() if hasattr(v, "numpy")}
    raise ValueError(f"{path}: unsupported weight file type {ext!r}; use .safetensors, .npz, .pth or .pt")


def load_torchvision_resnet18(path: str) -> dict:
    """Load ImageNet ResNet18 weights from `path` as {"params", "batch_stats"} for ResNet18Trunk(64)."""
    return torchvision_to_flax(read_state_dict(path), width=64, source=path)
