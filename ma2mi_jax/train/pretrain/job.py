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

import dataclasses
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from ma2mi_jax import checkpoints, files
from ma2mi_jax.data import latent_cache as latent_cache_lib
from ma2mi_jax.data import pretrain_pipeline as pipeline
from ma2mi_jax.data.readers import registry as readers
from ma2mi_jax.data.records import DataError, MacroClip
from ma2mi_jax.models import flops as flops_lib
from ma2mi_jax.models import vae as vae_lib
from ma2mi_jax.train import mesh as mesh_lib
from ma2mi_jax.train import observe
from ma2mi_jax.train.pretrain import checks as validate
from ma2mi_jax.train.pretrain import diagnostics as diagnostics_lib
from ma2mi_jax.train.pretrain import state as state_lib
from ma2mi_jax.train.pretrain import step as pretrain_step
from ma2mi_jax.train.pretrain.state import TrainState

PICTURE_ITEMS = 8  # columns of a reconstruction picture


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


def initial_state(run: Run, tx: Any, ckpts: checkpoints.Checkpoints, iterator: Any) -> TrainState:
    """Resume from the workdir, else start from `config.init`, else from scratch (one log line)."""
    c = run.config
    params, batch_stats = state_lib.init_variables(run.models, pretrain_step.init_key(c.seed))
    latest = ckpts.latest_step()
    if latest is None and c.init:
        loaded = checkpoints.load_variables(c.init)
        params, taken = checkpoints.merge_pretrained(params, loaded["params"], c.init)
        batch_stats, _ = checkpoints.merge_pretrained(batch_stats, loaded["batch_stats"] or {}, c.init)
        say(
            f"initialised from config.init={c.init} "
            f"(step {loaded['step']}; parts: {', '.join(taken) or 'none'})"
        )
    state = mesh_lib.replicate(state_lib.create_train_state(params, batch_stats, tx), run.mesh)
    if latest is not None:
        restored, items = ckpts.restore(latest, state.as_dict())
        state = TrainState.from_dict(restored)
        iterator.set_state(checkpoints.decode_iterator_state(items["data_iter"]))
        say(f"resumed from step {latest} of {ckpts.directory}")
    elif not c.init:
        say("starting from scratch")
    return state


def analytic_flops(run: Run) -> float:
    """Model FLOPs per training step from the analytic counts: 3x forward (forward + backward) x batch."""
    c, m = run.config, run.models
    width, size = int(c.model.resnet_width), int(c.data.image_size)
    per_sample = flops_lib.miacnet_flops(size, width, c.model.fusion)
    if not m.supervised:
        per_sample += flops_lib.dit_flops(c.model.dit, m.grid, m.channels, cond_dim=8 * width)
    if pretrain_step.position_loss_on(c) and c.position_loss.w_equ > 0:
        per_sample += flops_lib.resnet18_flops(size, width)  # F_p on the transformed frames (L_equ)
    return 3.0 * per_sample * c.train.batch_size


