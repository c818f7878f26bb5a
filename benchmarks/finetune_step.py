"""Speed of the fine-tuning fold step: the input pipeline alone, the train step alone, both together.

python benchmarks/finetune_step.py --config configs/synthetic_loso.py --folds 26 --steps 5
python benchmarks/finetune_step.py --config configs/casme2.py --config.dtype=bfloat16 --steps 20

Builds a group of F folds through the library (`ma2mi_jax.train.finetune.build_group`) on a random
data set of the protocol's size (uint8 pairs on the device, as a run keeps them), in the fold mode
the config selects (`--mode` to choose), and times per step of all F folds, each to
block_until_ready:
  pipeline    drawing the step's indices and pair transforms on the host, gathering the pairs and
              warping them on the device (what feeds the step);
  train_step  the optimisation step alone on frames already gathered and augmented;
  fold_step   both, one call of `FoldGroupRunner.train_step` per step;
  epoch_step  whole epochs of the loop a run executes (`FoldGroupRunner.run_epoch`), per step:
              fold_step without its per-call stacking of the folds' metrics.
`pipeline_overhead` = fold_step / train_step - 1 (target <= 10 %). Also prints compile time,
samples/s, FLOPs, achieved FLOP/s, MFU, peak memory and an estimate of the cross-validation's
training time.
"""

from __future__ import annotations

import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
import jax
import ml_collections
import numpy as np
from absl import flags

from ma2mi_jax import cli

FLAGS = common.define_common_flags()
FOLDS = flags.DEFINE_integer(
    "folds",
    0,
    "Folds in the timed group; 0 = finetune.folds_per_step, or every fold of the protocol when that is 0.",
)
NUM_SAMPLES = flags.DEFINE_integer(
    "num_samples", 0, "Samples of the data set for the training-time estimate; 0 = the table for data.name."
)

# LOSO size of each micro-expression protocol: (folds = subjects with a kept sample, kept samples).
# CASME II 5 classes: 26 subjects, 246 samples; SAMM 5 classes: 136 samples of at most 32 subjects;
# MMEW 6 classes: 30 subjects, 234 samples (docs/datasets.md#protocol-sizes). --folds / --num_samples
# override them.
PROTOCOL_SIZES = {"casme2": (26, 246), "samm": (32, 136), "mmew": (30, 234)}


def protocol_size(config: ml_collections.ConfigDict) -> tuple[int, int]:
    """(number of folds of the whole cross-validation, number of samples) for the config."""
    folds, samples = PROTOCOL_SIZES.get(str(config.data.name), (0, 0))
    if config.protocol.name == "kfold":
        folds = int(config.protocol.num_folds)
    if FOLDS.value > 0 and folds == 0:
        folds = FOLDS.value
    if NUM_SAMPLES.value > 0:
        samples = NUM_SAMPLES.value
    if folds == 0:
        sys.exit(f"error: no fold count known for data.name={config.data.name!r}; pass --folds")
    return folds, samples


def group_size(config: ml_collections.ConfigDict, total_folds: int) -> int:
    """F, the folds trained together in one step."""
    if FOLDS.value > 0:
        return FOLDS.value
    per_step = int(config.finetune.folds_per_step)
    return min(per_step, total_folds) if per_step > 0 else total_folds


MODE = flags.DEFINE_enum("mode", "auto", ["auto", "sequential", "vmapped"], "Fold mode; auto = the config's.")


class Bench:
    """One group of F folds built by the library on random data: trainer, frames, indices."""

    def __init__(
        self, config: ml_collections.ConfigDict, num_folds: int, num_samples: int, steps: int
    ) -> None:
        from ma2mi_jax.models import miacnet
        from ma2mi_jax.train import finetune
        from ma2mi_jax.train.finetune import fold_step as step
        from ma2mi_jax.train.finetune import plan

        config.init = "scratch"  # random parameters: the speed does not depend on them
        if MODE.value != "auto":
            config.finetune.sequential = MODE.value == "sequential"
        self.config = config
        rng = np.random.default_rng(FLAGS.seed.value)
        size, b = int(config.data.image_size), int(config.train.batch_size)
        pairs = common.random_frames(rng, (num_samples, 2, size, size, 3))  # [N,2,H,W,3]
        labels = common.random_labels(rng, (num_samples,), len(config.data.class_names))
        test = np.array_split(np.arange(num_samples), max(num_folds, 2))  # one held-out chunk per fold
        folds = tuple(
            plan.FoldSpec(i, f"fold{i}", (), np.setdiff1d(np.arange(num_samples), test[i]), test[i])
            for i in range(num_folds)
        )
        group = plan.Group("bench", folds, steps)
        self.model = finetune.build_classifier(config)
        variables, _ = finetune.initial_variables(config, self.model)
        iterations = miacnet.register_iterations(config.model)  # > 0: pairs registered here, once
        self.data = step.fold_data(pairs, labels, register_iterations=iterations, batch_size=b)
        self.trainer = finetune.build_group(
            group, config=config, model=self.model, variables=variables, data=self.data
        )
        self.folds = len(self.trainer.padded)
        self.batch = b

    def forward_flops(self) -> float:
        """Analytic forward FLOPs of the classifier per sample (MIACNet; the dense head is negligible)."""
        from ma2mi_jax.models import flops as flops_lib

        m = self.config.model
        return float(flops_lib.miacnet_flops(int(self.config.data.image_size), int(m.resnet_width), m.fusion))


