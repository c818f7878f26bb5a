"""Keep freed host memory mapped between steps instead of returning it to the kernel at once.

XLA:CPU allocates each step's temporaries with malloc. glibc serves large requests with mmap and
unmaps them when freed (and trims the heap top), so every step page-faults its whole working set in
again and spends system time on it. Raising glibc's mmap threshold to its maximum and its trim
threshold keeps those pages in the process; the price is that the process's resident memory stays at
its peak (docs/decisions.md#host-allocator-setting).

`tune_allocator()` applies it once per process (the scripts call it through `cli.run`, the tests in
conftest), on Linux with glibc only, and not at all when the environment sets any `MALLOC_*`
variable (the user's own choice) or MA2MI_MALLOC=default.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

OPT_OUT_ENV = "MA2MI_MALLOC"
# glibc's mallopt parameters (malloc.h) and the values set.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest accepted value on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 2**30  # keep up to 1 GiB of free heap top before trimming
TOP_PAD = 64 * 2**20  # grow the heap in 64 MiB steps

_applied: bool | None = None


def tune_allocator() -> bool:
    """Set the thresholds above (once); True when they are in effect in this process."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    user_set = any(k.startswith("MALLOC_") for k in os.environ)
    if sys.platform != "linux" or user_set or os.environ.get(OPT_OUT_ENV, "").lower() == "default":
        return _applied
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return _applied
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD))
    _applied = all(mallopt(param, value) == 1 for param, value in settings)
    return _applied
