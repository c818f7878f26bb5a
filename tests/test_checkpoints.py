"""Orbax checkpoints: round trip with optimiser and iterator state, keep-N, atomicity, pre-trained MIACNet."""

from __future__ import annotations

import asyncio
import gc
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import tensorstore as ts

from ma2mi_jax import checkpoints, pretrained
from tests.helpers.configs import tiny_pretrain_config
from tests.helpers.pretrain import make_dfew


def _state(seed: int = 0, step: int = 3) -> dict:
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = {
        "miacnet": {"action_encoder": {"w": jax.random.normal(k1, (3, 4))}},
        "dit": {"w": jax.random.normal(k2, (5,))},
    }
    tx = optax.adamw(1e-3)
    opt_state = tx.init(params)
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    _, opt_state = tx.update(grads, opt_state, params)  # non-trivial moments
    stats = {"miacnet": {"action_encoder": {"mean": jax.random.normal(k3, (4,))}}}
    return {
        "step": jnp.asarray(step, jnp.int32),
        "params": params,
        "batch_stats": stats,
        "opt_state": opt_state,
    }


def _assert_trees_equal(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _config():
    return ml_collections.ConfigDict({"seed": 1, "model": {"dit": "T/2", "sizes": (8, 16)}})


def _save(ck, step, state, iterator_state):
    ck.save(step, state, **checkpoints.run_items(iterator_state, _config()))


def test_round_trip_keeps_state_iterator_and_config(tmp_path):
    ck = checkpoints.Checkpoints(str(tmp_path / "checkpoints"), keep=3)
    state = _state()
    _save(ck, 3, state, {"next_index": 12, "epoch": 1})
    _save(ck, 5, _state(seed=1, step=5), b"\x00raw-grain-state\xff")
    ck.wait()
    assert ck.latest_step() == 5
    target = _state(seed=9)  # other values, same structure
    restored, items = ck.restore(3, target)
    _assert_trees_equal(restored, state)
    assert checkpoints.decode_iterator_state(items["data_iter"]) == {"next_index": 12, "epoch": 1}
    restored5, items5 = ck.restore(5, target)
    assert int(restored5["step"]) == 5
    assert checkpoints.decode_iterator_state(items5["data_iter"]) == b"\x00raw-grain-state\xff"
    saved_config = json.loads((tmp_path / "checkpoints" / "5" / "config" / "metadata").read_text())
    assert saved_config["model"]["sizes"] == [8, 16]
    ck.close()


def test_keeps_only_the_last_n(tmp_path):
    ck = checkpoints.Checkpoints(str(tmp_path), keep=2)
    for step in (2, 4, 6, 8):
        _save(ck, step, _state(step=step), {})
    ck.close()
    assert checkpoints.Checkpoints(str(tmp_path), keep=2).all_steps() == [6, 8]


def test_half_written_checkpoint_is_ignored(tmp_path):
    ck = checkpoints.Checkpoints(str(tmp_path), keep=3)
    _save(ck, 2, _state(step=2), {})
    ck.close()
    # What a kill during a save leaves: Orbax's temporary folder for step 4 without its commit.
    partial = tmp_path / "4.orbax-checkpoint-tmp-1234"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "junk").write_bytes(b"\x00" * 10)
    ck2 = checkpoints.Checkpoints(str(tmp_path), keep=3)
    assert ck2.latest_step() == 2
    restored, _ = ck2.restore(2, _state(seed=5))
    _assert_trees_equal(restored, _state(step=2))
    ck2.close()


def test_restore_into_other_architecture_names_the_folder(tmp_path):
    ck = checkpoints.Checkpoints(str(tmp_path), keep=1)
    _save(ck, 1, _state(), {})
    ck.wait()
    other = _state()
    other["params"]["dit"]["w"] = jnp.zeros((7,))
    with pytest.raises(checkpoints.CheckpointError, match=str(tmp_path)):
        ck.restore(1, other)
    ck.close()


