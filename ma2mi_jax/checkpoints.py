"""The project's one checkpoint module: Orbax managers, resume and host-side restore.

A pre-training workdir holds `checkpoints/<step>/` with three items:
    state      {"step", "params", "batch_stats", "opt_state"}   (Orbax StandardSave)
    data_iter  the input iterator's `get_state()` (JSON, `encode_iterator_state`)
    config     the run's config (JSON)
and `config.json` beside it; a fine-tuning group keeps `checkpoints/<group>/<epoch>/` with the
fold-stacked state and a JSON `meta` item. Orbax writes each step under a temporary name and renames
it when complete, so a run killed at any moment leaves only whole checkpoints. Every JSON file of
the project goes through `files.write_json` (atomic, strict JSON, process 0 only). Reading a
pre-training workdir's weights into another model is `pretrained`'s job.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from ma2mi_jax import files
from ma2mi_jax.errors import UserError

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.json"
RUN_ITEMS = ("data_iter", "config")  # JSON items of a pre-training checkpoint

PyTree = Any


class CheckpointError(UserError, ValueError):
    """A checkpoint path is missing, empty or from another architecture; the message names it."""


def _first_line(err: BaseException, limit: int = 200) -> str:
    """The first line of an error's message, shortened: TensorStore's errors run to pages."""
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _quiet_abandoned_orbax_work() -> None:
    """Drop the errors of reads and writes still in flight when a restore or a save has failed.

    TensorStore completes the other reads or writes after Orbax closed its event loop, and Orbax's
    abandoned coroutines fail when they are collected; each would print a page of
    traceback through `sys.unraisablehook` after the one line that says what happened. Other
    unraisable errors still print.
    """
    previous = sys.unraisablehook
    if getattr(previous, "ignores_closed_loop", False):
        return

    def hook(unraisable: Any) -> None:
        err, obj = unraisable.exc_value, unraisable.object
        closed_loop = isinstance(err, RuntimeError) and str(err) == "Event loop is closed"
        code = getattr(obj, "cr_code", None)
        orbax_read = code is not None and "orbax" in code.co_filename
        if not (closed_loop or orbax_read):
            previous(unraisable)

    hook.ignores_closed_loop = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(_AbandonedOrbaxWork())
    logging.getLogger("absl").addFilter(_AbandonedOrbaxWork())


class _AbandonedOrbaxWork(logging.Filter):
    """Drop the tracebacks logged for a failed background read or write (the job reports it).

    asyncio logs a task whose error nobody collected: an Orbax coroutine, or a bare TensorStore
    read that Orbax wrapped in a task (its error names a `tensorstore_spec`). Other tasks still log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        abandoned = "never retrieved" in message and ("orbax" in message or "[tensorstore_spec=" in message)
        background = "orbax" in record.pathname and "raised an exception" in message
        return not (abandoned or background)


def _leaf_shapes(tree: PyTree) -> dict[tuple[str, ...], tuple[int, ...]]:
    """{leaf path: shape}, the path by names and indices whatever the containers (tuple, dict, ...)."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    name = lambda k: str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
    return {tuple(name(k) for k in path): tuple(getattr(leaf, "shape", ())) for path, leaf in flat}


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
    """A JSON-able dict of a config (tuples become lists)."""
    return json.loads(config.to_json_best_effort())


def save_config(workdir: str | os.PathLike, config: ml_collections.ConfigDict) -> str:
    """Write `<workdir>/config.json` atomically (process 0 only); returns its path."""
    return files.write_json(os.path.join(workdir, CONFIG_FILE), config_to_dict(config))


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


def run_items(iterator_state: Any, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The JSON items of a pre-training checkpoint: the iterator's position and the config."""
    return {"data_iter": encode_iterator_state(iterator_state), "config": config_to_dict(config)}


