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


def test_a_held_lock_is_refused_by_name_and_a_dead_runs_lock_taken_over(tmp_path, capsys):
    workdir = str(tmp_path / "wd")
    path = os.path.join(workdir, workdir_lock.LOCK_FILE)
    fd = workdir_lock.acquire(workdir)
    holder = workdir_lock.holder(workdir)
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    with pytest.raises(errors.WorkdirError, match=rf"in use by another run: pid {os.getpid()} on host"):
        workdir_lock.acquire(workdir)  # held by this open file: another open is refused
    workdir_lock.release(fd)
    assert workdir_lock.holder(workdir) is None and Path(path).read_text() == ""

    # What a kill -9 leaves: the file names a run, but the kernel's lock went with its process.
    _write_lock(workdir, pid=_dead_pid(), host="node-17")
    fd = workdir_lock.acquire(workdir)
    said = capsys.readouterr().out
    assert "taking over the lock of a run that is gone: pid" in said and "node-17" in said
    assert workdir_lock.holder(workdir)["pid"] == os.getpid()
    workdir_lock.release(fd)


def test_without_file_locks_the_file_decides(tmp_path, monkeypatch, capsys):
    """On a file system without flock: a live process's lock is refused, a gone or reused pid's taken."""

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(workdir_lock.fcntl, "flock", no_locks)
    workdir = str(tmp_path / "wd")
    path = _write_lock(workdir, pid=os.getppid(), start_ticks=workdir_lock._start_ticks(os.getppid()))
    with pytest.raises(errors.WorkdirError, match=rf"in use by another run: pid {os.getppid()}"):
        workdir_lock.acquire(workdir)
    _write_lock(workdir, pid=_dead_pid())
    workdir_lock.release(workdir_lock.acquire(workdir))
    _write_lock(workdir, pid=os.getppid(), start_ticks=-1)  # the pid was reused by another process
    workdir_lock.release(workdir_lock.acquire(workdir))
    assert capsys.readouterr().out.count("taking over the lock of a run that is gone") == 2
    _write_lock(workdir, pid=_dead_pid(), host="node-17")  # another host: cannot be told from here
    with pytest.raises(errors.WorkdirError, match=rf"host node-17.*delete {path} if that run is gone"):
        workdir_lock.acquire(workdir)


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
        deadline = time.time() + 120
        while workdir_lock.holder(str(workdir)) is None and first.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert workdir_lock.holder(str(workdir)), "the first run did not take the lock"
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
        while workdir_lock.holder(str(tmp_path / "wd")) is None and time.time() < deadline:
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


def test_the_temporaries_of_a_killed_write_are_cleared_and_nothing_else(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    keep = [tmp_path / "results.json", tmp_path / "checkpoints" / "notes.tmp-x", tmp_path / ".hidden"]
    for path in keep:
        path.write_text("{}")
    left = [tmp_path / ".results.json.tmp-ab12", tmp_path / "checkpoints" / ".config.json.tmp-1.json"]
    for path in left:
        path.write_text("{")
    (tmp_path / ".export.tmp-77").mkdir()
    (tmp_path / ".export.tmp-77" / "meta.json").write_text("{}")
    (tmp_path / ".export.old-78").mkdir()
    removed = files.remove_leftovers(tmp_path)
    folders = [tmp_path / ".export.tmp-77", tmp_path / ".export.old-78"]
    assert sorted(removed) == sorted(str(p) for p in [*left, *folders])
    assert all(p.exists() for p in keep) and not any(p.exists() for p in left)
