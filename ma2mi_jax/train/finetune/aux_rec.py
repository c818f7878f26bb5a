"""The auxiliary fine-tuning loss (finetune.aux_rec_weight > 0): L_rec through the pre-trained DiT."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from ma2mi_jax import checkpoints, losses, pretrained
from ma2mi_jax.errors import InitError
from ma2mi_jax.models import dit as dit_lib
from ma2mi_jax.models import miacnet as miacnet_lib
from ma2mi_jax.models import vae as vae_lib
from ma2mi_jax.serving import classifier
from ma2mi_jax.train.pretrain import step as pretrain_step

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class AuxReconstruction:
    """L_rec kept as an auxiliary fine-tuning loss: the pre-trained DiT and its input space.

    c is the classifier's MIACNet condition, which has no stop-gradient on P, so during fine-tuning
    L_rec reaches both encoders (all of MIACNet is fine-tuned by default, docs/method.md).
    `dit_params` (one fold's, float32) join every fold's trainable params under "dit"; the frozen
    VAE (`vae`, None in pixel space) encodes onset and apex, and its parameters reach the step as
    the runner's frozen inputs, outside the optimiser.
    """

    dit: Any  # models.dit.DiT
    dit_params: dict
    vae: Any  # models.vae.FrozenVAE, or None in pixel space (MA2MI-dagger pre-training)
    space: str  # "latent" | "pixel", the pre-training run's config.space
    source: str  # one line saying where the DiT (and VAE) come from

    def frozen_inputs(self) -> dict:
        """The VAE's parameters ({} in pixel space)."""
        return {} if self.vae is None else self.vae.params

    def dit_input_and_target(self, frozen_inputs: dict, batch: dict) -> tuple[jax.Array, jax.Array]:
        """(DiT input from the onset, target from the apex): VAE latents f32[B,h,w,4] or pixels in [-1,1]."""
        if self.vae is None:
            return pretrain_step.to_unit_range(batch["frame0"]), pretrain_step.to_unit_range(batch["frame1"])
        z0 = self.vae.encode(frozen_inputs, batch["frame0"])  # [B,h,w,C]
        z1 = self.vae.encode(frozen_inputs, batch["frame1"])
        return jax.lax.stop_gradient(z0), jax.lax.stop_gradient(z1)

    def loss(self, params: dict, c: jax.Array, batch: dict, key: jax.Array, frozen_inputs: dict) -> jax.Array:
        """L1(DiT(z_onset, c), z_apex): `step.AuxLoss`, differentiable in params["dit"] and c [B,C]."""
        del key  # L_rec is deterministic
        z0, z1 = self.dit_input_and_target(frozen_inputs, batch)
        pred = self.dit.apply({"params": params["dit"]}, z0, c)  # f32[B,h,w,C]
        return losses.l1_loss(pred, z1)


def _pretraining_run(config: ml_collections.ConfigDict, init: str) -> tuple[dict, str, dict]:
    """(pre-training config, the file it came from, its variables) of a MA2MI run holding a DiT."""
    key_line = f"finetune.aux_rec_weight={config.finetune.aux_rec_weight} needs config.init"
    if classifier.is_exported_classifier(Path(init)):
        raise InitError(
            f"{key_line} to be a MA2MI pre-training workdir (it holds the DiT), but config.init={init!r} is "
            "an exported classifier without a DiT; set config.init to the pre-training workdir or "
            "finetune.aux_rec_weight=0"
        )
    pre, pre_file = pretrained.pretraining_config(init)
    if pre.get("objective", "reconstruction") != "reconstruction":
        raise InitError(
            f"{key_line} to be a reconstruction (MA2MI) pre-training run, but {pre_file} has "
            f"objective={pre.get('objective')!r} (no DiT); use another config.init or "
            "finetune.aux_rec_weight=0"
        )
    loaded = pretrained.load_variables(init)
    if "dit" not in loaded["params"]:
        raise checkpoints.CheckpointError(
            f"{init}: the checkpoint has no 'dit' parameters (top level: {sorted(loaded['params'])}); "
            f"{key_line} to be a MA2MI pre-training workdir"
        )
    return pre, pre_file, loaded


def aux_reconstruction(config: ml_collections.ConfigDict) -> AuxReconstruction | None:
    """The pre-trained DiT and frozen VAE of `config.init` for finetune.aux_rec_weight > 0 (else None).

    The DiT is `model.dit` of this config with the pre-trained weights of `config.init` (a MA2MI
    pre-training workdir). Latent space: the VAE is `vae_from_config(config.vae, data.image_size,
    seed)` with the pre-training run's seed (so a random test VAE is the one the DiT learnt with);
    pixel space (a pre-training run with space='pixel'): the DiT works on pixels in [-1,1], no VAE.
    """
    if float(config.finetune.aux_rec_weight) <= 0:
        return None
    init = str(config.init).strip()
    pre, pre_file, loaded = _pretraining_run(config, init)
    space = str(pre.get("space", "latent"))
    size = int(config.data.image_size)
    vae = None
    if space == "latent":
        _warn_vae_mismatch(config.vae, pre.get("vae", {}), pre_file)
        vae = vae_lib.vae_from_config(config.vae, size, seed=int(pre.get("seed", config.seed)))
        grid, channels = vae.latent_grid(size), vae.latent_channels
    elif space == "pixel":
        grid, channels = size, 3
    else:
        raise checkpoints.CheckpointError(
            f"{pre_file}: unknown space={space!r} (expected 'latent' or 'pixel')"
        )
    residual = bool(pre.get("model", {}).get("dit_residual", False))  # as the DiT was pre-trained
    if bool(pre.get("model", {}).get("dit_condition_map", False)):
        raise InitError(
            f"finetune.aux_rec_weight={config.finetune.aux_rec_weight}: the pre-training run {pre_file} has "
            "model.dit_condition_map=True, whose DiT also needs the fused map, which fine-tuning does not "
            "pass; set finetune.aux_rec_weight=0"
        )
    dit = dit_lib.DiT(
        variant=str(config.model.dit), out_channels=channels, dtype=jnp.dtype(config.dtype), residual=residual
    )
    z = jnp.zeros((1, grid, grid, channels), jnp.float32)  # [1,h,w,ch]
    c = jnp.zeros((1, miacnet_lib.miacnet_from_config(config.model).features), jnp.float32)  # [1,C]
    # Shapes only (no initialisation is computed): every value comes from the checkpoint.
    fresh = jax.eval_shape(dit.init, jax.random.key(int(config.seed)), z, c)["params"]
    hint = (
        f"The pre-training run ({pre_file}) used model.dit={pre.get('model', {}).get('dit')!r}, "
        f"space={space!r}, vae.latent_channels={pre.get('vae', {}).get('latent_channels')}; this config "
        f"has model.dit={config.model.dit!r}, vae.latent_channels={config.vae.latent_channels}. "
        "Set them to match."
    )
    dit_params = pretrained.graft(fresh, loaded["params"]["dit"], f"DiT params of {init}", hint)
    what = "frozen VAE latents" if vae is not None else "pixels (pre-training space='pixel', no VAE)"
    source = (
        f"L_rec kept with weight {config.finetune.aux_rec_weight}: DiT {config.model.dit} from {init} "
        f"(step {loaded['step']}) on {what}, trained per fold"
    )
    return AuxReconstruction(dit, dit_params, vae, space, source)


def _warn_vae_mismatch(vae_cfg: ml_collections.ConfigDict, pre_vae: dict, pre_file: str) -> None:
    """Warn when config.vae differs from the VAE the DiT was pre-trained with (its latents differ)."""
    differ = []
    for key in ("path", "scaling_factor", "block_out_channels", "layers_per_block", "latent_channels"):
        if key not in pre_vae:
            continue
        ours, theirs = vae_cfg.get(key), pre_vae[key]
        if isinstance(ours, list | tuple):
            ours, theirs = list(ours), list(theirs)
        if ours != theirs:
            differ.append(f"vae.{key}: {ours!r} here, {theirs!r} in pre-training")
    if differ:
        log.warning(
            "finetune.aux_rec_weight > 0: config.vae differs from the VAE of %s (%s); the DiT was trained "
            "on that VAE's latents",
            pre_file,
            "; ".join(differ),
        )