def xla_step_flops(compiled: Any) -> float:
    """FLOPs of one compiled step from XLA's cost analysis, summed over devices (0 if unavailable)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", 0.0)) * jax.device_count()


class Loop:
    """The training loop's bookkeeping: pending metrics, NaN check, logs, pictures and checkpoints."""

    def __init__(self, run: Run, ckpts: checkpoints.Checkpoints, start: int) -> None:
        self.run, self.ckpts = run, ckpts
        self.pending: list[dict[str, jax.Array]] = []
        self.pending_from = start
        self.last: dict[str, float] = {}
        self.scalars = observe.Scalars(os.path.join(run.workdir, "tensorboard"))
        self.progress = observe.Progress(run.total_steps, initial=start, desc="pretrain")
        self.speed = observe.Throughput()
        self.batch = int(run.config.train.batch_size)

    def flush(self, step: int) -> None:
        """Fetch the metrics since the last flush, stop on NaN/Inf, log their mean at `step`."""
        if not self.pending:
            return
        history = [{k: float(v) for k, v in m.items()} for m in jax.device_get(self.pending)]
        bad = observe.first_nonfinite(history, self.pending_from + 1)
        self.pending, self.pending_from = [], step
        if bad is not None:
            self.ckpts.wait()
            good = self.ckpts.latest_step()
            where = f"step {good} in {self.ckpts.directory}" if good is not None else "none saved yet"
            raise FloatingPointError(
                f"non-finite loss at step {bad}; stopping. Last good checkpoint: {where} (kept intact). "
                "Lower train.lr, set train.grad_clip > 0, or use dtype='float32'."
            )
        self.last = observe.mean_metrics(history)
        rate = self.speed.mark(step * self.batch)
        values = {
            ("train/" if k in ("lr", "grad_norm", "acc") else "loss/") + k: v for k, v in self.last.items()
        }
        values["train/samples_per_s"] = rate
        self.scalars.write(step, values)
        self.progress.update(0, loss=self.last["loss"], samples_s=rate)

    def close(self) -> None:
        """Close the bar and the event file."""
        self.progress.close()
        self.scalars.close()


