"""Faults a cluster throws at a run: a second run into one workdir, a stale lock, a damaged checkpoint."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ma2mi_jax import errors
from ma2mi_jax.train import workdir_lock
from tests.helpers.configs import REPO
from tests.helpers.scripts import LOSO, assert_reported, run_script, script_env


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    cmd = [sys.executable, "-c", "import os; print(os.getpid())"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return int(done.stdout)


def _write_lock(workdir, **holder) -> str:
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, workdir_lock.LOCK_FILE)
    with open(path, "w") as f:
        json.dump({"host": socket.gethostname(), "time": time.time(), **holder}, f)
    return path


def test_a_live_holder_is_refused_by_name_and_a_dead_one_taken_over(tmp_path, capsys):
    workdir = str(tmp_path / "wd")
    path = workdir_lock.acquire(workdir)
    holder = json.loads(Path(path).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    with pytest.raises(errors.WorkdirError, match=rf"in use by another run: pid {os.getpid()} on host"):
        workdir_lock.acquire(workdir)
    workdir_lock.release(path)
    assert not os.path.exists(path)

    _write_lock(workdir, pid=_dead_pid())
    assert workdir_lock.acquire(workdir) == path  # stale: the process is gone
    assert "taking over the lock of a run that is gone" in capsys.readouterr().out
    assert json.loads(Path(path).read_text())["pid"] == os.getpid()
    workdir_lock.release(path)

    # The pid exists but belongs to a process that started at another time: reused, so stale.
    _write_lock(workdir, pid=os.getpid(), start_ticks=-1)
    assert workdir_lock.acquire(workdir) == path
    workdir_lock.release(path)


def test_a_lock_of_another_host_is_refused_with_the_way_out(tmp_path):
    workdir = str(tmp_path / "wd")
    path = _write_lock(workdir, pid=_dead_pid(), host="node-17")
    with pytest.raises(errors.WorkdirError, match=rf"host node-17.*delete {path} if that run is gone"):
        workdir_lock.acquire(workdir)
    workdir_lock.release(path)  # not ours: left alone
    assert os.path.exists(path)


def test_held_removes_the_workdir_it_created_when_the_run_left_it_empty(tmp_path):
    workdir = str(tmp_path / "new")
    with pytest.raises(RuntimeError), workdir_lock.held(workdir):
        assert os.path.isfile(os.path.join(workdir, workdir_lock.LOCK_FILE))
        raise RuntimeError("the data could not be read")
    assert not os.path.exists(workdir)


def test_cli_a_second_run_into_the_same_workdir_is_refused_at_once(data_root, tmp_path):
    workdir = tmp_path / "wd"
    first = subprocess.Popen(
        [sys.executable, *LOSO, f"--config.data.root={data_root}", "--config.train.epochs=200",
         "--workdir", str(workdir)],
        cwd=REPO, env=script_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        lock = workdir / workdir_lock.LOCK_FILE
        deadline = time.time() + 120
        while not lock.exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert lock.exists(), "the first run did not take the lock"
        second = run_script([*LOSO, f"--config.data.root={data_root}", "--workdir", str(workdir)])
        assert_reported(second, f"workdir {workdir} is in use by another run: pid {first.pid} on host")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
