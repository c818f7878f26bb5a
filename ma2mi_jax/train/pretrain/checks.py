"""Check a pre-training config before any compute; every problem names its config key."""

from __future__ import annotations

import os
import re

import ml_collections

from ma2mi_jax import checkpoints, pretrained
from ma2mi_jax.errors import ConfigError, InitError
from ma2mi_jax.models import dit
from ma2mi_jax.models.miacnet import FUSIONS
from ma2mi_jax.train import folder_checks

DTYPES = ("float32", "bfloat16")
OBJECTIVES = ("reconstruction", "supervised")
SPACES = ("latent", "pixel")
CON_FORMS = ("ce", "cos")
# "B/2", "XL/4", "T/2": a size name and a patch size.
_DIT_NAME = re.compile(r"^\s*([A-Za-z]+)\s*/\s*(\d+)\s*$")


def _dit_patch(name: str) -> int:
    """Patch size of a DiT variant name; ValueError (from models.dit.parse_variant) when unknown."""
    dit.parse_variant(name)  # raises ValueError on an unknown size
    match = _DIT_NAME.match(name)
    if match is None:
        raise ValueError(f"cannot read a patch size from {name!r} (expected e.g. 'B/2')")
    return int(match.group(2))


def latent_downsample(vae_cfg: ml_collections.ConfigDict) -> int:
    """Spatial downsampling factor of the VAE encoder (2 per extra block: SD's 4 blocks -> 8)."""
    return 2 ** (len(tuple(vae_cfg.block_out_channels)) - 1)


def _check_choices(c: ml_collections.ConfigDict, problems: list[str]) -> None:
    for key, value, allowed in (
        ("dtype", c.dtype, DTYPES),
        ("objective", c.objective, OBJECTIVES),
        ("space", c.space, SPACES),
        ("model.fusion", c.model.fusion, FUSIONS),
        ("position_loss.con_form", c.position_loss.con_form, CON_FORMS),
    ):
        if value not in allowed:
            problems.append(f"{key}={value!r} is not one of {list(allowed)}")


def _check_train(t: ml_collections.ConfigDict, num_devices: int, problems: list[str]) -> None:
    if t.batch_size <= 0:
        problems.append(f"train.batch_size={t.batch_size} must be positive")
    elif t.batch_size % num_devices:
        problems.append(
            f"train.batch_size={t.batch_size} is not divisible by the {num_devices} devices; "
            f"use a multiple of {num_devices}"
        )
    if t.steps < 0 or (t.steps == 0 and t.epochs <= 0):
        problems.append(f"train.steps={t.steps} / train.epochs={t.epochs}: set steps > 0 or epochs > 0")
    if t.lr <= 0:
        problems.append(f"train.lr={t.lr} must be positive")
    if t.weight_decay < 0:
        problems.append(f"train.weight_decay={t.weight_decay} must be >= 0")
    if not 0.0 < t.final_lr_ratio <= 1.0:
        problems.append(f"train.final_lr_ratio={t.final_lr_ratio} must be in (0, 1]")
    if t.grad_clip < 0:
        problems.append(f"train.grad_clip={t.grad_clip} must be >= 0 (0 = off)")
    for key in ("log_every", "checkpoint_every", "keep_checkpoints"):
        if t[key] <= 0:
            problems.append(f"train.{key}={t[key]} must be positive")
    if t.picture_every < 0:
        problems.append(f"train.picture_every={t.picture_every} must be >= 0 (0 = off)")
    for key, zero in (("eval_every", "only at the end"), ("eval_clips", "no diagnostics")):
        if t[key] < 0:
            problems.append(f"train.{key}={t[key]} must be >= 0 (0 = {zero})")
    if t.eval_clips > 0 and t.eval_pairs <= 0:
        problems.append(f"train.eval_pairs={t.eval_pairs} must be positive when train.eval_clips > 0")


def _check_data(c: ml_collections.ConfigDict, problems: list[str]) -> None:
    d = c.data
    if d.k_min < 1:
        problems.append(f"data.k_min={d.k_min} must be >= 1")
    if d.k_min > d.k_max:
        problems.append(f"data.k_min={d.k_min} > data.k_max={d.k_max}; need k_min <= k_max")
    if d.image_size <= 0:
        problems.append(f"data.image_size={d.image_size} must be positive")
    if d.workers < 0 or d.prefetch < 1:
        problems.append(f"data.workers={d.workers} must be >= 0 and data.prefetch={d.prefetch} >= 1")
    if not d.root:
        problems.append("data.root is empty; set --config.data.root=/path/to/the/data/set")
    elif not os.path.isdir(d.root):
        problems.append(f"data.root={d.root!r} is not a folder; set --config.data.root to the data set")
    if d.latent_cache and c.space != "latent":
        problems.append("data.latent_cache=True needs space='latent' (pixel space has no VAE)")
    if c.objective == "supervised" and not tuple(d.class_names):
        problems.append("data.class_names is empty; the supervised objective needs the macro classes")


