"""Shared by the pre-training tests: a small synthetic DFEW set, subprocess and multi-process runs.

Run as a script it pre-trains in a fresh process:
    python -m tests.helpers.pretrain OVERRIDES_JSON WORKDIR [KILL_AT_BATCH]   (from the repository root)
KILL_AT_BATCH > 0 sends the process SIGKILL to itself when it asks for that batch (1-based),
which is how the tests kill a run at a chosen moment. With MA2MI_TEST_NAN_VAE=1 in the
environment the frozen VAE's parameters are NaN (its latents too), to drive a run into NaN.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from typing import Any

from tests.helpers.configs import REPO, tiny_pretrain_config
from tests.helpers.xla_level import without_test_flags


def make_dfew(root: str, clips_scale: float = 0.02, size: int = 32) -> str:
    """A small synthetic DFEW-layout data set (7 clips at the default scale) in `root`."""
    from ma2mi_jax.data.synthetic import generator as synthetic

    synthetic.generate("dfew", root, size=size, seed=0, clips_scale=clips_scale, progress=False,
                       preview=False, overwrite=True)  # fmt: skip
    return root


def _subprocess(
    overrides: dict[str, Any],
    workdir: str,
    kill_at: int,
    devices: int,
    cache_dir: str,
    nan_vae: bool,
    term_at: int,
) -> tuple[list[str], dict[str, str]]:
    """The command and environment of a pre-training run in a fresh Python process."""
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = default_level_flags(devices)  # every run compared with another: default level
    if nan_vae:
        env["MA2MI_TEST_NAN_VAE"] = "1"
    if term_at:  # SIGTERM instead of SIGKILL, at the term_at-th batch request
        env["MA2MI_TEST_SIGNAL"], kill_at = "TERM", term_at
    if cache_dir:
        env["JAX_COMPILATION_CACHE_DIR"] = cache_dir  # its thresholds: os.environ (conftest)
    cmd = [sys.executable, "-m", "tests.helpers.pretrain", json.dumps(overrides), workdir, str(kill_at)]
    return cmd, env


def run_subprocess(
    overrides: dict[str, Any],
    workdir: str,
    kill_at: int = 0,
    devices: int = 1,
    cache_dir: str = "",
    nan_vae: bool = False,
    term_at: int = 0,
) -> subprocess.CompletedProcess:
    """Pre-train in a fresh Python process (optionally with `devices` simulated CPU devices)."""
    cmd, env = _subprocess(overrides, workdir, kill_at, devices, cache_dir, nan_vae, term_at)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)


def start_subprocess(overrides: dict[str, Any], workdir: str, cache_dir: str = "") -> subprocess.Popen:
    """Start pre-training in a fresh Python process and return at once (output discarded)."""
    cmd, env = _subprocess(overrides, workdir, 0, 1, cache_dir, False, 0)
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def default_level_flags(devices: int = 1) -> str:
    """XLA_FLAGS of this process at XLA's default optimisation level, plus `devices` simulated CPU devices.

    The multi-device jobs are compared with one-device runs within bounds measured at the default
    level, the level a user's run compiles at; at the tests' level 0 (conftest) the two programs
    drift further apart (on an AMD EPYC: 6.4e-4 in the cross-validation's probabilities against
    2.4e-4, 2.6e-5 in pre-training's BatchNorm statistics against 4.4e-6).
    """
    flags = without_test_flags(os.environ.get("XLA_FLAGS", ""))
    if devices > 1:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    return " ".join(flags)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(
    overrides: dict[str, Any], workdir: str, processes: int, devices: int, cache_dir: str = ""
) -> list[subprocess.CompletedProcess]:
    """Pre-train as one multi-process JAX job on this machine: `processes` x `devices` CPU devices.

    The processes find each other through JAX_COORDINATOR_ADDRESS=127.0.0.1:<free port>,
    JAX_NUM_PROCESSES and JAX_PROCESS_ID, as on a cluster (docs/devices.md).
    """
    env = dict(os.environ)
    env.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=default_level_flags(devices),
        JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{free_port()}",
        JAX_NUM_PROCESSES=str(processes),
    )
    if cache_dir:
        env["JAX_COMPILATION_CACHE_DIR"] = cache_dir
    cmd = [sys.executable, "-m", "tests.helpers.pretrain", json.dumps(overrides), workdir, "0"]
    running = [
        subprocess.Popen(
            cmd,
            env={**env, "JAX_PROCESS_ID": str(i)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for i in range(processes)
    ]
    done = []
    for proc in running:
        out, err = proc.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(cmd, proc.returncode, out, err))
    return done


def _install_killer(kill_at: int, sig: int = signal.SIGKILL) -> None:
    """Make the kill_at-th batch request send `sig` (SIGKILL unless told otherwise) to this process."""
    from ma2mi_jax.data import pretrain_pipeline as pipeline

    make = pipeline.pretrain_iterator

    class Killing:
        def __init__(self, inner: Any) -> None:
            self.inner, self.count = inner, 0

        def __iter__(self) -> Killing:
            return self

        def __next__(self) -> Any:
            self.count += 1
            if self.count == kill_at:
                os.kill(os.getpid(), sig)
            return next(self.inner)

        def get_state(self) -> Any:
            return self.inner.get_state()

        def set_state(self, state: Any) -> None:
            self.inner.set_state(state)

    pipeline.pretrain_iterator = lambda *a, **k: Killing(make(*a, **k))


def _install_nan_vae() -> None:
    """Make the frozen VAE's parameters NaN."""
    import jax
    import jax.numpy as jnp

    from ma2mi_jax.models import vae as vae_lib

    real = vae_lib.vae_from_config

    def nan_vae(*args: Any, **kwargs: Any) -> Any:
        vae = real(*args, **kwargs)
        vae.params = jax.tree_util.tree_map(lambda x: jnp.full_like(x, jnp.nan), vae.params)
        return vae

    vae_lib.vae_from_config = nan_vae


def main(argv: list[str]) -> None:
    """Script entry: see the module docstring."""
    overrides, workdir = json.loads(argv[1]), argv[2]
    kill_at = int(argv[3]) if len(argv) > 3 else 0
    if kill_at > 0:
        term = os.environ.get("MA2MI_TEST_SIGNAL") == "TERM"
        _install_killer(kill_at, signal.SIGTERM if term else signal.SIGKILL)
    if os.environ.get("MA2MI_TEST_NAN_VAE") == "1":
        _install_nan_vae()
    from ma2mi_jax import cli
    from ma2mi_jax.train.pretrain import job as pretrain

    def run(_: list[str]) -> None:
        result = pretrain.train_and_evaluate(tiny_pretrain_config(overrides), workdir)
        print("RESULT " + json.dumps(result), flush=True)

    cli.reporting_errors(run)(argv)  # errors and exit codes as the scripts give them


if __name__ == "__main__":
    main(sys.argv)
