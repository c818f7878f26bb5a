"""What the benchmark scripts share: config flags, synthetic batches, timing, memory, FLOP/s and MFU.

Every figure is printed as one `name: value [unit]` line inside a block that starts with
`== title ==` and names the device and the load average, so that a figure can be read by eye and
parsed by a script (`parse_figures`).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import re
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import flags
from ml_collections import config_flags

# Make `python benchmarks/x.py` work from the repository root without installing anything else.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Dense bf16 peak FLOP/s per device, keyed by a substring of `jax.Device.device_kind`.
# (NVIDIA data sheets: H100 SXM 989.4 TFLOP/s, H100 PCIe 756 TFLOP/s, H200 989.4 TFLOP/s,
# A100 312 TFLOP/s, all dense, without sparsity.) Checked in order: PCIe before the generic H100.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
)

MIB = 2**20
FIGURE_LINE = re.compile(r"^([A-Za-z0-9_]+): (-?[0-9.]+(?:[eE][-+]?[0-9]+)?)\b")


# ----------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class CommonFlags:
    """The flags every benchmark script has."""

    config: Any  # config_flags holder of --config
    steps: Any
    warmup: Any
    seed: Any


def define_common_flags() -> CommonFlags:
    """Define --config (path[:arg] plus --config.x=y overrides), --steps, --warmup, --bench_seed."""
    config = config_flags.DEFINE_config_file(
        "config",
        None,
        "Config file[:arg], e.g. configs/dfew.py or configs/synthetic_pretrain.py:tiny.",
        lock_config=True,
    )
    flags.mark_flags_as_required(["config"])
    return CommonFlags(
        config=config,
        steps=flags.DEFINE_integer("steps", 10, "Timed steps (the median step time is reported)."),
        warmup=flags.DEFINE_integer("warmup", 2, "Untimed steps run after compilation and before timing."),
        seed=flags.DEFINE_integer("bench_seed", 0, "Seed of the random batches."),
    )


def unlocked_copy(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """An unlocked deep copy of a config (a benchmark may set keys such as init in it)."""
    return ml_collections.ConfigDict(config.to_dict())


def config_name() -> str:
    """The `--config` argument as typed (path[:arg])."""
    args = sys.argv[1:]
    for i, a in enumerate(args):
        if a.startswith("--config="):
            return a.split("=", 1)[1]
        if a == "--config" and i + 1 < len(args):
            return args[i + 1]
    return "?"


def overrides() -> list[str]:
    """The `--config.x=y` overrides given on the command line."""
    return [a for a in sys.argv[1:] if a.startswith("--config.")]


# ----------------------------------------------------------------------------- batches


def random_frames(rng: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
    """Random uint8 frames of `shape` (e.g. [B,H,W,3]): the benchmarks need no data on disk."""
    return rng.integers(0, 256, size=tuple(shape), dtype=np.uint8)


def random_labels(rng: np.random.Generator, shape: Sequence[int], num_classes: int) -> np.ndarray:
    """Random int32 class labels in [0, num_classes)."""
    return rng.integers(0, max(num_classes, 1), size=tuple(shape), dtype=np.int32)


# ----------------------------------------------------------------------------- timing


@dataclasses.dataclass
class StepTimes:
    """Wall-clock seconds of the timed steps."""

    seconds: list[float]

    @property
    def median(self) -> float:
        """Median seconds per step."""
        return float(statistics.median(self.seconds))

    @property
    def mean(self) -> float:
        """Mean seconds per step."""
        return float(statistics.fmean(self.seconds))

    def describe(self) -> str:
        """'median of N; min .. max ms' for a figure's comment."""
        lo, hi = min(self.seconds) * 1e3, max(self.seconds) * 1e3
        return f"median of {len(self.seconds)}; min {lo:.2f}, max {hi:.2f}, mean {self.mean * 1e3:.2f} ms"


def compile_timed(jitted: Any, *args: Any) -> tuple[Any, float]:
    """(compiled executable, seconds) of `jitted.lower(*args).compile()`."""
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def time_steps(step: Callable[[Any], Any], carry: Any, warmup: int, steps: int) -> tuple[Any, StepTimes]:
    """Run `carry = step(carry)` warmup times, then `steps` times, each timed to block_until_ready.

    `step` gets and returns the loop carry (e.g. the train state, which a donating step consumes).
    """
    for _ in range(max(warmup, 0)):
        carry = jax.block_until_ready(step(carry))
    seconds = []
    for _ in range(max(steps, 1)):
        t0 = time.perf_counter()
        carry = jax.block_until_ready(step(carry))
        seconds.append(time.perf_counter() - t0)
    return carry, StepTimes(seconds)