def _damage(step_dir) -> None:
    """Truncate every array file of a checkpoint's state, as a full disk or a cut copy leaves them."""
    for path in (step_dir / "state" / "d").iterdir():
        path.write_bytes(path.read_bytes()[:10])


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    ck = checkpoints.Checkpoints(str(tmp_path / "ck"), keep=3)
    for step in (2, 4, 6):
        _save(ck, step, _state(seed=step, step=step), {"at": step})
    ck.close()
    _damage(tmp_path / "ck" / "6")
    ck = checkpoints.Checkpoints(str(tmp_path / "ck"), keep=3)
    step, restored, items = ck.restore_latest(_state(seed=9))
    assert step == 4 and checkpoints.decode_iterator_state(items["data_iter"]) == {"at": 4}
    _assert_trees_equal(restored, _state(seed=4, step=4))
    said = capsys.readouterr().out
    assert "checkpoint step 6" in said and "is damaged" in said and "resuming from step 4" in said
    assert ck.all_steps() == [2, 4] and (tmp_path / "ck.damaged" / "6").is_dir()
    _save(ck, 6, _state(seed=6, step=6), {"at": 6})  # the run saves step 6 again
    ck.close()
    assert checkpoints.Checkpoints(str(tmp_path / "ck"), keep=3).all_steps() == [2, 4, 6]


async def _another_task_fails() -> None:
    raise ValueError("another task's error")


def test_an_abandoned_tensorstore_read_logs_nothing_other_tasks_still_do(tmp_path, caplog):
    """A TensorStore read left failed in a task nobody collects (what restoring a damaged checkpoint
    leaves) logs no traceback once a Checkpoints exists; another task's uncollected error still logs."""
    checkpoints.Checkpoints(str(tmp_path / "ck"), keep=1).close()
    missing = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(tmp_path / "none")}}

    async def abandon() -> None:
        tasks = [
            asyncio.ensure_future(ts.open(missing, open=True)),
            asyncio.ensure_future(_another_task_fails()),
        ]
        await asyncio.wait(tasks)  # both finish; neither error is collected

    with caplog.at_level("ERROR", logger="asyncio"):
        loop = asyncio.new_event_loop()
        loop.run_until_complete(abandon())
        loop.close()
        gc.collect()  # the uncollected errors are logged as their tasks are collected
    logged = [m for m in caplog.messages if "never retrieved" in m]
    assert len(logged) == 1 and "another task's error" in logged[0], logged


def test_every_checkpoint_damaged_or_foreign_is_one_clear_error(tmp_path):
    ck = checkpoints.Checkpoints(str(tmp_path / "ck"), keep=3)
    for step in (2, 4):
        _save(ck, step, _state(step=step), {})
    ck.close()
    other = _state()
    other["params"]["dit"]["w"] = jnp.zeros((7,))
    ck = checkpoints.Checkpoints(str(tmp_path / "ck"), keep=3)
    with pytest.raises(checkpoints.CheckpointError, match="another architecture"):
        ck.restore_latest(other)
    assert ck.all_steps() == [2, 4]  # nothing set aside for a mismatch
    for step in (2, 4):
        _damage(tmp_path / "ck" / str(step))
    with pytest.raises(checkpoints.CheckpointError, match=r"every checkpoint is damaged"):
        ck.restore_latest(_state())
    assert checkpoints.Checkpoints(str(tmp_path / "empty"), keep=1).restore_latest(_state()) is None


def test_load_pretrained_miacnet_from_workdir_checkpoints_or_step(tmp_path):
    workdir = tmp_path / "run"
    ck = checkpoints.Checkpoints(str(workdir / checkpoints.CHECKPOINT_DIR), keep=2)
    _save(ck, 4, _state(seed=0, step=4), {})
    _save(ck, 7, _state(seed=1, step=7), {})
    ck.close()
    want = _state(seed=1, step=7)
    for path in (workdir, workdir / "checkpoints", workdir / "checkpoints" / "7"):
        got = pretrained.load_pretrained_miacnet(str(path))
        _assert_trees_equal(got["params"], want["params"]["miacnet"])
        _assert_trees_equal(got["batch_stats"], want["batch_stats"]["miacnet"])
    older = pretrained.load_pretrained_miacnet(str(workdir / "checkpoints" / "4"))
    _assert_trees_equal(older["params"], _state(seed=0)["params"]["miacnet"])