def _check_model(c: ml_collections.ConfigDict, problems: list[str]) -> None:
    if c.model.resnet_width <= 0:
        problems.append(f"model.resnet_width={c.model.resnet_width} must be positive")
    m = c.model
    if m.get("register_iterations", 0) < 0:
        problems.append(f"model.register_iterations={m.register_iterations} must be >= 0 (0 = off)")
    if m.get("register_target", False) and m.get("register_iterations", 0) <= 0:
        problems.append(
            "model.register_target=True needs model.register_iterations > 0 (nothing is registered)"
        )
    if m.get("register_target", False) and c.data.latent_cache:
        problems.append(
            "model.register_target=True needs data.latent_cache=False (the cache holds the latents of "
            "unregistered frames)"
        )
    if c.objective != "reconstruction" or c.data.image_size <= 0:
        return
    try:
        patch = _dit_patch(c.model.dit)
    except ValueError as e:
        problems.append(f"model.dit={c.model.dit!r}: {e}")
        return
    if c.space == "latent":
        down = latent_downsample(c.vae)
        if c.data.image_size % down:
            problems.append(
                f"data.image_size={c.data.image_size} is not divisible by the VAE's downsampling {down} "
                f"(vae.block_out_channels has {len(tuple(c.vae.block_out_channels))} blocks)"
            )
            return
        grid = c.data.image_size // down
    else:
        grid = c.data.image_size
    if grid % patch:
        problems.append(
            f"model.dit={c.model.dit!r}: patch {patch} does not divide the {grid}x{grid} "
            f"{'latent' if c.space == 'latent' else 'pixel'} grid (data.image_size={c.data.image_size})"
        )


def _check_vae(c: ml_collections.ConfigDict, problems: list[str]) -> None:
    v = c.vae
    if c.space != "latent" or c.objective != "reconstruction":
        return
    if v.path and not os.path.isdir(v.path):
        problems.append(
            f"vae.path={v.path!r} is not a folder; point it at a diffusers-format sd-vae-ft-ema folder "
            "(see third_party/README.md) or set --config.vae.path='' for a random VAE"
        )
    if v.scaling_factor < 0 or v.latent_channels <= 0 or not tuple(v.block_out_channels):
        problems.append(
            "vae.scaling_factor must be >= 0 (0 = the VAE folder's own), vae.latent_channels positive and "
            "vae.block_out_channels non-empty"
        )


def _check_position_loss(c: ml_collections.ConfigDict, problems: list[str]) -> None:
    p = c.position_loss
    for key in ("w_dis", "w_con", "w_equ", "max_rotation_deg", "max_shift"):
        if p[key] < 0:
            problems.append(f"position_loss.{key}={p[key]} must be >= 0")
    if p.tau <= 0:
        problems.append(f"position_loss.tau={p.tau} must be positive")


def validate_pretrain_config(config: ml_collections.ConfigDict, num_devices: int = 1) -> None:
    """Raise ConfigError listing every invalid key of a pre-training config (no compute needed)."""
    problems: list[str] = []
    _check_choices(config, problems)
    _check_train(config.train, num_devices, problems)
    _check_data(config, problems)
    _check_model(config, problems)
    _check_vae(config, problems)
    _check_position_loss(config, problems)
    if config.init and not os.path.exists(config.init):
        problems.append(f"init={config.init!r} does not exist; give a pre-training workdir or ''")
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def check_before_reading(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike, num_devices: int
) -> None:
    """Every check of a pre-training run, before any data is read: folders, then the config's keys."""
    folder_checks.check_workdir(workdir)
    init = str(config.init).strip()
    if init:
        try:
            pretrained.resolve(init)
        except checkpoints.CheckpointError as err:
            raise InitError(
                f"config.init={init!r}: {err}; give the workdir of an earlier pre-training run to start "
                "from, or --config.init='' to start from random weights"
            ) from None
    folder_checks.check_vae_folder(str(config.vae.path))
    validate_pretrain_config(config, num_devices=num_devices)
