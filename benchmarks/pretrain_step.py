"""Speed of the MA2MI pre-training step for a config, on random in-memory batches (no data needed).

python benchmarks/pretrain_step.py --config configs/synthetic_pretrain.py:tiny --steps 3
python benchmarks/pretrain_step.py --config configs/dfew.py --config.dtype=bfloat16 --latent_cache

Builds the library's own step (`ma2mi_jax.train.pretrain.step.make_train_step`, jitted with the state
donated and replicated as `train.pretrain.loop.run_loop` does), compiles it ahead of time, runs it on random
uint8 frames of the config's shapes, and prints compile time, step time, samples/s, FLOPs per step
(analytic and XLA's), achieved FLOP/s, MFU and peak memory. `--latent_cache` times the step twice,
encoding x_t and x_{t+k} with the frozen VAE inside the step and reading precomputed latents, and
prints the ratio.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
import jax
import ml_collections
import numpy as np
from absl import flags

from ma2mi_jax import cli

FLAGS = common.define_common_flags()
LATENT_CACHE = flags.DEFINE_bool(
    "latent_cache", False, "Time on-the-fly VAE encoding and precomputed latents; print the ratio."
)
# Length of the learning-rate schedule when the config counts epochs (it does not change the speed).
SCHEDULE_STEPS = 10_000


class Bench:
    """The pieces of one pre-training step: config, models, frozen VAE, optimiser, state, mesh."""

    def __init__(self, config: ml_collections.ConfigDict) -> None:
        from ma2mi_jax.models import vae as vae_lib
        from ma2mi_jax.train import mesh as mesh_lib
        from ma2mi_jax.train.pretrain import loop as loop_lib
        from ma2mi_jax.train.pretrain import setup
        from ma2mi_jax.train.pretrain import state as state_lib
        from ma2mi_jax.train.pretrain import step as pretrain_step

        config.init = ""  # random parameters: the speed does not depend on them
        check_config(config)
        self.config = config
        self.vae = None
        if config.objective == "reconstruction" and config.space == "latent":
            self.vae = vae_lib.vae_from_config(config.vae, config.data.image_size, seed=config.seed)
        num_classes = len(tuple(config.data.class_names))
        self.num_classes = num_classes
        self.models = state_lib.build_models(config, num_classes, self.vae)
        self.total = int(config.train.steps) if int(config.train.steps) > 0 else SCHEDULE_STEPS
        self.tx = state_lib.pretrain_optimizer(config, self.total)
        self.mesh = mesh_lib.make_mesh()
        # Host copies, so that every timed mode starts from fresh device buffers (the step donates them).
        self.params, self.batch_stats = jax.device_get(init_params(self.models, config.seed))
        self.vae_params = mesh_lib.replicate(self.vae.params, self.mesh) if self.vae is not None else {}
        replicated = mesh_lib.replicated(self.mesh)
        self.step_fn = jax.jit(
            pretrain_step.make_train_step(self.models, config, self.tx, self.total, self.vae),
            donate_argnums=(0,),
            out_shardings=(replicated, replicated),
        )
        # loop_lib.analytic_flops reads only the config and the models of a Run.
        run = setup.Run(config, "", [], [], self.models, self.vae, self.total, 0, self.mesh)
        self.model_flops = float(loop_lib.analytic_flops(run))

    def fresh_state(self):
        """A new replicated step-0 state (the timed step donates the previous one)."""
        from ma2mi_jax.train import mesh as mesh_lib
        from ma2mi_jax.train.pretrain import state as state_lib

        return mesh_lib.replicate(
            state_lib.create_train_state(self.params, self.batch_stats, self.tx), self.mesh
        )

    def batches(self, cached: bool, count: int = 2) -> list[dict]:
        """`count` random device batches of the config's shapes (+ latents of the same frames if cached)."""
        from ma2mi_jax.train import mesh as mesh_lib

        c = self.config
        rng = np.random.default_rng(FLAGS.seed.value)
        b, size = int(c.train.batch_size), int(c.data.image_size)
        local = b // jax.process_count()
        encode = jax.jit(self.vae.encode) if cached else None
        out = []
        for _ in range(count):
            host = {
                "frame0": common.random_frames(rng, (local, size, size, 3)),  # uint8 [B,H,W,3]
                "frame1": common.random_frames(rng, (local, size, size, 3)),
                "label": common.random_labels(rng, (local,), self.num_classes),  # int32 [B]
                "k": rng.integers(int(c.data.k_min), int(c.data.k_max) + 1, size=local, dtype=np.int32),
            }
            if cached:  # f32 [B,h,w,c], what the latent cache would hand the step
                host["latent0"] = np.asarray(encode(self.vae.params, host["frame0"]))
                host["latent1"] = np.asarray(encode(self.vae.params, host["frame1"]))
            out.append(mesh_lib.shard_batch(host, self.mesh))
        return out

    def vae_encode_flops(self) -> float:
        """Forward FLOPs of encoding x_t and x_{t+k} of one global batch with the frozen VAE."""
        from ma2mi_jax.models import flops as flops_lib

        cfg = self.vae.module.config
        per_image = flops_lib.vae_encoder_flops(
            int(self.config.data.image_size),
            tuple(cfg.block_out_channels),
            int(cfg.layers_per_block),
            int(cfg.latent_channels),
        )
        return 2.0 * per_image * int(self.config.train.batch_size)


