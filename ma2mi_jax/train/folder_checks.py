"""The folders a run needs, checked before it reads any data or writes anything.

Each job's `checks.check_before_reading` uses these; they raise a `WorkdirError` / `InitError`
naming the path and what to do when
- the workdir exists as a file (or a dangling link), cannot be created (a part of its path is a
  file, or the nearest existing folder is not writable), or exists and is not writable;
- `config.init` is a path that does not exist, or a folder that is neither a pre-training workdir
  (with `checkpoints/<step>/`) nor an exported classifier; the message gives the exact command that
  makes the pre-training workdir, and the `scratch` / `imagenet:<file>` alternatives;
- `config.init='imagenet:<file>'` names a file that does not exist;
- `vae.path` names a folder without the VAE's config.json and weights.
Nothing is created: a workdir that does not exist yet is made later by the run itself.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Any

from ma2mi_jax import checkpoints, pretrained
from ma2mi_jax.errors import InitError, WorkdirError
from ma2mi_jax.models import vae as vae_lib
from ma2mi_jax.serving import classifier

SCRATCH = "scratch"
IMAGENET_PREFIX = "imagenet:"
# Used in the `init` message when no config of configs/ writes that workdir.
DEFAULT_PRETRAIN_CONFIG = "configs/dfew.py"
_CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"


def check_workdir(workdir: str | os.PathLike) -> None:
    """WorkdirError unless `workdir` is a writable folder or can be created as one."""
    shown = os.fspath(workdir)
    path = os.path.abspath(shown)
    hint = "choose another --workdir"
    if os.path.lexists(path) and not os.path.isdir(path):
        what = "a link to nothing" if os.path.islink(path) and not os.path.exists(path) else "a file"
        raise WorkdirError(f"workdir {shown} exists and is {what}, not a folder; {hint} or remove it")
    if os.path.isdir(path):
        problem = _write_problem(path)
        if problem:
            raise WorkdirError(f"workdir {shown} is not writable ({problem}); {hint} or fix its permissions")
        return
    parent = os.path.dirname(path)
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise WorkdirError(f"workdir {shown} cannot be created: {parent} is a file, not a folder; {hint}")
    problem = _write_problem(parent)
    if problem:
        raise WorkdirError(f"workdir {shown} cannot be created: {parent} is not writable ({problem}); {hint}")


def _write_problem(folder: str) -> str | None:
    """Why no file can be created in `folder` (permission, read-only file system), or None."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return "permission denied"
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".ma2mi-write-check-"):
            pass
    except OSError as err:
        return err.strerror or str(err)
    return None


def pretrain_command(workdir: str) -> str:
    """The scripts/pretrain.py command that writes a pre-training workdir at `workdir`."""
    config_file, root = DEFAULT_PRETRAIN_CONFIG, "<DFEW folder>"
    for path in sorted(glob.glob(str(_CONFIGS_DIR / "*.py"))):
        config = _load_config(path)
        if config is None or "objective" not in config:  # not a pre-training config
            continue
        if os.path.normpath(str(config.workdir)) == os.path.normpath(workdir):
            config_file, root = os.path.relpath(path, _CONFIGS_DIR.parent), str(config.data.root)
            break
    return f"python scripts/pretrain.py --config {config_file} --config.data.root={root} --workdir {workdir}"


def _load_config(path: str) -> Any:
    """`get_config()` of a config file, or None when it cannot be loaded."""
    try:
        spec = importlib.util.spec_from_file_location(f"_preflight_{Path(path).stem}", path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        return module.get_config()
    except Exception:  # a config that does not load here is simply not a candidate
        return None


def _alternatives() -> str:
    return (
        f"or start without pre-training: --config.init={SCRATCH} (random weights) or "
        f"--config.init={IMAGENET_PREFIX}<torchvision resnet18 file> (needs model.resnet_width=64)"
    )


def check_init(init: str) -> None:
    """InitError unless `init` is "", "scratch", an existing "imagenet:<file>" or a usable folder."""
    init = str(init).strip()
    if init in ("", SCRATCH):
        return
    if init.startswith(IMAGENET_PREFIX):
        weights = init.removeprefix(IMAGENET_PREFIX)
        if not os.path.isfile(weights):
            raise InitError(
                f"config.init={init!r}: the ResNet18 weight file {weights} does not exist; save "
                "torchvision.models.resnet18(weights='IMAGENET1K_V1').state_dict() there (.safetensors, "
                f".npz or .pth), or use --config.init={SCRATCH}"
            )
        return
    make = f"make it with\n  {pretrain_command(init)}\n{_alternatives()}"
    if not os.path.exists(init):
        raise InitError(
            f"config.init={init!r} does not exist: it should be a MA2MI pre-training workdir; {make}"
        )
    if classifier.is_exported_classifier(init):
        return
    try:
        pretrained.resolve(init)
    except checkpoints.CheckpointError as err:
        raise InitError(
            f"config.init={init!r} is not a pre-training workdir ({err}); finish or resume that "
            f"pre-training run, or {make}"
        ) from None


def check_vae_folder(path: str) -> None:
    """InitError unless `path` ("" = random VAE) is a folder with the VAE's config and weights."""
    if not path:
        return  # the random VAE
    if not os.path.isdir(path):
        raise InitError(
            f"VAE folder {path} (config key vae.path) not found; point it at a diffusers-format "
            "sd-vae-ft-ema folder (see third_party/README.md), train a domain autoencoder there with "
            f"python scripts/train_autoencoder.py --config configs/synthetic_autoencoder.py --out {path} "
            "(set its --config.data.root), or set --config.vae.path='' for a random VAE (tests only)"
        )
    names = (vae_lib.FLAX_WEIGHTS, vae_lib.PT_WEIGHTS)
    missing = [] if os.path.isfile(os.path.join(path, vae_lib.CONFIG_NAME)) else [vae_lib.CONFIG_NAME]
    if not any(os.path.isfile(os.path.join(path, n)) for n in names):
        missing.append(" or ".join(names))
    if missing:
        raise InitError(
            f"VAE folder {path} (config key vae.path) has no {' and no '.join(missing)}; download "
            "sd-vae-ft-ema in diffusers format there (see third_party/README.md), or set "
            "--config.vae.path='' for a random VAE"
        )
