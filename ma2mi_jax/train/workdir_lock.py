"""One run per workdir: `<workdir>/.lock`, held with the kernel's file lock, taken before any data is read.

Process 0 of a run holds an exclusive `flock` on `<workdir>/.lock` for the whole run and writes its
host, pid and start time into the file. The kernel drops the lock when the process ends, however it
ends (kill -9 included), so a lock left by a dead run is free and is taken over, with a line saying
whose it was. A second run into the same workdir finds the lock held and is refused at once with a
message naming the first; in a multi-process job every process learns of the refusal. On a file
system without file locks the file alone decides: a lock whose process is gone from this host (or
whose pid was reused) is taken over, and another host's is refused with the way to remove it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils

from ma2mi_jax.errors import WorkdirError

LOCK_FILE = ".lock"
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


def _start_ticks(pid: int) -> int | None:
    """The start time of process `pid` in clock ticks since boot (Linux), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[19])  # field 22 of proc(5); fields[0] is field 3
    except (OSError, IndexError, ValueError):
        return None


def _me() -> dict:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start_ticks": _start_ticks(pid), "time": time.time()}


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
        return {}


def _describe(holder: dict, path: str) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["time"])) if "time" in holder else "?"
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, since {since} ({path})"


def _refused(workdir: str, holder: dict, path: str) -> WorkdirError:
    return WorkdirError(
        f"workdir {workdir} is in use by another run: {_describe(holder, path)}; wait for it to "
        f"finish, choose another --workdir, or delete {path} if that run is gone"
    )


def _take(fd: int, path: str) -> int:
    """Write this process into the lock file (saying whose lock it replaces, if any); returns `fd`."""
    before = _read(path)
    if before:
        print(f"taking over the lock of a run that is gone: {_describe(before, path)}", flush=True)
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(_me()).encode())
    return fd


def _acquire_by_file(workdir: str, path: str) -> int:
    """Where the file system has no locks: the file's holder decides (see the module docstring)."""
    holder = _read(path)
    if holder and _alive(holder) and int(holder.get("pid", -1)) != os.getpid():
        raise _refused(workdir, holder, path)
    return _take(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), path)


def acquire(workdir: str) -> int:
    """Hold `<workdir>/.lock` (the folder is created); its descriptor. WorkdirError when it is held."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise _refused(workdir, _read(path), path) from None
    except OSError as err:
        os.close(fd)
        if err.errno not in _NO_LOCKS:
            raise
        return _acquire_by_file(workdir, path)
    return _take(fd, path)


def release(fd: int) -> None:
    """Give the lock up: the file is emptied (no holder) and the kernel lock dropped."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    os.close(fd)


def holder(workdir: str) -> dict | None:
    """The holder of the workdir's lock as its file names it, or None when nobody holds it."""
    path = os.path.join(workdir, LOCK_FILE)
    if not os.path.exists(path):
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read(path)
    finally:
        os.close(fd)
    return None


@contextlib.contextmanager
def held(workdir: str) -> Iterator[None]:
    """Hold the workdir's lock (process 0) for the duration of the block; every process is refused together.

    A workdir the block found missing and left empty but for the lock (the run stopped before
    writing) is removed.
    """
    created = not os.path.isdir(workdir)
    fd, refusal = None, None
    if jax.process_index() == 0:
        try:
            fd = acquire(workdir)
        except WorkdirError as err:
            refusal = err
    if jax.process_count() > 1:
        ok = multihost_utils.broadcast_one_to_all(np.asarray(refusal is None, np.int32))
        if not int(ok) and refusal is None:
            raise WorkdirError(f"workdir {workdir} is in use by another run (process 0 says which)")
    if refusal is not None:
        raise refusal
    try:
        yield
    finally:
        if fd is not None:
            release(fd)
            if created and os.listdir(workdir) == [LOCK_FILE]:
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(workdir, LOCK_FILE))
                    os.rmdir(workdir)
