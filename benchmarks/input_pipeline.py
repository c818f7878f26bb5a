"""Rate of the pre-training input pipeline: pairs per second of one host core, and the cores a rate needs.

python benchmarks/input_pipeline.py --config configs/dfew.py --batches 20
python benchmarks/input_pipeline.py --config configs/synthetic_pretrain.py:tiny --batches 3

Generates a DFEW-layout set at the config's frame size (or reads `--data`, any layout the config's
reader takes), reads it with the config's reader, and iterates `pretrain_iterator` in this process
with one read thread and no worker processes, with the config's augmentation: per pair, two JPEG
frames decoded, cropped, augmented and batched. That is one core's work, which Grain's worker
processes (`data.workers`) split by element; the CPU seconds of the process give pairs per core
whatever else the machine runs. Prints `pairs_per_core_s`, and with `--target` the `cores_needed`
for that many pairs/s (docs/decisions.md derives the rate a GPU step takes at 224 px).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
from absl import flags

from ma2mi_jax import cli
from ma2mi_jax.data.pretrain_pipeline import pretrain_iterator
from ma2mi_jax.data.readers import registry
from ma2mi_jax.data.synthetic import generator as synthetic

FLAGS = common.define_common_flags()
DATA = flags.DEFINE_string("data", "", "A macro set to read (default: generate a DFEW-layout one).")
CLIPS_SCALE = flags.DEFINE_float("clips_scale", 0.25, "Size of the generated set (x DFEW's clip count).")
BATCHES = flags.DEFINE_integer("batches", 10, "Timed batches (after one untimed).")
TARGET = flags.DEFINE_float(
    "target", 0.0, "Pairs per second the host must deliver (0: no cores_needed line)."
)


def main(argv: list[str]) -> None:
    """Read the set through the pre-training pipeline and print its rate."""
    cli.check_no_extra_args(argv)
    config = common.unlocked_copy(FLAGS.config.value)
    size, batch = int(config.data.image_size), int(config.train.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        root = DATA.value
        if not root:
            root = os.path.join(tmp, "dfew")
            synthetic.generate(
                "dfew", root, size=size, clips_scale=CLIPS_SCALE.value, progress=False, preview=False
            )
            config.data.name, config.data.source = "dfew", "frames"
        config.data.root = root
        clips, _ = registry.read_macro(config.data)
        iterator = pretrain_iterator(
            clips,
            image_size=size,
            k_min=int(config.data.k_min),
            k_max=int(config.data.k_max),
            batch_size=batch,
            seed=FLAGS.seed.value,
            augment=config.data.augment,
            workers=0,
            threads=1,
        )
        next(iterator)  # untimed: imports, first file opens
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(BATCHES.value):
            next(iterator)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    pairs = BATCHES.value * batch
    per_core = pairs / max(cpu, 1e-9)
    lines = common.header("pre-training input pipeline (frame folders, one core)")
    lines += [
        f"clips: {len(clips)} at {size} px, batch {batch}, {BATCHES.value} timed batches",
        f"pairs_per_s: {pairs / wall:.1f} pairs/s (wall; the machine's other work included)",
        f"pairs_per_core_s: {per_core:.1f} pairs per CPU-second of this process",
        f"cpu_ms_per_pair: {1e3 / per_core:.3f} ms",
    ]
    if TARGET.value > 0:
        lines.append(f"cores_needed: {TARGET.value / per_core:.2f} cores for {TARGET.value:.0f} pairs/s")
    common.print_block(lines)


if __name__ == "__main__":
    cli.run(main)