def init_params(models, seed: int):
    """(params, batch_stats) from the library's (jitted) `init_variables`, with an "rbg" key.

    The values do not change the speed; the rbg key makes the initialisation compile faster on a CPU
    than threefry (docs/decisions.md#rbg-key-for-random-initialisation).
    """
    from ma2mi_jax.train.pretrain import state as state_lib

    return state_lib.init_variables(models, jax.random.key(int(seed), impl="rbg"))


def check_config(config: ml_collections.ConfigDict) -> None:
    """The library's config checks, except that data.root need not exist (the batches are random)."""
    from ma2mi_jax.train.pretrain import checks as validate

    probe = common.unlocked_copy(config)
    probe.data.root = common.REPO_ROOT
    validate.validate_pretrain_config(probe, num_devices=jax.device_count())


def time_mode(bench: Bench, cached: bool, label: str) -> dict[str, float]:
    """Compile and time the step in one mode; print its figure block; return its headline figures."""
    c = bench.config
    batches = bench.batches(cached)
    state = bench.fresh_state()
    compiled, compile_s = common.compile_timed(bench.step_fn, state, bench.vae_params, batches[0])
    xla = common.xla_flops(compiled)
    counter = {"i": 0}

    def one(st):
        counter["i"] += 1
        new_state, metrics = compiled(st, bench.vae_params, batches[counter["i"] % len(batches)])
        return new_state, metrics

    (state, metrics), times = common.time_steps(
        lambda carry: one(carry[0]), (state, None), FLAGS.warmup.value, FLAGS.steps.value
    )
    loss = float(jax.device_get(metrics["loss"]))
    batch = int(c.train.batch_size)
    from ma2mi_jax.train.pretrain import state as state_lib

    lines = common.header(f"pre-training step: {label}")
    lines += [
        f"shape: batch {batch} (global) of {c.data.image_size}x{c.data.image_size} frame pairs, "
        f"objective={c.objective}, space={c.space}, dit={c.model.dit}, resnet_width={c.model.resnet_width}, "
        f"dtype={c.dtype}, position_loss={'on' if c.position_loss.enabled else 'off'}",
        f"trainable_params: {state_lib.param_count(bench.params)}",
        f"compile_s: {compile_s:.3f} s (jit(...).lower(...).compile())",
        *common.rate_lines("", times, batch, bench.model_flops, xla),
        f"flops_per_step_analytic: {bench.model_flops:.4g} FLOP "
        "(3 x forward x batch, ma2mi_jax.models.flops)",
        f"flops_per_step_xla: {xla:.4g} FLOP (XLA cost analysis of the compiled step)",
        common.memory_estimate_line(compiled),
    ]
    if bench.vae is not None and not cached:
        lines.append(
            f"vae_encode_flops_per_step: {bench.vae_encode_flops():.4g} FLOP (frozen VAE, x_t and x_t+k, "
            "forward only; not in the analytic figure)"
        )
    lines += [
        common.mfu_line(bench.model_flops / times.median, str(c.dtype)),
        common.peak_memory_line(),
        f"final_loss: {loss:.5f} (finite check)",
    ]
    common.print_block(lines)
    if not np.isfinite(loss):
        raise FloatingPointError(f"{label}: the loss is not finite ({loss}); the step is broken")
    return {"step_ms": times.median * 1e3, "compile_s": compile_s}


def main(argv: list[str]) -> None:
    """Build the step for --config and print its figures."""
    cli.check_no_extra_args(argv)
    bench = Bench(common.unlocked_copy(FLAGS.config.value))
    if not LATENT_CACHE.value:
        cached = bench.vae is not None and bool(bench.config.data.latent_cache)
        label = "pixel space" if bench.models.grid == bench.config.data.image_size else "VAE latents"
        if bench.models.supervised:
            label = "supervised (MAER)"
        elif bench.vae is not None:
            label = "precomputed latents (data.latent_cache)" if cached else "on-the-fly VAE encoding"
        time_mode(bench, cached, label)
        return
    if bench.vae is None:
        sys.exit(
            "error: --latent_cache needs objective='reconstruction' and space='latent' (a VAE); "
            f"the config has objective={bench.config.objective!r}, space={bench.config.space!r}"
        )
    live = time_mode(bench, False, "on-the-fly VAE encoding")
    cached = time_mode(bench, True, "precomputed latents (data.latent_cache)")
    lines = common.header("latent cache vs on-the-fly VAE encoding")
    lines += [
        f"onthefly_step_ms: {live['step_ms']:.3f} ms",
        f"cached_step_ms: {cached['step_ms']:.3f} ms",
        f"latent_cache_speedup: {live['step_ms'] / cached['step_ms']:.3f} x (on-the-fly / cached step time)",
    ]
    common.print_block(lines)


if __name__ == "__main__":
    cli.run(main)
