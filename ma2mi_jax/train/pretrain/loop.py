"""The pre-training loop: steps, logs, pictures, diagnostics and checkpoints, and its speed summary."""

from __future__ import annotations

import os
import time
from typing import Any

import jax

from ma2mi_jax import checkpoints
from ma2mi_jax.errors import DivergedError
from ma2mi_jax.models import flops as flops_lib
from ma2mi_jax.train import device_memory, observe, preemption
from ma2mi_jax.train import mesh as mesh_lib
from ma2mi_jax.train.pretrain import diagnostics as diagnostics_lib
from ma2mi_jax.train.pretrain import setup
from ma2mi_jax.train.pretrain import step as pretrain_step
from ma2mi_jax.train.pretrain.state import TrainState

PICTURE_ITEMS = 8  # columns of a reconstruction picture
# What lowers the pre-training step's memory, named in the warning when it does not fit the device.
SMALLER_STEP = (
    "--config.dtype=bfloat16",
    "--config.data.latent_cache=True (the frozen VAE leaves the step)",
    "a smaller --config.train.batch_size",
)


def analytic_flops(run: setup.Run) -> float:
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

    def __init__(self, run: setup.Run, ckpts: checkpoints.Checkpoints, start: int) -> None:
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
            raise DivergedError(
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
    run: setup.Run, predict: Any, state: TrainState, vae_params: Any, batch: dict, host: dict, step: int
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


def _compiled_fns(run: setup.Run, tx: Any) -> tuple[Any, Any]:
    """The jitted train step (state donated) and, for the reconstruction objective, the predictor."""
    replicated = mesh_lib.replicated(run.mesh)
    step_fn = jax.jit(
        pretrain_step.make_train_step(run.models, run.config, tx, run.total_steps, run.vae),
        donate_argnums=(0,),
        out_shardings=(replicated, replicated),
    )
    predict = (
        jax.jit(pretrain_step.make_predict_fn(run.models, run.vae), out_shardings=replicated)
        if not run.models.supervised
        else None
    )
    return step_fn, predict


def _after_step(
    loop: Loop,
    diag: Any,
    predict: Any,
    state: TrainState,
    vae_params: Any,
    batch: dict,
    host: dict,
    done: int,
    iterator: Any,
) -> None:
    """Logs, pictures, diagnostics and checkpoints due after step `done` (their time not counted)."""
    run, c = loop.run, loop.run.config
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
    # Several processes agree through a collective: asked at log steps only, not to sync every step.
    asked = jax.process_count() == 1 or done % c.train.log_every == 0
    stopping = done < run.total_steps and asked and preemption.requested()
    if save or stopping:
        loop.ckpts.save(done, state.as_dict(), **checkpoints.run_items(iterator.get_state(), c))
    if stopping:
        loop.flush(done)
        loop.ckpts.wait()
        raise preemption.stop(f"at step {done} of {run.total_steps}", loop.ckpts.directory)


def run_loop(
    run: setup.Run,
    tx: Any,
    ckpts: checkpoints.Checkpoints,
    iterator: Any,
    state: TrainState,
    vae_params: Any,
    start: int,
) -> dict[str, float]:
    """setup.Run steps start..total, with logs, pictures and checkpoints; returns the final metrics."""
    step_fn, predict = _compiled_fns(run, tx)
    loop = Loop(run, ckpts, start)
    diag = diagnostics_lib.build(run.config, run.models, run.vae, run.eval_clips, run.workdir)
    if diag is not None:
        diag.resume(start)
    compiled, xla_flops, run_from = None, 0.0, start
    try:
        for step in range(start, run.total_steps):
            host = next(iterator)
            batch = mesh_lib.shard_batch(host, run.mesh)
            if compiled is None:
                compiled = step_fn.lower(state, vae_params, batch).compile()
                device_memory.check(
                    compiled, float(run.config.device_memory_gb), "the pre-training step", SMALLER_STEP
                )
                xla_flops = xla_step_flops(compiled)
                loop.speed.start(step * loop.batch)
                run_from = step
            state, metrics = compiled(state, vae_params, batch)
            loop.pending.append(metrics)
            loop.progress.update(1)
            _after_step(loop, diag, predict, state, vae_params, batch, host, step + 1, iterator)
        loop.flush(run.total_steps)
        jax.block_until_ready(state)
    finally:
        loop.close()
    result = {"step": run.total_steps, **loop.last}
    if compiled is not None:
        result.update(_speed_summary(run, loop, start, run_from, xla_flops))
    else:
        setup.say(f"nothing to do: the workdir's checkpoint is already at the last step {run.total_steps}")
    if diag is not None and diag.history:
        setup.say(diagnostics_lib.summary_line(diag.history[-1]))
    return result


def _speed_summary(
    run: setup.Run, loop: Loop, start: int, run_from: int, xla_flops: float
) -> dict[str, float]:
    """Samples/s (pictures and diagnostics excluded) and FLOPs of the run; printed in one line."""
    seconds = loop.speed.seconds()
    samples_s = (run.total_steps - run_from) * loop.batch / max(seconds, 1e-9)
    model_flops = analytic_flops(run)
    summary = {
        "samples_per_s": samples_s,
        "xla_flops_per_step": xla_flops,
        "model_flops_per_step": model_flops,
        "achieved_flops_per_s": xla_flops * samples_s / loop.batch,
    }
    setup.say(
        f"done: {run.total_steps - start} steps in {seconds:.1f} s (pictures excluded), "
        f"{samples_s:.1f} samples/s; FLOPs per step "
        f"{xla_flops:.3g} (XLA cost analysis), {model_flops:.3g} (model estimate, 3x forward); "
        f"achieved {summary['achieved_flops_per_s'] / 1e12:.3g} TFLOP/s on {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s)"
    )
    return summary


def evaluate(
    loop: Loop, diag: diagnostics_lib.Diagnostics, state: TrainState, vae_params: Any, step: int
) -> None:
    """setup.Run the diagnostics at `step`: diagnostics.json, TensorBoard "eval/*" and one console line."""
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
    setup.say(line, loop.progress)
