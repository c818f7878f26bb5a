"""Speed of the fine-tuning fold step: F folds vmapped in one step vs the sequential loop over them.

python benchmarks/finetune_step.py --config configs/synthetic_loso.py:tiny --folds 3 --steps 3
python benchmarks/finetune_step.py --config configs/casme2.py --config.dtype=bfloat16

Builds the library's per-fold step (`ma2mi_jax.train.folds.make_train_step`) for the config's
classifier, optimiser and frozen encoders, then times, on the same random uint8 batches and fold
keys, (a) `jit(vmap(step))` over the F stacked folds, as `FoldGroupRunner` runs it, and (b) the
sequential mode of `FoldGroupRunner`: the jitted single-fold step called once per fold. Prints
compile time, step time, samples/s (F x B per step), FLOPs, achieved FLOP/s, MFU, peak memory, the
sequential/vmapped ratio and an estimate of the cross-validation's training time.
"""

from __future__ import annotations

import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
import jax
import jax.numpy as jnp
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
SEQUENTIAL = flags.DEFINE_bool("sequential", True, "Also time the sequential loop over the same folds.")

# LOSO size of each micro-expression protocol: (folds = subjects with a kept sample, kept samples).
# CASME II 5 classes: 26 subjects, 246 samples; SAMM 5 classes: 136 samples of at most 32 subjects;
# MMEW 6 classes: 30 subjects, 234 samples (docs/datasets). --folds / --num_samples override them.
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


class Bench:
    """The fold step of one config: model, optimiser, step function, stacked state, batches, keys."""

    def __init__(self, config: ml_collections.ConfigDict, num_folds: int, schedule_steps: int) -> None:
        from ma2mi_jax import losses
        from ma2mi_jax.train import finetune, optim
        from ma2mi_jax.train import folds as folds_lib

        config.init = "scratch"  # random parameters: the speed does not depend on them
        self.config = config
        self.model = finetune.build_classifier(config)
        self.variables, _ = finetune.initial_variables(config, self.model)
        self.frozen = folds_lib.frozen_modules(config.finetune)
        trainable = folds_lib.trainable_fn(self.frozen) if self.frozen else None
        self.tx = optim.make_optimizer(config.train, schedule_steps, trainable)
        self.step = folds_lib.make_train_step(self.model, self.tx, losses.cross_entropy, self.frozen)
        self.mesh = folds_lib.fold_mesh()
        self.folds = num_folds
        self.padded = folds_lib.padded_group_size(num_folds, self.mesh)
        self.runner = folds_lib.FoldGroupRunner(
            self.step, folds_lib.make_predict(self.model), sequential=False, mesh=self.mesh
        )
        seed = int(config.seed)
        self.keys = jnp.stack([folds_lib.fold_key(seed, i) for i in range(self.padded)])  # key[F]
        rng = np.random.default_rng(FLAGS.seed.value)
        b, size = int(config.train.batch_size), int(config.data.image_size)
        shape = (self.padded, b, size, size, 3)
        self.host_batches = [
            {
                "frame0": common.random_frames(rng, shape),  # onset uint8 [F,B,H,W,3]
                "frame1": common.random_frames(rng, shape),  # apex
                "label": common.random_labels(rng, (self.padded, b), len(config.data.class_names)),
            }
            for _ in range(2)
        ]

    def fresh_state(self):
        """Every fold at step 0 from the same variables, stacked on the fold axis [F,...]."""
        from ma2mi_jax.train import folds as folds_lib

        return folds_lib.init_fold_state(self.variables, self.tx, self.padded)

    def forward_flops(self) -> float:
        """Analytic forward FLOPs of the classifier per sample (MIACNet; the dense head is negligible)."""
        from ma2mi_jax.models import flops as flops_lib

        m = self.config.model
        return float(flops_lib.miacnet_flops(int(self.config.data.image_size), int(m.resnet_width), m.fusion))


def time_vmapped(bench: Bench) -> dict:
    """Compile and time jit(vmap(step)) over the F folds, as FoldGroupRunner does."""
    runner = bench.runner
    state = runner.place(bench.fresh_state())
    keys = runner.place(bench.keys)
    batches = [runner.place(b) for b in bench.host_batches]
    jitted = jax.jit(jax.vmap(bench.step), donate_argnums=0)  # FoldGroupRunner's vmapped step
    compiled, compile_s = common.compile_timed(jitted, state, batches[0], keys)
    counter = {"i": 0}

    def one(carry):
        counter["i"] += 1
        return compiled(carry[0], batches[counter["i"] % 2], keys)

    (state, metrics), times = common.time_steps(one, (state, None), FLAGS.warmup.value, FLAGS.steps.value)
    loss = np.asarray(jax.device_get(metrics["loss"]))[: bench.folds]
    return {"compile_s": compile_s, "times": times, "xla": common.xla_flops(compiled), "loss": loss}