def test_load_pretrained_miacnet_errors(tmp_path):
    with pytest.raises(checkpoints.CheckpointError, match="does not exist"):
        pretrained.load_pretrained_miacnet(str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(checkpoints.CheckpointError, match="no checkpoint"):
        pretrained.load_pretrained_miacnet(str(tmp_path / "empty"))
    state = _state()
    state["params"] = {"dit": state["params"]["dit"]}
    state["opt_state"] = optax.adamw(1e-3).init(state["params"])
    ck = checkpoints.Checkpoints(str(tmp_path / "dit_only"), keep=1)
    _save(ck, 1, state, {})
    ck.close()
    with pytest.raises(checkpoints.CheckpointError, match="miacnet"):
        pretrained.load_pretrained_miacnet(str(tmp_path / "dit_only"))


def test_merge_pretrained_takes_matching_parts_only():
    fresh = {"miacnet": {"w": jnp.zeros((2, 2))}, "dit": {"w": jnp.zeros((3,))}}
    loaded = {"miacnet": {"w": np.ones((2, 2), np.float32)}, "head": {"w": np.ones((4,))}}
    merged, taken = pretrained.merge_pretrained(fresh, loaded, "somewhere")
    assert taken == ["miacnet"]
    np.testing.assert_array_equal(merged["miacnet"]["w"], np.ones((2, 2)))
    np.testing.assert_array_equal(merged["dit"]["w"], np.zeros(3))
    with pytest.raises(
        checkpoints.CheckpointError, match=r"part 'miacnet'.*\n  shape w: model \(2, 2\), checkpoint \(3, 3\)"
    ):
        pretrained.merge_pretrained(fresh, {"miacnet": {"w": np.ones((3, 3))}}, "somewhere")


def test_save_config_round_trips(tmp_path):
    config = tiny_pretrain_config({"data.root": str(tmp_path)})
    path = checkpoints.save_config(str(tmp_path / "run"), config)
    with open(path) as f:
        loaded = ml_collections.ConfigDict(json.load(f))
    assert loaded.model.dit == config.model.dit
    assert tuple(loaded.vae.block_out_channels) == tuple(config.vae.block_out_channels)
    assert loaded.train.to_dict() == config.train.to_dict()
    assert not [f for f in os.listdir(tmp_path / "run") if f.startswith(".tmp")]


def test_grain_iterator_position_survives_a_checkpoint(tmp_path):
    from ma2mi_jax.data import pretrain_pipeline as pipeline
    from ma2mi_jax.data.readers import registry as readers

    config = tiny_pretrain_config({"data.root": make_dfew(str(tmp_path / "dfew"))})
    clips, _ = readers.read_macro(config.data)

    def iterator():
        return pipeline.pretrain_iterator(
            clips, image_size=32, k_min=1, k_max=4, batch_size=2, seed=3, augment=config.data.augment
        )

    it = iterator()
    for _ in range(3):
        next(it)
    ck = checkpoints.Checkpoints(str(tmp_path / "ck"), keep=1)
    _save(ck, 3, _state(), it.get_state())
    ck.close()
    expected = [next(it) for _ in range(2)]
    _, saved = checkpoints.Checkpoints(str(tmp_path / "ck"), keep=1).restore(3, _state())
    fresh = iterator()
    fresh.set_state(checkpoints.decode_iterator_state(saved["data_iter"]))
    for want in expected:
        got = next(fresh)
        for key in ("frame0", "frame1", "k", "label"):
            np.testing.assert_array_equal(got[key], want[key])
