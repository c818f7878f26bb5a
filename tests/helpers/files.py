"""File helpers of the tests: the bytes of a written tree, compared by hash."""

from __future__ import annotations

import glob
import hashlib
import os


def tree_hashes(root: str) -> dict[str, str]:
    """{path relative to root: sha256 of its bytes} of every file below `root`."""
    out = {}
    for path in sorted(glob.glob(os.path.join(root, "**", "*"), recursive=True)):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out