def time_sequential(bench: Bench) -> dict:
    """Compile and time FoldGroupRunner's sequential mode (one in-place single-fold call per fold)."""
    from ma2mi_jax.train import folds as folds_lib

    runner = folds_lib.FoldGroupRunner(bench.step, folds_lib.make_predict(bench.model), sequential=True)
    state = runner.place(bench.fresh_state())
    batches = [runner.place(b) for b in bench.host_batches]
    keys = bench.keys
    start = time.perf_counter()
    state, _ = runner.train_step(state, batches[0], keys)  # compiles the single-fold step once
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - start
    state = runner.place(bench.fresh_state())  # start again from step 0, like the vmapped timing
    counter = {"i": 0}

    def one(carry):
        counter["i"] += 1
        return runner.train_step(carry[0], batches[counter["i"] % 2], keys)

    (state, metrics), times = common.time_steps(one, (state, None), FLAGS.warmup.value, FLAGS.steps.value)
    loss = np.asarray(jax.device_get(metrics["loss"]))[: bench.folds]
    first = jax.tree.map(lambda x: x[0], (bench.fresh_state(), bench.host_batches[0]))
    compiled, _ = common.compile_timed(jax.jit(bench.step), *first, keys[0])
    xla = common.xla_flops(compiled) * bench.padded
    return {"compile_s": compile_s, "times": times, "xla": xla, "loss": loss}


def figure_lines(prefix: str, result: dict, bench: Bench, model_flops: float) -> list[str]:
    """The figures of one mode."""
    samples = bench.padded * int(bench.config.train.batch_size)
    return [
        f"{prefix}compile_s: {result['compile_s']:.3f} s (jit(...).lower(...).compile())",
        *common.rate_lines(prefix, result["times"], samples, model_flops, result["xla"]),
        f"{prefix}flops_per_step_xla: {result['xla']:.4g} FLOP (XLA cost analysis)",
        f"{prefix}{common.mfu_line(model_flops / result['times'].median, str(bench.config.dtype))}",
    ]


def main(argv: list[str]) -> None:
    """Build the fold step for --config, time both modes and print the figures."""
    cli.check_no_extra_args(argv)
    config = common.unlocked_copy(FLAGS.config.value)
    total_folds, num_samples = protocol_size(config)
    folds = group_size(config, total_folds)
    b = int(config.train.batch_size)
    epochs = int(config.train.epochs)
    max_train = num_samples - num_samples // max(total_folds, 1) if num_samples else b
    steps_per_epoch = max(1, math.ceil(max_train / b))
    bench = Bench(config, folds, epochs * steps_per_epoch)
    model_flops = 3.0 * bench.forward_flops() * b * bench.padded
    vm = time_vmapped(bench)
    seq = time_sequential(bench) if SEQUENTIAL.value else None
    for name, r in (("vmapped", vm), ("sequential", seq)):
        if r is not None and not np.all(np.isfinite(r["loss"])):
            raise FloatingPointError(f"{name} step: non-finite loss {r['loss']}; the step is broken")

    c = bench.config
    lines = common.header(f"fine-tuning fold step: {folds} fold(s) vmapped vs sequential")
    lines += [
        f"shape: {bench.padded} fold(s) x batch {b} of {c.data.image_size}x{c.data.image_size} onset/apex "
        f"pairs, resnet_width={c.model.resnet_width}, fusion={c.model.fusion}, dtype={c.dtype}, "
        f"frozen={list(bench.frozen) or 'none'}",
        f"folds: {bench.padded} (group of {folds}, padded to the {jax.device_count()} device(s))",
        f"flops_per_step_analytic: {model_flops:.4g} FLOP "
        "(3 x forward x batch x folds, ma2mi_jax.models.flops)",
        *figure_lines("vmapped_", vm, bench, model_flops),
    ]
    if seq is not None:
        lines += figure_lines("sequential_", seq, bench, model_flops)
        ratio = seq["times"].median / vm["times"].median
        lines.append(
            f"sequential_over_vmapped: {ratio:.3f} x (sequential step time / vmapped step time, same work)"
        )
        lines.append(
            f"max_loss_difference: {float(np.max(np.abs(seq['loss'] - vm['loss']))):.3g} "
            "(vmapped vs sequential, last step; same batches and keys)"
        )
    lines.append(common.peak_memory_line())
    if num_samples:
        groups = math.ceil(total_folds / folds)
        steps_total = groups * epochs * steps_per_epoch
        est = groups * (vm["compile_s"] + epochs * steps_per_epoch * vm["times"].median)
        lines += [
            f"cv_plan: {total_folds} folds of {num_samples} samples in {groups} group(s) of {folds}, "
            f"{epochs} epochs x {steps_per_epoch} steps (largest training set ~{max_train} samples)",
            f"cv_train_estimate_s: {est:.1f} s vmapped ({steps_total} steps + compile per group; "
            "no evaluation, no data loading)",
        ]
        if seq is not None:
            est_seq = groups * (seq["compile_s"] + epochs * steps_per_epoch * seq["times"].median)
            lines.append(f"cv_train_estimate_sequential_s: {est_seq:.1f} s sequential (same)")
    common.print_block(lines)


if __name__ == "__main__":
    cli.run(main)
