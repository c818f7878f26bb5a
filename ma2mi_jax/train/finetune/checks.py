"""Check a fine-tuning config before any data is read; every problem names its config key."""

from __future__ import annotations

import logging
import math
import os

import ml_collections

from ma2mi_jax.errors import ConfigError
from ma2mi_jax.train import folder_checks
from ma2mi_jax.train.finetune.head_init import HEAD_INITS
from ma2mi_jax.train.finetune.starting_point import starts_pretrained

log = logging.getLogger(__name__)


def _check_train(c: ml_collections.ConfigDict, problems: list[str]) -> None:
    if int(c.train.epochs) < 1:
        problems.append(f"train.epochs must be >= 1, got {c.train.epochs}")
    if int(c.train.batch_size) < 1:
        problems.append(f"train.batch_size must be >= 1, got {c.train.batch_size}")
    if int(c.finetune.fold_threads) < 1:
        problems.append(f"finetune.fold_threads must be >= 1, got {c.finetune.fold_threads}")
    if not 0 <= int(c.finetune.head_only_epochs) < int(c.train.epochs):
        problems.append(
            f"finetune.head_only_epochs must be >= 0 and below train.epochs ({c.train.epochs}), "
            f"got {c.finetune.head_only_epochs}"
        )
    if str(c.finetune.head_init) not in HEAD_INITS:
        problems.append(f"finetune.head_init must be one of {list(HEAD_INITS)}, got {c.finetune.head_init!r}")
    if int(c.finetune.validation_subjects) < 0:
        problems.append(
            f"finetune.validation_subjects must be >= 0 (0 = off), got {c.finetune.validation_subjects}"
        )
    if c.finetune.retrain_selected and int(c.finetune.validation_subjects) <= 0:
        problems.append(
            "finetune.retrain_selected=True needs finetune.validation_subjects > 0 to choose the epochs"
        )
    if int(c.finetune.folds_per_step) < 0:
        problems.append(
            f"finetune.folds_per_step must be >= 0 (0 = automatic), got {c.finetune.folds_per_step}"
        )


def _check_remedies(c: ml_collections.ConfigDict, problems: list[str]) -> None:
    """The domain-gap switches: encoder_lr_scale, encoder_warmup_epochs, l2sp_weight, probe_every."""
    ft, epochs = c.finetune, int(c.train.epochs)
    scale, l2sp = float(ft.encoder_lr_scale), float(ft.l2sp_weight)
    if not (math.isfinite(scale) and scale > 0):
        problems.append(f"finetune.encoder_lr_scale must be a finite number > 0, got {ft.encoder_lr_scale}")
    trained = epochs - int(ft.head_only_epochs)  # epochs in which the encoders move
    if not 0 <= int(ft.encoder_warmup_epochs) < max(trained, 1):
        problems.append(
            "finetune.encoder_warmup_epochs must be >= 0 and below train.epochs - finetune.head_only_epochs "
            f"({trained}), got {ft.encoder_warmup_epochs}"
        )
    if not (math.isfinite(l2sp) and l2sp >= 0):
        problems.append(f"finetune.l2sp_weight must be a finite number >= 0 (0 = off), got {ft.l2sp_weight}")
    if int(ft.probe_every) < 0:
        problems.append(f"finetune.probe_every must be >= 0 (0 = off), got {ft.probe_every}")


def _check_augment(c: ml_collections.ConfigDict, problems: list[str]) -> None:
    aug, size = c.data.augment, int(c.data.image_size)
    if int(aug.crop_pad) < 0 or float(aug.rotation_deg) < 0:
        problems.append(
            f"data.augment.crop_pad ({aug.crop_pad}) and data.augment.rotation_deg ({aug.rotation_deg}) "
            "must be >= 0"
        )
    if int(aug.crop_pad) >= size:
        problems.append(
            f"data.augment.crop_pad ({aug.crop_pad}) must be smaller than data.image_size ({size})"
        )


def _check_aux(c: ml_collections.ConfigDict, problems: list[str]) -> None:
    weight = float(c.finetune.aux_rec_weight)
    if not (math.isfinite(weight) and weight >= 0):
        problems.append(f"finetune.aux_rec_weight must be a finite number >= 0, got {weight}")
        return
    init = str(c.init).strip()
    if weight > 0 and (not starts_pretrained(c) or init.startswith("imagenet:")):
        problems.append(
            f"finetune.aux_rec_weight={weight} keeps L_rec as an auxiliary loss, which needs the "
            f"pre-trained DiT: config.init must be a MA2MI pre-training workdir, not {init!r}. Set "
            "--config.init=<pre-training workdir> or finetune.aux_rec_weight=0"
        )


def validate_finetune_config(config: ml_collections.ConfigDict) -> None:
    """Raise ConfigError listing every invalid key of a fine-tuning config (no data or compute needed)."""
    problems: list[str] = []
    _check_train(config, problems)
    _check_remedies(config, problems)
    _check_augment(config, problems)
    _check_aux(config, problems)
    if problems:
        raise ConfigError(
            problems[0] if len(problems) == 1 else "invalid config:\n  " + "\n  ".join(problems)
        )
    if config.model.fusion == "none" and config.finetune.freeze_position:
        log.warning("finetune.freeze_position has no effect with model.fusion='none' (no position encoder)")


def check_before_reading(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> None:
    """Every check of a cross-validation run, before any data is read: folders, then the config's keys."""
    folder_checks.check_workdir(workdir)
    folder_checks.check_init(str(config.init))
    if float(config.finetune.aux_rec_weight) > 0:  # the auxiliary L_rec loads the VAE
        folder_checks.check_vae_folder(str(config.vae.path))
    validate_finetune_config(config)
