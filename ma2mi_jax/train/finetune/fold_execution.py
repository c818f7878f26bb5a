"""Runs a group of F folds on device-resident data, vmapped over the folds or one fold at a time.

The data set (`fold_step.fold_data`) and the frozen inputs live on the device for the whole group; a
call of `run_epoch` takes the epoch's batches, {"indices": int32[S,F,B], "warp": f32[S,F,B,2,3]}
(a few bytes per pair from the host), and dispatches its S compiled steps without waiting for them.
Vmapped mode steps `vmap(step)` on the stacked fold state (the fold axis sharded over a "fold"
mesh axis when there are several devices); sequential mode keeps one state per fold and runs each
fold's epoch in turn, `fold_threads` folds at once from host threads (each fold's steps stay in
order), so no call copies the other folds' parameters (docs/decisions.md#sequential-folds-on-a-cpu,
docs/decisions.md#two-fold-threads). Both modes see the same per-fold batches, transforms and keys,
so they give the same numbers up to float rounding (the warped pixels are the same bits,
`data.device_augment`).

The epoch is a Python loop over jitted steps, not a `lax.scan`: XLA:CPU runs a scanned step far
slower than the same step called on its own, and on a GPU the dispatch of a step is small against its
work (docs/decisions.md#epoch-as-a-loop-of-dispatched-steps).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ma2mi_jax.train import mesh as mesh_lib
from ma2mi_jax.train.finetune.fold_step import FoldState, encoder_distances, stack_folds, take_fold

PyTree = Any
FOLD_AXIS = "fold"
# A group's state: FoldState with a leading fold axis (vmapped) or one FoldState per fold (sequential).
GroupState = FoldState | list[FoldState]
# The folds' metrics stacked in one compiled call, not eagerly with one dispatch per leaf
# (docs/decisions.md#fold-metrics-stacked-in-one-call).
_stack_metrics = jax.jit(stack_folds)


def runs_sequentially(finetune_cfg: Any) -> bool:
    """`finetune.sequential`, or when unset: True on one CPU process (vmapped grouped convolutions are
    slow there: docs/decisions.md#sequential-folds-on-a-cpu); vmapped on accelerators and on several
    processes, whose devices share the folds."""
    if finetune_cfg.sequential is None:
        return jax.default_backend() == "cpu" and jax.process_count() == 1
    return bool(finetune_cfg.sequential)


def folds_per_group(finetune_cfg: Any) -> int:
    """Folds trained together: `finetune.folds_per_step`, or when 0 every fold (0) when vmapped and
    `finetune.fold_threads` when sequential, where a larger group only holds more states in memory."""
    given = int(finetune_cfg.folds_per_step)
    if given > 0:
        return given
    return int(finetune_cfg.fold_threads) if runs_sequentially(finetune_cfg) else 0


def fold_mesh() -> Mesh | None:
    """A 1-d mesh over all devices with axis "fold", or None on a single device."""
    devices = jax.devices()
    return Mesh(np.asarray(devices), (FOLD_AXIS,)) if len(devices) > 1 else None


def padded_group_size(num_folds: int, mesh: Mesh | None) -> int:
    """Group size rounded up to a multiple of the mesh size (the extra folds are discarded copies)."""
    if mesh is None:
        return num_folds
    n = mesh.devices.size
    return -(-num_folds // n) * n


class FoldGroupRunner:
    """Trains and evaluates F folds on device-resident data, vmapped or one fold at a time.

    `fold_step(state, batch {"indices"[B], "warp"[B,2,3]}, key, data, frozen)` and
    `fold_predict(params, batch_stats, indices[B], data)` are ONE fold's functions
    (`step.make_fold_step`, `step.make_fold_predict`).
    `data` and `frozen_inputs` go to every call un-stacked: one copy shared by all folds (replicated
    over the mesh), never updated.
    """

    def __init__(
        self,
        fold_step: Callable[..., tuple[FoldState, dict]],
        fold_predict: Callable[..., jax.Array],
        data: dict,
        *,
        sequential: bool = False,
        mesh: Mesh | None = None,
        frozen_inputs: PyTree = None,
        fold_threads: int = 1,
    ) -> None:
        self.sequential = sequential
        self.fold_threads = max(1, int(fold_threads))
        self.mesh = None if sequential else mesh
        if sequential:
            self._step = jax.jit(fold_step, donate_argnums=0)
            self._predict = jax.jit(fold_predict)
        else:
            # Metrics and probabilities come back replicated: every process can read them, whichever
            # devices (and hosts) the folds live on.
            whole = None if self.mesh is None else NamedSharding(self.mesh, PartitionSpec())
            self._step = jax.jit(
                jax.vmap(fold_step, in_axes=(0, 0, 0, None, None)),
                donate_argnums=0,
                out_shardings=None if whole is None else (None, whole),
            )
            self._predict = jax.jit(jax.vmap(fold_predict, in_axes=(0, 0, 0, None)), out_shardings=whole)
            # Whole-group reads in ONE program each: with the folds on several processes, every process
            # runs the same few collectives (not one per fold and leaf) and reads a replicated result.
            self._distances = jax.jit(jax.vmap(encoder_distances, in_axes=(0, None)), out_shardings=whole)
            self._take = jax.jit(take_fold, static_argnums=1, out_shardings=whole)
        self.data = self.replicate(data)
        self.frozen_inputs = None if frozen_inputs is None else self.replicate(frozen_inputs)

    def replicate(self, tree: PyTree) -> PyTree:
        """`tree` on every device of the mesh (as it is when already there: placing it again is free)."""
        if self.mesh is None:
            return jax.tree.map(jnp.asarray, tree)
        return mesh_lib.put_global(tree, NamedSharding(self.mesh, PartitionSpec()))

    def place(self, tree: PyTree, axis: int = 0) -> PyTree:
        """Put a fold-stacked pytree on the devices, its fold axis `axis` sharded over the mesh."""
        if self.mesh is None:
            return jax.tree.map(jnp.asarray, tree)
        spec = PartitionSpec(*([None] * axis), FOLD_AXIS)
        return mesh_lib.put_global(tree, NamedSharding(self.mesh, spec))

    def group_state(self, stacked: FoldState) -> GroupState:
        """The runner's form of a fold-stacked state [F,...] (a checkpoint's, or a fresh one)."""
        if not self.sequential:
            return self.place(stacked)
        return [jax.tree.map(jnp.array, take_fold(stacked, i)) for i in range(int(stacked.step.shape[0]))]

    def stacked(self, state: GroupState) -> FoldState:
        """The fold-stacked state [F,...] (what a checkpoint holds), whatever the mode."""
        return stack_folds(state) if self.sequential else state

    def train_step(self, state: GroupState, batch: dict, keys: jax.Array) -> tuple[GroupState, dict]:
        """One step of every fold: batch leaves [F,B,...] -> (state, metrics f32[F] on the device)."""
        if not self.sequential:
            return self._step(state, self.place(batch), self.place(keys), self.data, self.frozen_inputs)
        metrics = []
        for i in range(len(state)):
            fold_batch = {k: v[i] for k, v in batch.items()}
            state[i], m = self._step(state[i], fold_batch, keys[i], self.data, self.frozen_inputs)
            metrics.append(m)
        return state, _stack_metrics(metrics)

    def compiled_step(self, state: GroupState, batch: dict, keys: jax.Array) -> Any:
        """The training step compiled for one step's batch [F,B,...] (its first call then reuses it).

        Vmapped: the step of every fold at once; sequential: one fold's step (each of the
        `fold_threads` folds stepped at once holds its own).
        """
        if not self.sequential:
            args = (state, self.place(batch), self.place(keys))
        else:
            args = (state[0], {k: v[0] for k, v in batch.items()}, keys[0])
        return self._step.lower(*args, self.data, self.frozen_inputs).compile()

    def run_epoch(
        self,
        state: GroupState,
        batches: dict,
        keys: jax.Array,
        on_fold: Callable[[int], None] | None = None,
    ) -> tuple[GroupState, dict[str, np.ndarray]]:
        """S steps of every fold: batches leaves [S,F,B,...], keys key[F] -> (state, metrics f32[S,F]).

        `on_fold(n)` is called as n more folds finish the epoch (progress).
        """
        steps, folds = batches["indices"].shape[:2]
        if not self.sequential:
            per_step = []
            keys = self.place(keys)  # key[F], one per fold, with its fold's shard (once: then a no-op)
            for s in range(steps):
                state, m = self.train_step(state, {k: v[s] for k, v in batches.items()}, keys)  # [F,B,...]
                per_step.append(m)
            metrics = jax.device_get(per_step)
            if on_fold is not None:
                on_fold(folds)
            return state, {k: np.stack([np.asarray(m[k]) for m in metrics]) for k in metrics[0]}

        def fold_epoch(i: int) -> list[dict]:
            fold_metrics = []
            key = keys[i]  # one slice per epoch, not per step
            for s in range(steps):
                batch = {k: v[s, i] for k, v in batches.items()}  # [B,...]
                state[i], m = self._step(state[i], batch, key, self.data, self.frozen_inputs)
                fold_metrics.append(m)
            jax.block_until_ready(state[i])
            if on_fold is not None:
                on_fold(1)
            return fold_metrics

        with concurrent.futures.ThreadPoolExecutor(self.fold_threads) as pool:
            per_fold = list(pool.map(fold_epoch, range(folds)))
        metrics = jax.device_get(per_fold)  # [F][S]{k: scalar}
        return state, {
            k: np.asarray([[m[k] for m in fold] for fold in metrics], np.float32).T for k in metrics[0][0]
        }

    def fold_variables(self, state: GroupState, index: int) -> dict:
        """Fold `index`'s classifier variables {"params", "batch_stats"} as host arrays, on every
        process whichever devices hold the fold (one gathering program, not one per leaf)."""
        if self.sequential:
            return jax.device_get(self._variables(state[index]))
        return jax.device_get(self._take(self._variables(state), index))

    def encoder_distances(self, state: GroupState, start: dict[str, PyTree]) -> dict[str, np.ndarray]:
        """{encoder name: f32[F] ||w - w_start|| / ||w_start|| per fold} (`fold_step.encoder_distances`)."""
        if self.sequential:
            per_fold = jax.device_get([encoder_distances(s.params["classifier"], start) for s in state])
            return {k: np.asarray([d[k] for d in per_fold], np.float32) for k in per_fold[0]}
        distances = self._distances(state.params["classifier"], self.replicate(start))  # {name: [F]}
        return {k: np.asarray(v) for k, v in jax.device_get(distances).items()}

    @staticmethod
    def _variables(state: FoldState) -> dict:
        return {"params": state.params["classifier"], "batch_stats": state.batch_stats}

    def predict(self, state: GroupState, indices: np.ndarray) -> np.ndarray:
        """Probabilities f32[nb,F,B,N] of the samples indices int32[nb,F,B], each fold through its model."""
        out = []
        for batch in indices:  # [F,B]
            if not self.sequential:
                params = state.params["classifier"]
                out.append(self._predict(params, state.batch_stats, self.place(batch), self.data))
            else:
                out.append(
                    jnp.stack(
                        [
                            self._predict(
                                s.params["classifier"], s.batch_stats, jnp.asarray(batch[i]), self.data
                            )
                            for i, s in enumerate(state)
                        ]
                    )
                )
        return np.stack([np.asarray(p) for p in jax.device_get(out)])
