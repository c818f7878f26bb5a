"""Writing files and folders so that a crash never leaves one half-written: temporary, then rename.

`atomic_path(path)` gives a temporary path beside `path` and renames it onto `path` when the block
succeeds; `atomic_dir(path)` does the same for a folder, replacing an existing one only after the
new one is complete. `write_bytes` and `write_json` are the two writers built on them. A full disk
(or quota) while writing ends with one `DiskFullError` naming the path; the file or folder that
was there before is left as it was.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from ma2mi_jax.errors import DiskFullError

_FULL = (errno.ENOSPC, errno.EDQUOT)


def _read_umask() -> int:
    """The process's file-creation mask (read by setting it, then putting it back: at import only,
    before any thread writes files)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def remove_leftovers(folder: str | os.PathLike) -> list[str]:
    """Delete the temporaries `atomic_path` / `atomic_dir` left under `folder` when a process was
    killed between writing and renaming; returns their paths. Nothing else is touched."""
    removed = []
    for root, dirs, names in os.walk(folder):
        for name in [*names, *dirs]:
            if name.startswith(".") and (".tmp-" in name or ".old-" in name):
                path = os.path.join(root, name)
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(path)
                removed.append(path)
        dirs[:] = [d for d in dirs if os.path.isdir(os.path.join(root, d))]
    return removed


def is_disk_full(err: BaseException) -> bool:
    """Whether `err`, or an error it was raised from, says the disk (or the quota) is full."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _FULL:
            return True
        if "No space left on device" in str(err) or "Disk quota exceeded" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


@contextlib.contextmanager
def reporting_disk_full(path: str | os.PathLike, intact: str = "") -> Iterator[None]:
    """Turn a full disk inside the block into one DiskFullError naming `path` (and what is `intact`)."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as err:
        if not is_disk_full(err):
            raise
        kept = f"; {intact}" if intact else ""
        raise DiskFullError(
            f"no space left on the device while writing {os.fspath(path)}{kept}. Free some space (or "
            "move the output elsewhere) and run the same command again"
        ) from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """A temporary file path beside `path` (ending in `suffix`), renamed onto `path` if the block succeeds."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with reporting_disk_full(path, "the previous file, if any, is unchanged"):
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", suffix=suffix, dir=folder)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_UMASK)  # the mode open() would give, not mkstemp's private 0600
        try:
            yield tmp
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[str]:
    """A new temporary folder beside `path`, moved to `path` if the block succeeds.

    An existing `path` is replaced, and removed only once the new folder is in place.
    """
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    with reporting_disk_full(path, "the previous folder, if any, is unchanged"):
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
        os.chmod(tmp, 0o777 & ~_UMASK)  # the mode os.makedirs would give, not mkdtemp's private 0700
        try:
            yield tmp
            old = None
            if os.path.isdir(path):
                old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=parent)
                os.rename(path, os.path.join(old, "x"))
            os.rename(tmp, path)
            if old:
                shutil.rmtree(old)
        finally:
            if os.path.exists(tmp):
                shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> str:
    """Write `data` to `path` atomically, flushed to disk before the rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return os.fspath(path)


def json_safe(obj: Any) -> Any:
    """Numpy scalars/arrays to Python, NaN/inf to None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> str:
    """Write `obj` as indented strict JSON, atomically, on process 0 only (every process gets the path)."""
    path = os.fspath(path)
    if jax.process_index() != 0:
        return path
    text = json.dumps(json_safe(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"
    return write_bytes(path, text.encode())
