"""Will a compiled step fit the device? XLA's memory estimate against the device's memory, before a run.

Both jobs compile their training step ahead of its first call and compare what XLA plans to hold on
one device while the step runs (arguments + outputs + temporaries − donated buffers, the
compiler's figure before the allocator) with the device's memory: the limit the device reports
(GPUs, TPUs), or `device_memory_gb` from the config, which also lets a user check a config against
a smaller card (a CPU computes bfloat16 in float32, so its estimate of a bf16 run is the float32
one). Over the limit, the run warns with the overrides that lower the figure and goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import jax

GIB = 1 << 30
log = logging.getLogger(__name__)


def estimate_bytes(compiled: Any) -> int | None:
    """Bytes one device holds while `compiled` runs, by XLA's memory analysis (None where it has none)."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # backends without the analysis raise rather than return None
        return None
    if m is None:
        return None
    held = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
    return int(held - m.alias_size_in_bytes)


def device_limit_bytes(device_memory_gb: float) -> int | None:
    """The memory to check against: `device_memory_gb` GiB if > 0, else what the first local device
    reports (GPU/TPU), else None (a CPU reports no limit)."""
    if device_memory_gb > 0:
        return int(device_memory_gb * GIB)
    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # CPU devices may raise instead of returning None
        stats = None
    limit = (stats or {}).get("bytes_limit")
    return int(limit) if limit else None


def over_limit_message(estimate: int, limit: int, what: str, overrides: Sequence[str]) -> str:
    """The warning for a step that needs more than the device has, with the overrides that help."""
    return (
        f"{what} needs about {estimate / GIB:.1f} GiB on one device by XLA's estimate, more than its "
        f"{limit / GIB:.1f} GiB; it will probably run out of memory. To fit: "
        + "; ".join(overrides)
        + " (docs/performance.md#memory-and-smaller-cards)"
    )


def warn_if_over(estimate: int | None, limit: int | None, what: str, overrides: Sequence[str]) -> str | None:
    """Warn (and return the message) when `estimate` bytes exceed `limit` (either None: no check)."""
    if limit is None or estimate is None or estimate <= limit:
        return None
    message = over_limit_message(estimate, limit, what, overrides)
    log.warning(message)
    return message


def check(compiled: Any, device_memory_gb: float, what: str, overrides: Sequence[str]) -> str | None:
    """Warn (and return the message) when the compiled step's estimate exceeds the device's memory."""
    return warn_if_over(estimate_bytes(compiled), device_limit_bytes(device_memory_gb), what, overrides)


def tree_bytes(tree: Any) -> int:
    """Bytes of every array leaf of `tree` (a replicated array counts once: what one device holds)."""
    return int(sum(getattr(leaf, "nbytes", 0) for leaf in jax.tree.leaves(tree)))


def fold_memory(step: int, shared: int, folds_in_step: int) -> int:
    """Bytes one fold adds to a device, from a compiled step of `folds_in_step` folds on it that
    holds `shared` bytes once whatever the folds (the data set every fold reads)."""
    return max(1, (step - shared) // max(1, folds_in_step))


def folds_that_fit(limit: int, shared: int, per_fold: int) -> int:
    """How many folds one device can step at once beside the `shared` bytes (at least 1)."""
    return max(1, (limit - shared) // per_fold)
