"""The XLA flags the tests compile with (tests/conftest.py), and XLA_FLAGS without them.

Level 0, and XLA:CPU's older (elemental) emitters for fusions: both shorten compiling and leave the
operations as they are (docs/decisions.md#xla-optimisation-level-in-tests).
"""

from __future__ import annotations

TEST_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")


def without_test_flags(xla_flags: str) -> list[str]:
    """The flags of `xla_flags` that do not set what TEST_FLAGS sets (XLA's defaults for those)."""
    names = {f.split("=", 1)[0] for f in TEST_FLAGS}
    return [f for f in xla_flags.split() if f.split("=", 1)[0] not in names]
