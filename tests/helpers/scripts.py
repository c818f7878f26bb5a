"""Running the scripts as a user would, and checking that a refused run says so in one paragraph."""

from __future__ import annotations

import os
import subprocess
import sys

from ma2mi_jax import cli, errors
from tests.helpers.configs import REPO

LOSO = ["scripts/loso.py", "--config", "configs/synthetic_loso.py:tiny", "--config.init=scratch"]
PRETRAIN = ["scripts/pretrain.py", "--config", "configs/synthetic_pretrain.py:tiny"]


def script_env() -> dict[str, str]:
    """The environment a script runs in: the CPU backend, no debug tracebacks."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop(cli.DEBUG_ENV, None)
    return env


def run_script(args: list[str], prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run a script of scripts/ from the repository root as a user would; returns the result."""
    return subprocess.run(
        [*prefix, sys.executable, *args], cwd=REPO, env=script_env(), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def assert_reported(result: subprocess.CompletedProcess, *patterns: str) -> str:
    """The run failed with one `error:` paragraph matching every pattern and no traceback."""
    err = result.stderr
    assert result.returncode == errors.EXIT_CODE, (result.returncode, err[-3000:])
    assert "Traceback" not in err and "During handling" not in err, err[-3000:]
    paragraph = err[err.index("error: ") :].strip()
    assert "\n\n" not in paragraph, paragraph
    for pattern in patterns:
        assert pattern in paragraph, (pattern, paragraph)
    return paragraph
