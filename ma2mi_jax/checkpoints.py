"""Orbax checkpoints of training runs: save/resume the state with the data iterator, load pre-trained MIACNet.

A run's workdir holds `checkpoints/<step>/` with three items:
    state      {"step", "params", "batch_stats", "opt_state"}   (Orbax StandardSave)
    data_iter  the input iterator's `get_state()` (JSON)
    config     the run's config (JSON)
and `config.json` beside it. Orbax writes each step under a temporary name and renames it when
complete, so a run killed at any moment leaves only whole checkpoints.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import tempfile
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from ma2mi_jax.errors import UserError

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.json"
ITEMS = ("state", "data_iter", "config")
_STEP_DIR = re.compile(r"^\d+$")

PyTree = Any


class CheckpointError(UserError, ValueError):
    """A checkpoint path is missing, empty or from another architecture; the message names it."""


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
    """A JSON-able dict of a config (tuples become lists)."""
    return json.loads(config.to_json_best_effort())


def _write_json_atomic(path: str, obj: Any) -> None:
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_config(workdir: str, config: ml_collections.ConfigDict) -> str:
    """Write `<workdir>/config.json` atomically (process 0 only); returns its path."""
    path = os.path.join(workdir, CONFIG_FILE)
    if jax.process_index() == 0:
        _write_json_atomic(path, config_to_dict(config))
    return path


def write_json(path: str, obj: Any) -> None:
    """Write a JSON file atomically (process 0 only), e.g. a run's final metrics."""
    if jax.process_index() == 0:
        _write_json_atomic(path, obj)


def encode_iterator_state(state: Any) -> dict:
    """Data-iterator state (dict or bytes, as Grain returns it) -> JSON-able dict."""
    if isinstance(state, bytes | bytearray):
        return {"format": "bytes", "value": base64.b64encode(bytes(state)).decode("ascii")}
    return {"format": "json", "value": state}


def decode_iterator_state(blob: dict) -> Any:
    """Inverse of `encode_iterator_state`."""
    if blob.get("format") == "bytes":
        return base64.b64decode(blob["value"])
    return blob["value"]


class Checkpoints:
    """Keep-the-last-N Orbax checkpoints of a run, each with the data iterator's position and the config."""

    def __init__(self, directory: str, *, keep: int, async_save: bool = True) -> None:
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=True,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,  # drop half-written steps of a killed run
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of all complete checkpoints, ascending."""
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: PyTree, data_iter: Any, config: ml_collections.ConfigDict) -> None:
        """Save (asynchronously) the state dict, the iterator's `get_state()` and the config at `step`."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data_iter=ocp.args.JsonSave(encode_iterator_state(data_iter)),
            config=ocp.args.JsonSave(config_to_dict(config)),
        )
        self.manager.save(int(step), args=args, force=True)

    def restore(self, step: int, target: PyTree) -> tuple[PyTree, Any]:
        """(state dict shaped and sharded like `target`, iterator state) of checkpoint `step`."""
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
        try:
            out = self.manager.restore(
                int(step),
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), data_iter=ocp.args.JsonRestore()
                ),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(
                f"{self.directory}/{step}: cannot restore into this run's state ({e}); the checkpoint is "
                "from another architecture or config: use another workdir"
            ) from None
        return out["state"], decode_iterator_state(out["data_iter"])

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


def resolve(path: str) -> tuple[str, int]:
    """A workdir, its checkpoints folder or one step folder -> (checkpoints folder, step to load)."""
    path = os.path.abspath(path)
    if os.path.isdir(os.path.join(path, CHECKPOINT_DIR)):
        path = os.path.join(path, CHECKPOINT_DIR)
    if _STEP_DIR.match(os.path.basename(path)) and os.path.isdir(os.path.join(path, "state")):
        return os.path.dirname(path), int(os.path.basename(path))
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint path {path} does not exist")
    steps = [int(e) for e in os.listdir(path) if _STEP_DIR.match(e) and os.path.isdir(os.path.join(path, e))]
    if not steps:
        raise CheckpointError(
            f"{path}: no checkpoint found (expected a pre-training workdir with {CHECKPOINT_DIR}/<step>/)"
        )
    return path, max(steps)


def load_variables(path: str) -> dict[str, PyTree]:
    """{"params", "batch_stats", "step"} of the newest checkpoint under `path` (as saved, on host)."""
    directory, step = resolve(path)
    handlers = {
        "state": ocp.PyTreeCheckpointHandler(),
        "data_iter": ocp.JsonCheckpointHandler(),
        "config": ocp.JsonCheckpointHandler(),
    }
    with ocp.CheckpointManager(directory, item_handlers=handlers) as manager:
        meta = manager.item_metadata(step)["state"]
        # numpy on the host: independent of the devices and mesh the checkpoint was written with
        restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
        try:
            out = manager.restore(
                step,
                args=ocp.args.Composite(state=ocp.args.PyTreeRestore(item=None, restore_args=restore_args)),
            )
        except (ValueError, KeyError, FileNotFoundError) as e:
            raise CheckpointError(f"{directory}/{step}: unreadable checkpoint ({e})") from None
    state = out["state"]
    return {"params": state["params"], "batch_stats": state.get("batch_stats", {}), "step": step}


def load_pretrained_miacnet(path: str) -> dict[str, PyTree]:
    """MIACNet's {"params", "batch_stats"} from a pre-training workdir / checkpoints folder / step folder."""
    v = load_variables(path)
    if "miacnet" not in v["params"]:
        raise CheckpointError(
            f"{path}: the checkpoint has no 'miacnet' parameters (top level: {sorted(v['params'])}); "
            "give an MA2MI or MAER pre-training workdir"
        )
    return {"params": v["params"]["miacnet"], "batch_stats": (v["batch_stats"] or {}).get("miacnet", {})}


def merge_pretrained(fresh: PyTree, loaded: PyTree, source: str) -> tuple[PyTree, list[str]]:
    """Replace the top-level parts of `fresh` (e.g. "miacnet", "dit") found in `loaded` when shapes match.

    Returns the merged tree and the names taken from `loaded`; a part present in both with other
    shapes is an error naming it.
    """
    merged, taken = dict(fresh), []
    for name, sub in fresh.items():
        if name not in loaded:
            continue
        want = jax.tree_util.tree_map(lambda x: tuple(x.shape), sub)
        got = jax.tree_util.tree_map(lambda x: tuple(x.shape), loaded[name])
        if want != got:
            raise CheckpointError(
                f"{source}: part '{name}' has other shapes than this config's model "
                "(model.resnet_width / model.dit / model.fusion differ); use a matching checkpoint"
            )
        merged[name] = jax.tree_util.tree_map(lambda f, x: jax.numpy.asarray(x, f.dtype), sub, loaded[name])
        taken.append(name)
    return merged, taken
