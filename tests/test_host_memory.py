"""cpu.allocator.tune_allocator: on by default on Linux/glibc, off when the user chose otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = "from ma2mi_jax.cpu import allocator; print(allocator.tune_allocator(), allocator.tune_allocator())"


def _applied(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "MA2MI_MALLOC"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt")
def test_allocator_tuned_unless_the_user_set_malloc_or_opted_out():
    assert _applied() == "True True"  # applied once, the second call reports the same
    assert _applied(MALLOC_ARENA_MAX="2") == "False False"
    assert _applied(MA2MI_MALLOC="default") == "False False"