def save_picture(
    run: Run, predict: Any, state: TrainState, vae_params: Any, batch: dict, host: dict, step: int
) -> str | None:
    """Write pictures/step_XXXXXX.png for the current batch (reconstruction objective only)."""
    if run.models.supervised:
        return None
    out = jax.device_get(predict(state.params, state.batch_stats, vae_params, batch))
    rows = observe.reconstruction_rows(
        host["frame0"], host["frame1"], out["prediction"], PICTURE_ITEMS, out.get("vae_reconstruction")
    )
    path = os.path.join(run.workdir, "pictures", f"step_{step:06d}.png")
    title = f"step {step}: " + ", ".join(rows)
    if run.vae is not None and not run.config.vae.path:
        title += "  (random VAE: no vae.path given)"
    return observe.save_picture(path, rows, title=title)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Pre-train (or resume) in `workdir` for the configured steps; returns the final metrics."""
    mesh_lib.maybe_initialize_distributed()
    validate.check_before_reading(config, workdir, num_devices=jax.device_count())
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    run = prepare(config, workdir)
    say(
        f"pre-training: {len(run.clips)} clips ({len(run.eval_clips)} more held out for diagnostics), "
        f"{run.total_steps} steps ({run.steps_per_epoch}/epoch), "
        f"batch {config.train.batch_size} on {jax.device_count()} device(s), objective={config.objective}, "
        f"space={config.space}"
    )
    tx = state_lib.pretrain_optimizer(config, run.total_steps)
    iterator = make_iterator(run)
    ckpts = checkpoints.Checkpoints(
        os.path.join(workdir, checkpoints.CHECKPOINT_DIR), keep=config.train.keep_checkpoints
    )
    state = initial_state(run, tx, ckpts, iterator)
    checkpoints.save_config(workdir, config)
    vae_params = mesh_lib.replicate(run.vae.params, run.mesh) if run.vae is not None else {}
    start = int(jax.device_get(state.step))
    say(
        f"parameters: {state_lib.param_count(state.params):,} "
        f"(VAE {state_lib.param_count(vae_params):,}, frozen)"
    )
    try:
        result = _loop(run, tx, ckpts, iterator, state, vae_params, start)
    finally:
        ckpts.close()
    files.write_json(os.path.join(workdir, "metrics.json"), result)
    return result


def _loop(
    run: Run,
    tx: Any,
    ckpts: checkpoints.Checkpoints,
    iterator: Any,
    state: TrainState,
    vae_params: Any,
    start: int,
) -> dict[str, float]:
    """Run steps start..total, with logs, pictures and checkpoints; returns the final metrics."""
    c = run.config
    replicated = mesh_lib.replicated(run.mesh)
    step_fn = jax.jit(
        pretrain_step.make_train_step(run.models, c, tx, run.total_steps, run.vae),
        donate_argnums=(0,),
        out_shardings=(replicated, replicated),
    )
    predict = (
        jax.jit(pretrain_step.make_predict_fn(run.models, run.vae), out_shardings=replicated)
        if not run.models.supervised
        else None
    )
    loop = Loop(run, ckpts, start)
    diag = diagnostics_lib.build(c, run.models, run.vae, run.eval_clips, run.workdir)
    if diag is not None:
        diag.resume(start)
    compiled, xla_flops = None, 0.0
    try:
        for step in range(start, run.total_steps):
            host = next(iterator)
            batch = mesh_lib.shard_batch(host, run.mesh)
            if compiled is None:
                compiled = step_fn.lower(state, vae_params, batch).compile()
                xla_flops = xla_step_flops(compiled)
                loop.speed.start(step * loop.batch)
                run_from = step
            state, metrics = compiled(state, vae_params, batch)
            loop.pending.append(metrics)
            loop.progress.update(1)
            done = step + 1
            save = done % c.train.checkpoint_every == 0 or done == run.total_steps
            picture = c.train.picture_every > 0 and done % c.train.picture_every == 0
            if done % c.train.log_every == 0 or save or picture:
                loop.flush(done)
            if picture:
                t0 = time.perf_counter()
                save_picture(run, predict, state, vae_params, batch, host, done)
                loop.speed.exclude(time.perf_counter() - t0)
            periodic = c.train.eval_every > 0 and done % c.train.eval_every == 0
            if diag is not None and (periodic or done == run.total_steps):
                t0 = time.perf_counter()
                evaluate(loop, diag, state, vae_params, done)
                loop.speed.exclude(time.perf_counter() - t0)
            if save:
                ckpts.save(done, state.as_dict(), **checkpoints.run_items(iterator.get_state(), c))
        loop.flush(run.total_steps)
        jax.block_until_ready(state)
    finally:
        loop.close()
    ran = run.total_steps - start
    result = {"step": run.total_steps, **loop.last}
    if compiled is not None:
        seconds = loop.speed.seconds()
        samples_s = (run.total_steps - run_from) * loop.batch / max(seconds, 1e-9)
        model_flops = analytic_flops(run)
        result.update(
            samples_per_s=samples_s,
            xla_flops_per_step=xla_flops,
            model_flops_per_step=model_flops,
            achieved_flops_per_s=xla_flops * samples_s / loop.batch,
        )
        say(
            f"done: {ran} steps in {seconds:.1f} s (pictures excluded), {samples_s:.1f} samples/s; "
            f"FLOPs per step "
            f"{xla_flops:.3g} (XLA cost analysis), {model_flops:.3g} (model estimate, 3x forward); "
            f"achieved {result['achieved_flops_per_s'] / 1e12:.3g} TFLOP/s on {jax.device_count()} "
            f"{jax.devices()[0].platform} device(s)"
        )
    else:
        say(f"nothing to do: the workdir's checkpoint is already at the last step {run.total_steps}")
    if diag is not None and diag.history:
        say(diagnostics_lib.summary_line(diag.history[-1]))
    return result


def evaluate(
    loop: Loop, diag: diagnostics_lib.Diagnostics, state: TrainState, vae_params: Any, step: int
) -> None:
    """Run the diagnostics at `step`: diagnostics.json, TensorBoard "eval/*" and one console line."""
    entry = diag.evaluate(step, state.params, state.batch_stats, vae_params)
    loop.scalars.write(step, diagnostics_lib.tensorboard_values(entry))
    if "rec" in entry:
        line = (
            f"eval step {step}: rec {entry['rec']:.4f}  copy {entry['copy']:.4f}  "
            f"shuffled_c {entry['shuffled_c']:.4f}  static_c {entry['static_c']:.4f}  "
            f"(rec/copy {entry['rec_over_copy']:.3f}, shuffled/rec {entry['shuffled_over_rec']:.3f})"
        )
    else:
        line = f"eval step {step}: accuracy {entry['accuracy']:.3f}  ce {entry['ce']:.4f}"
    say(line, loop.progress)