def _input_fn(bench: Bench):
    """jit(batch {"indices","warp"} [F,B,...] -> augmented frames of every fold), in the runner's mode."""
    from ma2mi_jax.data.device_augment import PairAugment
    from ma2mi_jax.train.finetune import fold_step as step

    runner = bench.trainer.runner
    augment = PairAugment.from_config(bench.config.data.augment)
    one = jax.jit(lambda d, batch: step.augmented_batch(d, batch, augment))
    if runner.sequential:
        return lambda batch: [
            one(runner.data, {k: v[f] for k, v in batch.items()}) for f in range(bench.folds)
        ]
    many = jax.jit(jax.vmap(lambda d, batch: step.augmented_batch(d, batch, augment), in_axes=(None, 0)))
    return lambda batch: many(runner.data, runner.place(batch))


def _timed_first_call(fn, *args):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


def time_modes(bench: Bench) -> dict:
    """Compile and time pipeline alone, train step alone and both, per step of all F folds."""
    from ma2mi_jax import losses
    from ma2mi_jax.train.finetune import fold_step as step

    trainer, runner, keys = bench.trainer, bench.trainer.runner, bench.trainer.keys
    steps_per_epoch = trainer.batches.steps_per_epoch
    t0 = time.perf_counter()
    epochs_drawn = [trainer.batches.epoch(e) for e in range(1, 4)]  # leaves [S,F,B,...]
    host_s = (time.perf_counter() - t0) / (3 * steps_per_epoch)  # the host's share per step
    steps = [{k: v[s] for k, v in epoch.items()} for epoch in epochs_drawn for s in range(steps_per_epoch)]
    counter = {"i": 0}

    def draw() -> dict:
        counter["i"] += 1
        return steps[counter["i"] % len(steps)]  # leaves [F,B,...]

    make = _input_fn(bench)
    frames, pipeline_compile = _timed_first_call(lambda: make(draw()))
    _, pipe_times = common.time_steps(lambda _: make(draw()), None, FLAGS.warmup.value, FLAGS.steps.value)

    frame_step = step.make_frame_step(
        bench.model, trainer.tx, losses.cross_entropy, step.frozen_modules(bench.config.finetune)
    )
    if runner.sequential:
        jstep = jax.jit(frame_step, donate_argnums=0)

        def train(carry):
            for f in range(bench.folds):
                carry[f], _ = jstep(carry[f], frames[f], keys[f], None)
            return carry

    else:
        vstep = jax.jit(jax.vmap(frame_step, in_axes=(0, 0, 0, None)), donate_argnums=0)

        def train(carry):
            return vstep(carry, frames, keys, None)[0]

    state, train_compile = _timed_first_call(train, trainer.initial_state())
    _, train_times = common.time_steps(train, state, FLAGS.warmup.value, FLAGS.steps.value)

    last = {}

    def both(carry):
        carry, m = runner.train_step(carry, draw(), keys)
        last["loss"] = m["loss"]
        return carry

    compiled = runner.compiled_step(trainer.initial_state(), draw(), keys)  # the run's step, for its memory
    state, fold_compile = _timed_first_call(both, trainer.initial_state())
    _, both_times = common.time_steps(both, state, FLAGS.warmup.value, FLAGS.steps.value)

    def epoch(carry):
        counter["i"] += 1
        return runner.run_epoch(carry, epochs_drawn[counter["i"] % len(epochs_drawn)], keys)[0]

    epochs = max(1, math.ceil(FLAGS.steps.value / steps_per_epoch))
    # The step is compiled already (fold_step): one untimed epoch warms the loop.
    _, epoch_times = common.time_steps(epoch, trainer.initial_state(), 1, epochs)
    per_step = common.StepTimes([t / steps_per_epoch for t in epoch_times.seconds])
    return {
        "host_draw_s": host_s,
        "pipeline": (pipeline_compile, pipe_times),
        "train_step": (train_compile, train_times),
        "fold_step": (fold_compile, both_times),
        "epoch_step": per_step,
        "loss": np.asarray(jax.device_get(last["loss"]))[: len(trainer.real)],
        "memory_estimate": common.memory_estimate_line(compiled),
    }


