"""What a pre-training run is made of before its loop starts: clips, models, VAE, steps, input."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from ma2mi_jax.data import latent_cache as latent_cache_lib
from ma2mi_jax.data import pretrain_pipeline as pipeline
from ma2mi_jax.data.readers import registry as readers
from ma2mi_jax.data.records import DataError, MacroClip
from ma2mi_jax.models import vae as vae_lib
from ma2mi_jax.train import mesh as mesh_lib
from ma2mi_jax.train import observe
from ma2mi_jax.train.pretrain import diagnostics as diagnostics_lib
from ma2mi_jax.train.pretrain import state as state_lib


def say(line: str, progress: observe.Progress | None = None) -> None:
    """One log line on process 0 (through the progress bar while it is open)."""
    if progress is not None:
        progress.write(line)
    elif observe.is_chief():
        print(line, flush=True)


@dataclasses.dataclass
class Run:
    """What a pre-training run is made of, before its loop starts."""

    config: ml_collections.ConfigDict
    workdir: str
    clips: list[MacroClip]  # training clips (the held-out evaluation clips removed)
    eval_clips: list[MacroClip]
    models: state_lib.Models
    vae: vae_lib.FrozenVAE | None
    total_steps: int
    steps_per_epoch: int
    mesh: jax.sharding.Mesh


def read_clips(config: ml_collections.ConfigDict) -> list[MacroClip]:
    """The data set's clips (report printed); only labelled ones for the supervised objective."""
    clips, report = readers.read_macro(config.data)
    say(report.summary())
    if config.objective == "supervised":
        clips = [c for c in clips if c.label >= 0]
        if not clips:
            raise DataError(
                f"objective='supervised': no clip of data.root={config.data.root!r} has a label in "
                f"data.class_names={list(config.data.class_names)}; add the label files or use "
                "objective='reconstruction'"
            )
    return clips


def total_steps_of(config: ml_collections.ConfigDict, num_clips: int) -> tuple[int, int]:
    """(total steps, steps per epoch): train.steps if > 0, else epochs * full batches per epoch."""
    per_epoch = pipeline.steps_per_epoch(num_clips, config.train.batch_size)
    if config.train.steps > 0:
        return int(config.train.steps), per_epoch
    if per_epoch == 0:
        raise DataError(f"{num_clips} clip(s) is fewer than train.batch_size={config.train.batch_size}")
    return int(config.train.epochs) * per_epoch, per_epoch


def prepare(config: ml_collections.ConfigDict, workdir: str) -> Run:
    """Read the data, build the models and the frozen VAE, count the steps."""
    clips, eval_clips = diagnostics_lib.hold_out(
        read_clips(config), int(config.train.eval_clips), int(config.train.batch_size), int(config.seed)
    )
    total, per_epoch = total_steps_of(config, len(clips))
    vae = None
    if config.objective == "reconstruction" and config.space == "latent":
        vae = vae_lib.vae_from_config(config.vae, config.data.image_size, seed=config.seed)
    num_classes = len(tuple(config.data.class_names))
    models = state_lib.build_models(config, num_classes, vae)
    return Run(config, workdir, clips, eval_clips, models, vae, total, per_epoch, mesh_lib.make_mesh())


def shared_latent_cache(run: Run, cache_dir: str, face_dir: str | None) -> latent_cache_lib.LatentCache:
    """The latent cache, built once: by process 0, the others open it when it is done.

    On several hosts `cache_dir` must be on a file system all of them see (as the workdir).
    """
    c = run.config
    say(f"latent cache: {cache_dir}")
    if jax.process_index() == 0:
        encode = jax.jit(run.vae.encode)
        cache = latent_cache_lib.build(
            run.clips,
            lambda frames: np.asarray(encode(run.vae.params, frames)),
            image_size=c.data.image_size,
            cache_dir=cache_dir,
            batch_size=c.train.batch_size,
            face_crop_dir=face_dir,
            strict=c.data.strict,
        )
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("latent cache built")
    return cache if jax.process_index() == 0 else latent_cache_lib.LatentCache.open(cache_dir)


def make_iterator(run: Run) -> Any:
    """The seeded, resumable Grain iterator of this process's share of every batch."""
    c = run.config
    face_dir = os.path.join(run.workdir, "faces") if c.data.face_crop else None
    cache = None
    if c.data.latent_cache:
        cache = shared_latent_cache(run, c.data.cache_dir or os.path.join(run.workdir, "latents"), face_dir)
    return pipeline.pretrain_iterator(
        run.clips,
        image_size=c.data.image_size,
        k_min=c.data.k_min,
        k_max=c.data.k_max,
        batch_size=mesh_lib.checked_global_batch(c.train.batch_size),
        seed=c.seed,
        augment=c.data.augment,
        workers=c.data.workers,
        prefetch=c.data.prefetch,
        face_crop_dir=face_dir,
        strict=c.data.strict,
        latent_cache=cache,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