class Checkpoints:
    """Keep-the-last-N Orbax checkpoints: a state pytree plus named JSON items at each step.

    `json_items` names the JSON items every save carries (pre-training: the iterator position and
    the config; fine-tuning: one `meta` item).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        keep: int,
        json_items: Sequence[str] = RUN_ITEMS,
        async_save: bool = True,
    ) -> None:
        self.directory = os.path.abspath(directory)
        self.json_items = tuple(json_items)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max(1, keep),
            create=True,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,  # drop half-written steps of a killed run
        )
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", *self.json_items)
        )
        _quiet_abandoned_orbax_work()  # a failed asynchronous save is reported once, by save() or wait()

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of all complete checkpoints, ascending."""
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: PyTree, **items: Any) -> None:
        """Save (asynchronously unless async_save=False) the state and the JSON items at `step`."""
        if set(items) != set(self.json_items):
            raise ValueError(f"checkpoint items {sorted(items)} given, {sorted(self.json_items)} expected")
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            **{name: ocp.args.JsonSave(files.json_safe(value)) for name, value in items.items()},
        )
        with files.reporting_disk_full(self.directory, self._intact()):  # may be an earlier step's async save
            self.manager.save(int(step), args=args, force=True)

    def _intact(self) -> str:
        """What a failed save leaves: the newest complete checkpoint, which resuming starts from."""
        names = os.listdir(self.directory) if os.path.isdir(self.directory) else []
        last = max((int(e) for e in names if e.isdigit()), default=None)  # renamed into place: complete
        return f"the last complete checkpoint (step {last}) is intact" if last is not None else ""

    def restore(self, step: int, target: PyTree) -> tuple[PyTree, dict[str, Any]]:
        """(state shaped and sharded like `target`, {JSON item: value}) of checkpoint `step`."""
        try:
            return self._restore(step, target)
        except (ValueError, KeyError, TypeError) as e:
            raise self._mismatch(step, e) from None

    def _restore(self, step: int, target: PyTree) -> tuple[PyTree, dict[str, Any]]:
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
        out = self.manager.restore(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract),
                **{name: ocp.args.JsonRestore() for name in self.json_items},
            ),
        )
        return out["state"], {name: out[name] for name in self.json_items}

    def _restore_twice(self, step: int, target: PyTree) -> tuple[PyTree, dict[str, Any]]:
        """`_restore`, tried a second time before a failure counts (a passing network file system error)."""
        try:
            return self._restore(step, target)
        except Exception:  # retried once; the second failure is the one that counts
            return self._restore(step, target)

    def _mismatch(self, step: int, err: Exception) -> CheckpointError:
        return CheckpointError(
            f"{self.directory}/{step}: cannot restore into this run's state ({_first_line(err)}); the "
            "checkpoint is from another architecture or config: use another workdir"
        )

    def restore_latest(self, target: PyTree) -> tuple[int, PyTree, dict[str, Any]] | None:
        """(step, state, items) of the newest checkpoint that restores, or None when there is none.

        A newest checkpoint that fails while an older one restores is damaged (truncated or deleted
        files): it is named, moved to `<directory>.damaged/<step>` and the older one is used. When
        every checkpoint fails, the newest one's error is raised.
        """
        steps = self.all_steps()
        failures: list[tuple[int, Exception]] = []
        for step in reversed(steps):
            try:
                state, items = self._restore_twice(step, target)
            except Exception as err:  # Orbax and TensorStore raise many types for damaged files
                if not self._fits(step, target):
                    raise self._mismatch(step, err) from None  # another architecture, not damage
                failures.append((step, err))
                continue
            for bad, err in failures:
                self._set_aside(bad, err, step)
            return step, state, items
        if failures:
            step, err = failures[0]
            if not self._fits(step, target):
                raise self._mismatch(step, err) from None
            raise CheckpointError(
                f"{self.directory}: every checkpoint is damaged (steps {steps}; newest: {_first_line(err)}); "
                "delete the folder to start over"
            ) from None
        return None

    def _fits(self, step: int, target: PyTree) -> bool:
        """Whether checkpoint `step`'s recorded tree has `target`'s structure and shapes (no array read).

        A checkpoint whose metadata cannot be read counts as fitting: it is damaged, not foreign.
        """
        try:
            saved = self.manager.item_metadata(step)["state"].tree
        except Exception:  # missing or truncated metadata files
            return True
        return _leaf_shapes(saved) == _leaf_shapes(target)

    def _set_aside(self, step: int, err: Exception, fallback: int) -> None:
        """Move damaged checkpoint `step` out of the manager's folder and say which one is used instead."""
        aside = os.path.join(self.directory + ".damaged", str(step))
        if jax.process_index() == 0:
            while os.path.exists(aside):  # damaged before: keep both
                aside += "+"
            print(
                f"checkpoint step {step} in {self.directory} is damaged ({_first_line(err)}); "
                f"moved to {aside}; resuming from step {fallback}",
                flush=True,
            )
            os.makedirs(os.path.dirname(aside), exist_ok=True)
            os.rename(os.path.join(self.directory, str(step)), aside)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"damaged checkpoint {step} set aside")
        self.manager.reload()

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        with files.reporting_disk_full(self.directory, "earlier complete checkpoints are intact"):
            self.manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release the manager."""
        self.wait()
        self.manager.close()


def restore_host(directory: str | os.PathLike, step: int) -> PyTree:
    """The `state` item of checkpoint `step` as nested dicts of numpy arrays, whatever mesh wrote it.

    A manager that knows every item's handler reads the metadata (one without them warns that each
    unknown item "could not be restored"); only the state is read.
    """
    directory = os.path.abspath(directory)
    step_dir = os.path.join(directory, str(step))
    if not os.path.isdir(step_dir):
        raise CheckpointError(f"{step_dir}: no such checkpoint")
    others = [d for d in os.listdir(step_dir) if d != "state" and os.path.isdir(os.path.join(step_dir, d))]
    handlers = {"state": ocp.PyTreeCheckpointHandler(), **{d: ocp.JsonCheckpointHandler() for d in others}}
    with ocp.CheckpointManager(directory, item_handlers=handlers) as manager:
        try:
            meta = manager.item_metadata(step)["state"]
            restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
            with warnings.catch_warnings():  # host numpy arrays need no sharding: Orbax's note is moot
                warnings.filterwarnings("ignore", message="Sharding info not provided")
                out = manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.PyTreeRestore(item=None, restore_args=restore_args)
                    ),
                )
        except (ValueError, KeyError, FileNotFoundError, TypeError) as e:
            raise CheckpointError(f"{directory}/{step}: unreadable checkpoint ({e})") from None
    return out["state"]


def save_tree(path: str | os.PathLike, tree: PyTree) -> None:
    """Write one pytree (e.g. an exported classifier's variables) as a standalone Orbax checkpoint."""
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.abspath(path), jax.tree_util.tree_map(np.asarray, tree))


def restore_tree(path: str | os.PathLike) -> PyTree:
    """A pytree written by `save_tree`, as numpy arrays on the host."""
    path = os.path.abspath(path)
    host = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    with ocp.StandardCheckpointer() as ckptr:
        abstract = jax.tree_util.tree_map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=host),
            ckptr.metadata(path).item_metadata.tree,
        )
        return jax.tree_util.tree_map(np.asarray, ckptr.restore(path, abstract))