def main(argv: list[str]) -> None:
    """Build one group of folds for --config, time pipeline / step / both and print the figures."""
    cli.check_no_extra_args(argv)
    config = common.unlocked_copy(FLAGS.config.value)
    total_folds, num_samples = protocol_size(config)
    folds = group_size(config, total_folds)
    b = int(config.train.batch_size)
    epochs = int(config.train.epochs)
    samples_for_data = num_samples or max(4 * b, 2 * folds)
    max_train = samples_for_data - samples_for_data // max(total_folds, 1)
    steps_per_epoch = max(1, math.ceil(max_train / b))
    bench = Bench(config, folds, samples_for_data, steps_per_epoch)
    model_flops = 3.0 * bench.forward_flops() * b * bench.folds
    r = time_modes(bench)
    if not np.all(np.isfinite(r["loss"])):
        raise FloatingPointError(f"fold step: non-finite loss {r['loss']}; the step is broken")
    c = bench.config
    mode = "sequential" if bench.trainer.runner.sequential else "vmapped"
    lines = common.header(f"fine-tuning fold step: input pipeline, train step, both ({mode})")
    lines += [
        f"shape: {bench.folds} fold(s) x batch {b} of {c.data.image_size}x{c.data.image_size} onset/apex "
        f"pairs, resnet_width={c.model.resnet_width}, fusion={c.model.fusion}, dtype={c.dtype}, "
        f"augment=crop_pad {c.data.augment.crop_pad} / rotation {c.data.augment.rotation_deg} deg / "
        f"flip {c.data.augment.flip}; data set {samples_for_data} pairs on the device",
        f"mode: {mode} (folds: {bench.folds}, group of {folds}, {jax.device_count()} device(s))",
        f"flops_per_step_analytic: {model_flops:.4g} FLOP (3 x forward x batch x folds, models.flops)",
        f"host_draw_ms: {r['host_draw_s'] * 1e3:.3f} ms (the host's share of the pipeline per step)",
    ]
    for name, (compile_s, times) in ((k, r[k]) for k in ("pipeline", "train_step", "fold_step")):
        lines.append(f"{name}_compile_s: {compile_s:.3f} s (first call)")
        lines.append(f"{name}_ms: {times.median * 1e3:.2f} ms ({times.describe()}; all {bench.folds} folds)")
    lines.append(
        f"epoch_step_ms: {r['epoch_step'].median * 1e3:.2f} ms ({r['epoch_step'].describe()}, per step of "
        f"whole epochs of the run's loop, runner.run_epoch; all {bench.folds} folds)"
    )
    fold_s = r["fold_step"][1].median
    lines += [
        f"pipeline_overhead: {100 * (fold_s / r['train_step'][1].median - 1):.1f} % "
        "(fold_step / train_step - 1; target <= 10 %)",
        f"samples_per_s: {bench.folds * b / fold_s:.1f} (fold_step, F x B per step)",
        f"achieved_flops: {model_flops / fold_s:.4g} FLOP/s (analytic, fold_step)",
        common.mfu_line(model_flops / fold_s, str(c.dtype)),
        r["memory_estimate"] + (" (one fold's step)" if bench.trainer.runner.sequential else ""),
        common.peak_memory_line(),
    ]
    if num_samples:
        groups = math.ceil(total_folds / folds)
        est = groups * (r["fold_step"][0] + epochs * steps_per_epoch * fold_s)
        lines += [
            f"cv_plan: {total_folds} folds of {num_samples} samples in {groups} group(s) of {folds}, "
            f"{epochs} epochs x {steps_per_epoch} steps (largest training set ~{max_train} samples)",
            f"cv_train_estimate_s: {est:.1f} s ({groups * epochs * steps_per_epoch} steps + first call per "
            "group; no evaluation)",
        ]
    common.print_block(lines)


if __name__ == "__main__":
    cli.run(main)
