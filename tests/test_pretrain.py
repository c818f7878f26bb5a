"""Pre-training at the tiny size: learning, loss routing, frozen VAE, outputs, kill/resume, devices."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ma2mi_jax import errors, pretrained
from ma2mi_jax.train import workdir_lock
from ma2mi_jax.train.pretrain import state as state_lib
from ma2mi_jax.train.pretrain import step as pretrain_step
from tests.helpers.configs import tiny_pretrain_config
from tests.helpers.pretrain import make_dfew, run_processes, run_subprocess, start_subprocess

# The run every end-to-end test compares with: 6 steps, checkpoints at 2, 4, 6, pictures at 3 and 6.
RUN = {
    "train.steps": 6,
    # The decaying schedule the multi-device bounds were measured with (the synthetic config's lr is
    # constant): Adam turns float noise in a ~0 gradient into +-lr steps, which a constant lr keeps
    # at full size to the last step.
    "train.final_lr_ratio": 0.01,
    "train.checkpoint_every": 2,
    "train.picture_every": 3,
    "train.log_every": 1,
    "train.eval_every": 3,
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_dfew(str(tmp_path_factory.mktemp("dfew") / "DFEW"))


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory, data_root, compile_cache):
    """One uninterrupted 6-step run in a fresh process: (workdir, overrides, result, stdout).

    Every run compared with it also runs in a fresh process, so all of them execute the same
    compiled program (from the shared cache) in the same environment.
    """
    workdir = str(tmp_path_factory.mktemp("unbroken"))
    overrides = {"data.root": data_root, **RUN}
    done = run_subprocess(overrides, workdir, cache_dir=compile_cache)
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir, overrides, json.loads(done.stdout.split("RESULT ", 1)[1]), done.stdout


def _scalars(workdir):
    """{tag: {step: value}} read back from the TensorBoard event file (no TensorFlow)."""
    from tensorboardX.proto import event_pb2

    folder = os.path.join(workdir, "tensorboard")
    (name,) = [f for f in os.listdir(folder) if "tfevents" in f]
    with open(os.path.join(folder, name), "rb") as f:
        data = f.read()
    out, pos = {}, 0
    while pos < len(data):  # TFRecord framing: length, crc, payload, crc
        n = int.from_bytes(data[pos : pos + 8], "little")
        event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + n])
        for v in event.summary.value:
            out.setdefault(v.tag, {})[event.step] = v.simple_value
        pos += 12 + n + 4
    return out


def _final_params(workdir):
    return pretrained.load_variables(workdir)


def _assert_same_final_parameters(workdir_ref, workdir):
    """Both workdirs end at step 6 with the same parameters and BatchNorm statistics."""
    ref, got = _final_params(workdir_ref), _final_params(workdir)
    assert got["step"] == ref["step"] == 6
    for key in ("params", "batch_stats"):
        for a, b in zip(
            jax.tree_util.tree_leaves(ref[key]), jax.tree_util.tree_leaves(got[key]), strict=True
        ):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def _fixed_batch(config, seed=0):
    """Smooth coloured patterns (x_t) moved two pixels to the right (x_{t+k})."""
    rng = np.random.default_rng(seed)
    size, b = config.data.image_size, config.train.batch_size
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(b):
        freq, phase = rng.uniform(0.5, 2.0, 3), rng.uniform(0.0, 6.0, 3)
        img = np.stack(
            [np.sin(6 * f * xx + p) * np.cos(5 * f * yy) for f, p in zip(freq, phase, strict=True)], -1
        )
        images.append(((img + 1.0) * 127.5).astype(np.uint8))
    base = np.stack(images)  # [B,H,W,3]
    return {
        "frame0": jnp.asarray(base),
        "frame1": jnp.asarray(np.roll(base, 2, axis=2)),
        "label": jnp.arange(b) % 3,
    }


def _diagnostics(workdir: str) -> dict:
    with open(os.path.join(workdir, "diagnostics.json")) as f:
        return json.load(f)


def _setup(config):
    from ma2mi_jax.models import vae as vae_lib

    vae = None
    if config.space == "latent" and config.objective == "reconstruction":
        vae = vae_lib.vae_from_config(config.vae, config.data.image_size, seed=config.seed)
    models = state_lib.build_models(config, 7, vae)
    params, stats = state_lib.init_variables(models, pretrain_step.init_key(config.seed))
    return vae, models, params, stats


def test_steps_lower_the_loss_on_a_fixed_batch(data_root):
    """Overfit check (pixel space, the cheapest variant to compile): L_rec falls on one repeated batch."""
    config = tiny_pretrain_config(
        {
            "data.root": data_root,
            "space": "pixel",
            "model.dit": "T/4",
            "train.lr": 2e-3,
            "train.final_lr_ratio": 1.0,
        }
    )
    _, models, params, stats = _setup(config)
    tx = state_lib.pretrain_optimizer(config, 10)
    state = state_lib.create_train_state(params, stats, tx)
    step = jax.jit(pretrain_step.make_train_step(models, config, tx, 10, None), donate_argnums=(0,))
    batch = _fixed_batch(config)
    history = []
    for _ in range(8):
        state, metrics = step(state, {}, batch)
        history.append({k: float(v) for k, v in metrics.items()})
    rec = [m["rec"] for m in history]
    assert all(np.isfinite(m["loss"]) for m in history)
    assert rec[-1] < 0.8 * rec[0] and rec[-1] == min(rec), rec
    assert int(state.step) == 8


def _norms(tree):
    return {
        jax.tree_util.keystr(p): float(jnp.sum(jnp.abs(x)))
        for p, x in jax.tree_util.tree_leaves_with_path(tree)
    }


def test_losses_reach_only_their_branches(data_root):
    """L_rec reaches the action encoder and DiT, never the position encoder; L_pos only the position
    encoder, its stem included (through the warped frames of L_equ). In pixel space, the cheapest
    variant to compile: the routing does not depend on the space. The frozen VAE's encoder passes
    no gradient (test_vae's test_encode_passes_no_gradient), and its parameters are no part of
    the trained state (test_variants_trace_with_the_right_terms)."""
    pixel = {"data.root": data_root, "space": "pixel", "model.dit": "T/4"}
    config = tiny_pretrain_config(pixel)
    joint = tiny_pretrain_config({**pixel, "model.stop_position_grad": False})
    _, models, params, stats = _setup(config)
    models_j = state_lib.build_models(joint, 7, None)  # the same parameters: no init of its own
    assert set(params) == {"miacnet", "dit"}
    # adaLN-Zero starts the DiT blind to c (zero gradient to MIACNet): move it off that point first.
    noise = jax.random.split(jax.random.PRNGKey(2), len(jax.tree_util.tree_leaves(params["dit"])))
    leaves, treedef = jax.tree_util.tree_flatten(params["dit"])
    leaves = [x + 0.02 * jax.random.normal(k, x.shape) for x, k in zip(leaves, noise, strict=True)]
    params = {**params, "dit": jax.tree_util.tree_unflatten(treedef, leaves)}
    loss_fn, loss_j = (
        pretrain_step.make_loss_fn(models, config, None),
        pretrain_step.make_loss_fn(models_j, joint, None),
    )
    batch, key = _fixed_batch(config), jax.random.PRNGKey(1)

    def term(fn, name):
        return lambda p: fn(p, stats, {}, batch, key)[1][0][name]

    @jax.jit
    def grads(p):
        return {
            "rec": jax.grad(term(loss_fn, "rec"))(p),
            "pos": jax.grad(term(loss_fn, "pos"))(p),
            "joint_rec": jax.grad(term(loss_j, "rec"))(p),
        }

    g = grads(params)
    assert max(_norms(g["rec"]["miacnet"]["position_encoder"]).values()) == 0.0
    assert sum(_norms(g["rec"]["miacnet"]["action_encoder"]).values()) > 0
    assert sum(_norms(g["rec"]["dit"]).values()) > 0
    assert sum(_norms(g["pos"]["miacnet"]["position_encoder"]).values()) > 0
    assert sum(_norms(g["pos"]["miacnet"]["position_encoder"]["conv1"]).values()) > 0  # the stem too
    assert max(_norms(g["pos"]["miacnet"]["action_encoder"]).values()) == 0.0
    assert max(_norms(g["pos"]["dit"]).values()) == 0.0
    # Table 4 "not independent": L_rec now reaches the position encoder too.
    assert sum(_norms(g["joint_rec"]["miacnet"]["position_encoder"]).values()) > 0

    # L_rec alone (position loss off): the optimiser leaves the position encoder's parameters as they
    # are (no gradient and no weight decay) while it moves the rest.
    alone = tiny_pretrain_config({**pixel, "position_loss.enabled": False})
    tx = state_lib.pretrain_optimizer(alone, 4)
    updates, _ = tx.update(g["rec"], tx.init(params), params)
    new = jax.tree_util.tree_map(lambda p, u: p + u, params, updates)
    for a, b in zip(
        jax.tree_util.tree_leaves(params["miacnet"]["position_encoder"]),
        jax.tree_util.tree_leaves(new["miacnet"]["position_encoder"]),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(params["dit"]["x_embedder"]["kernel"], new["dit"]["x_embedder"]["kernel"])
    assert not np.allclose(
        params["miacnet"]["action_encoder"]["conv1"]["kernel"],
        new["miacnet"]["action_encoder"]["conv1"]["kernel"],
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {"space": "pixel", "model.dit": "T/4"},
        {"objective": "supervised"},
        {"model.fusion": "none"},
        {"model.fusion": "concat", "position_loss.con_form": "cos"},
        {"dtype": "bfloat16"},
        {"model.register_iterations": 2, "model.register_target": True},
    ],
)
def test_variants_trace_with_the_right_terms(data_root, overrides):
    """Every variant's step traces (no compile) and reports the terms it should."""
    config = tiny_pretrain_config({"data.root": data_root, **overrides})
    vae = None
    if config.space == "latent" and config.objective == "reconstruction":
        from ma2mi_jax.models import vae as vae_lib

        vae = vae_lib.vae_from_config(config.vae, config.data.image_size, seed=0)
    models = state_lib.build_models(config, 7, vae)
    params, stats = jax.eval_shape(lambda: state_lib.init_variables(models, jax.random.PRNGKey(0)))
    tx = state_lib.pretrain_optimizer(config, 4)
    state = jax.eval_shape(lambda: state_lib.create_train_state(params, stats, tx))
    step = pretrain_step.make_train_step(models, config, tx, 4, vae)
    _, metrics = jax.eval_shape(step, state, vae.params if vae else {}, _fixed_batch(config))
    terms = set(metrics)
    if config.objective == "reconstruction":
        assert set(params) == {"miacnet", "dit"}  # the frozen VAE is no part of the trained state
    assert ("ce" in terms) == (config.objective == "supervised")
    assert ("rec" in terms) == (config.objective == "reconstruction")
    assert ("pos" in terms) == (config.model.fusion != "none")
    assert all(m.dtype == jnp.float32 for m in metrics.values())


@pytest.mark.slow
def test_run_writes_checkpoints_pictures_tensorboard_and_metrics(unbroken):
    workdir, _, result, out = unbroken
    assert "starting from scratch" in out
    assert re.search(r"done: 6 steps .* samples/s; FLOPs per step [0-9.e+]+ \(XLA", out), out
    assert result["step"] == 6 and np.isfinite(result["loss"]) and result["samples_per_s"] > 0
    assert result["xla_flops_per_step"] > 0 and result["model_flops_per_step"] > 0
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4", "6"]
    assert sorted(os.listdir(os.path.join(workdir, "pictures"))) == ["step_000003.png", "step_000006.png"]
    with open(os.path.join(workdir, "pictures", "step_000006.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    events = [f for f in os.listdir(os.path.join(workdir, "tensorboard")) if "tfevents" in f]
    assert events and os.path.getsize(os.path.join(workdir, "tensorboard", events[0])) > 100
    tags = set(_scalars(workdir))
    assert {"loss/loss", "loss/rec", "loss/pos", "loss/equ", "train/lr", "train/grad_norm"} <= tags
    assert "train/samples_per_s" in tags
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["train"]["steps"] == 6
    with open(os.path.join(workdir, "metrics.json")) as f:
        assert json.load(f)["step"] == 6
    # diagnostics on the held-out pairs: every eval_every steps and at the end, in the log too
    diag = _diagnostics(workdir)
    assert diag["step"] == 6 and [h["step"] for h in diag["history"]] == [3, 6]
    for key in ("rec", "copy", "shuffled_c", "static_c", "pixel_rec", "pixel_copy", "vae_floor"):
        assert np.isfinite(diag[key]) and diag[key] > 0, key
    assert diag["eval_pairs"] == 4 and "eval/rec" in tags and "eval/shuffled_c" in tags
    assert re.search(r"eval step 6: rec [0-9.]+ +copy", out) and "against a shuffled c" in out
    assert "(2 more held out for diagnostics)" in out


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_parameters(unbroken, tmp_path, compile_cache):
    workdir_ref, overrides, _, _ = unbroken
    workdir = str(tmp_path / "killed")
    # SIGKILL when the 5th batch is requested: after step 4's (asynchronous) save was started.
    killed = run_subprocess(overrides, workdir, kill_at=5, cache_dir=compile_cache)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert "RESULT" not in killed.stdout
    resumed = run_subprocess(overrides, workdir, cache_dir=compile_cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert re.search(r"resumed from step [24] of ", resumed.stdout), resumed.stdout
    _assert_same_final_parameters(workdir_ref, workdir)
    # the diagnostics' history continues across the kill: the same figures as the unbroken run
    ref_h, got_h = _diagnostics(workdir_ref)["history"], _diagnostics(workdir)["history"]
    assert [h["step"] for h in got_h] == [3, 6]
    np.testing.assert_allclose([h["rec"] for h in got_h], [h["rec"] for h in ref_h], rtol=1e-5)
    # A finished run started again has nothing left to do and keeps its parameters.
    again = run_subprocess(overrides, workdir, cache_dir=compile_cache)
    assert again.returncode == 0 and "resumed from step 6" in again.stdout, again.stderr[-2000:]


def test_sigterm_saves_at_the_next_step_and_the_rerun_ends_identical(unbroken, tmp_path, compile_cache):
    """SIGTERM while step 3's batch is read: step 3 ends, is saved (not a checkpoint step), the job
    exits with the preemption code; the same command then resumes to the unbroken run's parameters."""
    workdir_ref, overrides, _, _ = unbroken
    workdir = str(tmp_path / "preempted")
    stopped = run_subprocess(overrides, workdir, term_at=3, cache_dir=compile_cache)
    assert stopped.returncode == errors.PREEMPTED_EXIT_CODE, stopped.stderr[-2000:]
    assert "stopped by SIGTERM at step 3 of 6; checkpoint saved in" in stopped.stderr
    assert "Traceback" not in stopped.stderr and "RESULT" not in stopped.stdout
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "3"]
    assert workdir_lock.holder(workdir) is None
    resumed = run_subprocess(overrides, workdir, cache_dir=compile_cache)
    assert resumed.returncode == 0 and "resumed from step 3 of " in resumed.stdout, resumed.stderr[-2000:]
    _assert_same_final_parameters(workdir_ref, workdir)


@pytest.mark.slow
def test_killed_at_random_moments_resumes_to_the_same_parameters(unbroken, tmp_path, compile_cache):
    """SIGKILL twice at seeded random moments (start-up, a step, a save, the diagnostics, a picture),
    rerun each time: the run ends with the unbroken run's parameters and no half-written file."""
    workdir_ref, overrides, _, _ = unbroken
    workdir = str(tmp_path / "killed_at_random")
    for delay in np.random.default_rng(1).uniform(0.5, 6.0, size=2):
        run = start_subprocess(overrides, workdir, cache_dir=compile_cache)
        deadline = time.time() + 120
        while workdir_lock.holder(workdir) is None and run.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(delay)
        run.kill()
        run.wait()
    final = run_subprocess(overrides, workdir, cache_dir=compile_cache)
    assert final.returncode == 0, final.stderr[-3000:]
    leftovers = [n for _, dirs, names in os.walk(workdir) for n in [*dirs, *names] if ".tmp-" in n]
    assert not leftovers  # the temporaries of a write cut short are cleared when the next run starts
    _assert_same_final_parameters(workdir_ref, workdir)
    for name in ("metrics.json", "diagnostics.json", "config.json"):
        json.loads(Path(workdir, name).read_text())  # whole files


def test_a_damaged_last_checkpoint_is_set_aside_and_the_run_redone_from_the_one_before(
    unbroken, tmp_path, compile_cache
):
    """The finished run's step-6 arrays truncated (a cut copy): the same run again names step 6 as
    damaged, resumes from step 4 and ends with the unbroken run's parameters."""
    workdir_ref, overrides, _, _ = unbroken
    workdir = str(tmp_path / "damaged")
    shutil.copytree(workdir_ref, workdir)
    for path in Path(workdir, "checkpoints", "6", "state", "d").iterdir():
        path.write_bytes(path.read_bytes()[:10])
    again = run_subprocess(overrides, workdir, cache_dir=compile_cache)
    assert again.returncode == 0, again.stderr[-3000:]
    said = r"checkpoint step 6 in \S+ is damaged \(.*\); moved to \S+; resuming from step 4"
    assert re.search(said, again.stdout), again.stdout[-2000:]
    assert "Traceback" not in again.stderr
    assert Path(workdir, "checkpoints.damaged", "6").is_dir()
    _assert_same_final_parameters(workdir_ref, workdir)


@pytest.mark.slow
def test_two_processes_of_two_devices_agree_with_one_device(unbroken, tmp_path, compile_cache):
    """One job of 2 local processes x 2 CPU devices (jax.distributed on 127.0.0.1) against 1 device.

    Each process reads its own rows of every global batch, the batch is sharded over all 4
    devices, BatchNorm reduces over the global batch and Orbax saves across both processes: the
    1-device run's losses, parameters, statistics and diagnostics, up to the rounding of the
    sharded sums. Adam's first updates are lr * g / |g| per element, so an element whose gradient
    is ~0 moves by +-lr on float noise alone: compare the losses tightly and require nearly all
    parameter elements to agree (a per-device BatchNorm or a wrong gradient reduction moves most
    of them).
    """
    workdir_ref, overrides, result_ref, _ = unbroken
    workdir = str(tmp_path / "two_by_two")
    procs = run_processes(overrides, workdir, processes=2, devices=2, cache_dir=compile_cache)
    for proc in procs:
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert "on 4 device(s)" in procs[0].stdout
    results = [json.loads(p.stdout.split("RESULT ", 1)[1]) for p in procs]
    assert results[0]["loss"] == results[1]["loss"]
    ref_tb, got_tb = _scalars(workdir_ref), _scalars(workdir)
    for tag in ("loss/loss", "loss/rec", "loss/pos", "train/grad_norm"):  # step 1: same parameters
        np.testing.assert_allclose(got_tb[tag][1], ref_tb[tag][1], rtol=1e-4, err_msg=tag)
    for key in ("loss", "rec", "pos", "grad_norm"):
        np.testing.assert_allclose(results[0][key], result_ref[key], rtol=2e-2, err_msg=key)
    ref, got = _final_params(workdir_ref), _final_params(workdir)
    assert got["step"] == ref["step"] == RUN["train.steps"]
    a = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(ref["params"])])
    b = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(got["params"])])
    assert np.max(np.abs(a - b)) <= 2 * tiny_pretrain_config(overrides).train.lr * RUN["train.steps"]
    assert np.mean(np.abs(a - b) > 1e-5 + 1e-3 * np.abs(a)) < 0.01
    # Running statistics average activations of those parameters, so the few elements Adam moved
    # move them too: at most 4.4e-6 apart on an AMD EPYC, 8.1e-5 on an Intel Xeon with AVX-512 FP16
    # (2 cores each). A per-process BatchNorm averages each process's half batch instead: after a
    # single update of this run's statistics that moves 90 % of them by more than 1.3e-3 (median 9e-3).
    leaves = jax.tree_util.tree_leaves
    for x, y in zip(leaves(ref["batch_stats"]), leaves(got["batch_stats"]), strict=True):
        np.testing.assert_allclose(y, x, rtol=1e-4, atol=5e-4)
    np.testing.assert_allclose(
        [h["rec"] for h in _diagnostics(workdir)["history"]],
        [h["rec"] for h in _diagnostics(workdir_ref)["history"]],
        rtol=1e-4,
    )


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(unbroken, tmp_path, compile_cache):
    """Resume the finished run's step-4 checkpoint with a VAE that yields NaN latents: the run stops
    naming step 5 and the checkpoints it had stay as they were."""
    workdir_ref, overrides, _, _ = unbroken
    workdir = str(tmp_path / "nan")
    shutil.copytree(workdir_ref, workdir)
    shutil.rmtree(os.path.join(workdir, "checkpoints", "6"))
    before = _final_params(workdir)
    failed = run_subprocess(overrides, workdir, cache_dir=compile_cache, nan_vae=True)
    assert failed.returncode != 0
    assert re.search(r"error: non-finite loss at step 5.*step 4", failed.stderr), failed.stderr[-2000:]
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
    after = _final_params(workdir)
    assert after["step"] == 4
    for a, b in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(after), strict=True):
        np.testing.assert_array_equal(a, b)