def xla_flops(compiled: Any) -> float:
    """FLOPs of one call of a compiled executable (XLA cost analysis, all devices; 0 if none)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:
        return 0.0
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", 0.0)) * jax.device_count()


def memory_estimate_line(compiled: Any) -> str:
    """'memory_estimate: N MiB' of one device from XLA's memory analysis of a compiled executable.

    arguments + outputs + temporaries − buffers aliased (donated) between them: what XLA plans to
    hold on one device while the step runs (the compiler's own figure, before the allocator).
    """
    try:
        m = compiled.memory_analysis()
    except Exception:
        m = None
    if m is None:
        return "memory_estimate: n/a (no memory analysis on this backend)"
    total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
    return (
        f"memory_estimate: {total / MIB:.1f} MiB (XLA memory analysis, one device: arguments "
        f"{m.argument_size_in_bytes / MIB:.1f} + outputs {m.output_size_in_bytes / MIB:.1f} + temporaries "
        f"{m.temp_size_in_bytes / MIB:.1f} - donated {m.alias_size_in_bytes / MIB:.1f} MiB)"
    )


# ----------------------------------------------------------------------------- device, memory, MFU


def device_kind() -> str:
    """The first device's kind, e.g. 'NVIDIA H100 80GB HBM3' or 'cpu'."""
    return str(jax.devices()[0].device_kind)


def peak_flops_per_device(kind: str) -> float | None:
    """Dense bf16 peak FLOP/s of one device of `kind`, or None when the kind is not in the table."""
    for key, peak in PEAK_BF16_FLOPS:
        if key.lower() in kind.lower():
            return peak
    return None


def mfu_line(model_flops_per_s: float, dtype: str) -> str:
    """'MFU: x %' against the dense bf16 peak of all devices, or 'MFU: n/a on <kind>'."""
    kind = device_kind()
    peak = peak_flops_per_device(kind)
    if peak is None:
        return f"MFU: n/a on {kind}"
    total = peak * jax.device_count()
    note = "" if dtype == "bfloat16" else f"; the config computes in {dtype}"
    return (
        f"MFU: {100 * model_flops_per_s / total:.2f} % (analytic FLOP/s over the dense bf16 peak "
        f"{total / 1e12:.0f} TFLOP/s of {jax.device_count()} x {kind}{note})"
    )


def peak_memory_line() -> str:
    """'peak_memory: N MiB (device)' from the device's memory_stats, else the process's max host RSS."""
    stats = jax.devices()[0].memory_stats()
    if stats and "peak_bytes_in_use" in stats:
        peak = max(int((d.memory_stats() or {}).get("peak_bytes_in_use", 0)) for d in jax.local_devices())
        return f"peak_memory: {peak / MIB:.1f} MiB (device peak_bytes_in_use, largest over local devices)"
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes
    return f"peak_memory: {rss_kib * scale / MIB:.1f} MiB (host RSS, process maximum; no device memory stats)"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages and the CPU count."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} CPU(s)"


def header(title: str) -> list[str]:
    """The first lines of a figure block: title, config, device, software, date, load average."""
    devices = jax.devices()
    return [
        f"== {title} ==",
        f"config: {config_name()} {' '.join(overrides())}".rstrip(),
        f"device: {len(devices)} x {device_kind()} ({devices[0].platform}); host {platform.node()}",
        f"software: jax {jax.__version__}, python {platform.python_version()}",
        f"date: {datetime.date.today().isoformat()}",
        f"load_average: {load_average()}",
    ]


def print_block(lines: Sequence[str]) -> None:
    """Print a figure block (with the load average again at the end: the machine may be shared)."""
    print("\n".join([*lines, f"load_average_end: {load_average()}", ""]), flush=True)


def rate_lines(
    prefix: str, times: StepTimes, samples_per_step: int, model_flops: float, xla: float
) -> list[str]:
    """step ms, samples/s and achieved FLOP/s lines for one timed step."""
    sec = times.median
    return [
        f"{prefix}step_ms: {sec * 1e3:.3f} ms ({times.describe()})",
        f"{prefix}samples_per_s: {samples_per_step / sec:.2f} samples/s ({samples_per_step} per step)",
        f"{prefix}achieved_flops_per_s: {model_flops / sec:.4g} FLOP/s (analytic FLOPs / median step)",
        f"{prefix}achieved_xla_flops_per_s: {xla / sec:.4g} FLOP/s (XLA cost analysis / median step)",
    ]


def parse_figures(text: str) -> dict[str, float]:
    """{name: value} of every `name: number ...` line of a benchmark's output (later lines win)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = FIGURE_LINE.match(line.strip())
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def repo_path(*parts: str) -> str:
    """A path inside the repository."""
    return os.path.join(REPO_ROOT, *parts)
