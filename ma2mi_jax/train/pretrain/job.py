"""MA2MI pre-training on macro-expression video: `train_and_evaluate(config, workdir)`.

Workdir layout:
    checkpoints/<step>/   Orbax: state, data iterator position, config (last `train.keep_checkpoints`)
    tensorboard/          scalars: loss terms, learning rate, gradient norm, samples/s
    pictures/step_XXXXXX.png   x_t, x_{t+k}, decoded prediction, |difference| (Fig. 6a)
    config.json, metrics.json (final), latents/ (VAE latent cache when data.latent_cache)
    diagnostics.json   held-out pairs: L_rec against the copy / shuffled-c / static-c baselines

A run resumes from the workdir's newest checkpoint (parameters, optimiser, step, data position),
else starts from `config.init`'s parameters, else from scratch; a killed and restarted run ends
with the same parameters as an unbroken one.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections

from ma2mi_jax import checkpoints, files, pretrained
from ma2mi_jax.train import mesh as mesh_lib
from ma2mi_jax.train import preemption, workdir_lock
from ma2mi_jax.train.pretrain import checks, setup
from ma2mi_jax.train.pretrain import loop as loop_lib
from ma2mi_jax.train.pretrain import state as state_lib
from ma2mi_jax.train.pretrain import step as pretrain_step
from ma2mi_jax.train.pretrain.state import TrainState


def initial_state(run: setup.Run, tx: Any, ckpts: checkpoints.Checkpoints, iterator: Any) -> TrainState:
    """Resume from the workdir, else start from `config.init`, else from scratch (one log line)."""
    c = run.config
    params, batch_stats = state_lib.init_variables(run.models, pretrain_step.init_key(c.seed))
    state = mesh_lib.replicate(state_lib.create_train_state(params, batch_stats, tx), run.mesh)
    found = ckpts.restore_latest(state.as_dict())
    if found is not None:
        latest, restored, items = found
        iterator.set_state(checkpoints.decode_iterator_state(items["data_iter"]))
        setup.say(f"resumed from step {latest} of {ckpts.directory}")
        return TrainState.from_dict(restored)
    if c.init:
        loaded = pretrained.load_variables(c.init)
        params, taken = pretrained.merge_pretrained(params, loaded["params"], c.init)
        batch_stats, _ = pretrained.merge_pretrained(batch_stats, loaded["batch_stats"] or {}, c.init)
        setup.say(
            f"initialised from config.init={c.init} "
            f"(step {loaded['step']}; parts: {', '.join(taken) or 'none'})"
        )
        state = mesh_lib.replicate(state_lib.create_train_state(params, batch_stats, tx), run.mesh)
    else:
        setup.say("starting from scratch")
    return state


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Pre-train (or resume) in `workdir` for the configured steps; returns the final metrics."""
    mesh_lib.maybe_initialize_distributed()
    checks.check_before_reading(config, workdir, num_devices=jax.device_count())
    workdir = os.path.abspath(workdir)
    with preemption.watching(), workdir_lock.held(workdir):
        return _train(config, workdir)


def _train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Read, build, resume and run the loop in `workdir` (held by this run); returns the final metrics."""
    if jax.process_index() == 0:
        files.remove_leftovers(workdir)  # of a run killed while writing
    run = setup.prepare(config, workdir)
    setup.say(
        f"pre-training: {len(run.clips)} clips ({len(run.eval_clips)} more held out for diagnostics), "
        f"{run.total_steps} steps ({run.steps_per_epoch}/epoch), "
        f"batch {config.train.batch_size} on {jax.device_count()} device(s), objective={config.objective}, "
        f"space={config.space}"
    )
    tx = state_lib.pretrain_optimizer(config, run.total_steps)
    iterator = setup.make_iterator(run)
    ckpts = checkpoints.Checkpoints(
        os.path.join(workdir, checkpoints.CHECKPOINT_DIR), keep=config.train.keep_checkpoints
    )
    state = initial_state(run, tx, ckpts, iterator)
    checkpoints.save_config(workdir, config)
    vae_params = mesh_lib.replicate(run.vae.params, run.mesh) if run.vae is not None else {}
    start = int(jax.device_get(state.step))
    setup.say(
        f"parameters: {state_lib.param_count(state.params):,} "
        f"(VAE {state_lib.param_count(vae_params):,}, frozen)"
    )
    try:
        result = loop_lib.run_loop(run, tx, ckpts, iterator, state, vae_params, start)
    finally:
        ckpts.close()
    files.write_json(os.path.join(workdir, "metrics.json"), result)
    return result
