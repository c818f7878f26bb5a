"""Faults a cluster throws at a run: a second run into one workdir, a stale lock, a full disk, a dead peer."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ma2mi_jax import checkpoints, errors, files
from ma2mi_jax.train import mesh, workdir_lock
from tests.helpers.configs import REPO
from tests.helpers.pretrain import free_port, make_dfew
from tests.helpers.scripts import LOSO, PRETRAIN, assert_reported, run_script, script_env


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


# ----------------------------------------------------------------------------- a full disk


def _full_disk(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_writing_results_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    files.write_json(path, {"uf1": 0.5})
    monkeypatch.setattr(files.os, "fsync", _full_disk)
    with pytest.raises(errors.DiskFullError, match=rf"no space left on the device while writing {path}"):
        files.write_json(path, {"uf1": 0.7})
    assert json.loads(path.read_text()) == {"uf1": 0.5}
    assert os.listdir(tmp_path) == ["results.json"]  # no temporary file left


def test_a_full_disk_while_exporting_keeps_the_previous_export(tmp_path):
    out = tmp_path / "export"
    with files.atomic_dir(out) as tmp:
        Path(tmp, "meta.json").write_text("{}")
    expected = rf"while writing {out}; the previous folder, if any, is unchanged"
    with pytest.raises(errors.DiskFullError, match=expected), files.atomic_dir(out) as tmp:
        Path(tmp, "variables").write_bytes(b"half")
        _full_disk()  # the disk fills while the new export is written
    assert sorted(os.listdir(tmp_path)) == ["export"] and os.listdir(out) == ["meta.json"]


def test_a_full_disk_while_checkpointing_names_the_step_and_the_intact_one(tmp_path, monkeypatch):
    ck = checkpoints.Checkpoints(str(tmp_path / "ck"), keep=3, json_items=("meta",), async_save=False)
    state = {"w": np.arange(4.0, dtype=np.float32)}
    ck.save(2, state, meta={"epoch": 2})
    monkeypatch.setattr(ck.manager, "save", _full_disk)
    expected = r"while writing \S+/ck; the last complete checkpoint \(step 2\) is intact\. Free some space"
    with pytest.raises(errors.DiskFullError, match=expected):
        ck.save(4, state, meta={"epoch": 4})
    monkeypatch.undo()
    assert ck.all_steps() == [2]
    ck.save(4, state, meta={"epoch": 4})  # space freed: the run goes on
    ck.close()
    assert checkpoints.Checkpoints(str(tmp_path / "ck"), keep=3, json_items=("meta",)).all_steps() == [2, 4]


def test_an_error_that_is_not_a_full_disk_passes_through(tmp_path):
    with pytest.raises(PermissionError), files.reporting_disk_full(tmp_path / "x"):
        raise PermissionError(errno.EACCES, "Permission denied")
    assert files.is_disk_full(RuntimeError("TensorStore: No space left on device"))


# ----------------------------------------------------------------------------- a dead peer


@pytest.mark.slow
def test_cli_a_dead_process_stops_the_others_within_the_heartbeat_timeout(tmp_path):
    """scripts/pretrain.py as 2 processes: process 1 killed once the job holds its workdir; process 0
    must stop within MA2MI_HEARTBEAT_TIMEOUT (plus start-up slack), saying that another task died,
    instead of waiting in a collective for ever."""
    root = make_dfew(str(tmp_path / "DFEW"))
    env = {**script_env(), "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{free_port()}", "JAX_NUM_PROCESSES": "2",
           mesh.HEARTBEAT_ENV: "5"}  # fmt: skip
    cmd = [sys.executable, *PRETRAIN, f"--config.data.root={root}", "--config.train.steps=50",
           "--config.train.eval_clips=2", "--workdir", str(tmp_path / "wd")]  # fmt: skip
    logs = [tmp_path / f"p{i}.log" for i in (0, 1)]
    procs = []
    for i, log in enumerate(logs):
        with open(log, "wb") as out:
            procs.append(subprocess.Popen(cmd, cwd=REPO, env={**env, "JAX_PROCESS_ID": str(i)},
                                          stdout=out, stderr=subprocess.STDOUT))  # fmt: skip
    try:
        deadline = time.time() + 180
        while not (tmp_path / "wd" / workdir_lock.LOCK_FILE).exists() and time.time() < deadline:
            assert procs[0].poll() is None, logs[0].read_text()[-3000:]
            time.sleep(0.1)
        procs[1].kill()
        killed_at = time.time()
        procs[0].wait(timeout=120)
        assert time.time() - killed_at < 60
        assert procs[0].returncode != 0
        assert "another task died" in logs[0].read_text()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
