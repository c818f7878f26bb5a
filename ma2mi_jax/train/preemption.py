"""Preemption: SIGTERM (what SLURM and cloud schedulers send before a kill) stops a job cleanly.

While a job runs, SIGTERM only raises a flag. The training loop looks at it at each step
(pre-training) or epoch (fine-tuning) boundary, saves a checkpoint there, waits for it to be on
disk and raises `PreemptedError`; the scripts print its message and exit with `PREEMPTED_EXIT_CODE`.
Running the same command again resumes from that checkpoint and ends with the results an
uninterrupted run gives. In a multi-process job every process learns of a signal that reached any
of them, so all stop at the same boundary.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import jax
import numpy as np
from jax.experimental import multihost_utils

from ma2mi_jax.errors import PreemptedError

_requested = threading.Event()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _requested.set()


@contextlib.contextmanager
def watching() -> Iterator[None]:
    """Turn SIGTERM into a stop request for the duration of the block (main thread only).

    A request the job never acted on (it came during the last step, or the final writes) is passed
    on when the block ends: the previous handler gets the signal, so a workflow that runs several
    jobs stops instead of starting the next one.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    stopped = False
    try:
        yield
    except PreemptedError:
        stopped = True
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        if stopped:
            _requested.clear()
        elif _requested.is_set():
            _requested.clear()
            signal.raise_signal(signal.SIGTERM)


def requested() -> bool:
    """Whether any process of the job received SIGTERM (a collective when there are several)."""
    mine = _requested.is_set()
    if jax.process_count() == 1:
        return mine
    flags = multihost_utils.process_allgather(np.asarray(mine, np.bool_))
    return bool(np.any(flags))


def stop(where: str, checkpoint: str) -> PreemptedError:
    """The error that ends a preempted job: where it stopped and what to run next."""
    return PreemptedError(
        f"stopped by SIGTERM {where}; checkpoint saved in {checkpoint}. Run the same command again "
        "to resume from it"
    )
