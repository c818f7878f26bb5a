"""One run per workdir: a lock file naming the holder, taken before any data is read.

`<workdir>/.lock` holds the host, pid and start time of the run's process 0. A second run into the
same workdir is refused at once with a message naming the first. A lock left by a run that died
(kill -9, a crashed node) is stale when its process no longer exists on this host, or exists but
started at another time (the pid was reused): it is taken over, and the run says so. A lock of
another host cannot be checked from here: the message says how to remove it if that run is gone.
Only process 0 of a multi-process job takes the lock; the others share its workdir.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator

import jax

from ma2mi_jax.errors import WorkdirError

LOCK_FILE = ".lock"


def _start_ticks(pid: int) -> int | None:
    """The start time of process `pid` in clock ticks since boot (Linux), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[19])  # field 22 of proc(5); fields[0] is field 3
    except (OSError, IndexError, ValueError):
        return None


def _alive(holder: dict) -> bool:
    """Whether the process that wrote `holder` still runs (True when it cannot be told from here)."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = int(holder.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    started, now = holder.get("start_ticks"), _start_ticks(pid)
    return started is None or now is None or started == now


def _read(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}  # being written, or garbage: treated as held by an unknown run


def _describe(holder: dict, path: str) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["time"])) if "time" in holder else "?"
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, since {since} ({path})"


def _create(path: str) -> bool:
    """Write the lock if no file is there; False when another process holds it."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    pid = os.getpid()
    holder = {"host": socket.gethostname(), "pid": pid, "start_ticks": _start_ticks(pid), "time": time.time()}
    with os.fdopen(fd, "w") as f:
        json.dump(holder, f)
    return True


def acquire(workdir: str) -> str:
    """Take `<workdir>/.lock` (the folder is created); WorkdirError naming the holder when it is taken."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)
    for _ in range(3):
        if _create(path):
            return path
        holder = _read(path)
        if holder and not _alive(holder):
            print(f"taking over the lock of a run that is gone: {_describe(holder, path)}", flush=True)
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            continue
        raise WorkdirError(
            f"workdir {workdir} is in use by another run: {_describe(holder, path)}; wait for it to "
            f"finish, choose another --workdir, or delete {path} if that run is gone"
        )
    raise WorkdirError(f"workdir {workdir}: could not take {path}; other runs keep taking it")


def release(path: str) -> None:
    """Remove the lock this process holds (a lock another run has taken over is left alone)."""
    if int(_read(path).get("pid", -1)) == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


@contextlib.contextmanager
def held(workdir: str) -> Iterator[None]:
    """Hold the workdir's lock on process 0 for the duration of the block.

    A workdir the block found missing and left empty (the run stopped before writing) is removed.
    """
    if jax.process_index() != 0:
        yield
        return
    created = not os.path.isdir(workdir)
    path = acquire(workdir)
    try:
        yield
    finally:
        release(path)
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(workdir)  # only when empty
