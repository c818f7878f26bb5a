"""Device mesh over a "data" axis: batch sharding, replicated state, multi-host start-up."""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ma2mi_jax.errors import ConfigError

log = logging.getLogger(__name__)

DATA_AXIS = "data"
# Environment variables that mean "this is one process of a multi-host run".
COORDINATOR_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_COORDINATOR")
HEARTBEAT_ENV = "MA2MI_HEARTBEAT_TIMEOUT"


def maybe_initialize_distributed() -> bool:
    """Call `jax.distributed.initialize()` once when a coordinator is configured; True if it did.

    Reads JAX_COORDINATOR_ADDRESS (or JAX_COORDINATOR), JAX_NUM_PROCESSES and JAX_PROCESS_ID; on
    clusters that JAX detects itself (SLURM, Cloud TPU) set JAX_COORDINATOR_ADDRESS=auto.
    MA2MI_HEARTBEAT_TIMEOUT (seconds) sets how long the job waits for a silent process before every
    process stops (JAX's default otherwise).
    Must run before anything touches the devices.
    """
    address = next((os.environ[k] for k in COORDINATOR_ENV if os.environ.get(k)), None)
    if address is None or _distributed_is_initialized():
        return False
    kwargs: dict[str, Any] = {}
    if address != "auto":
        kwargs["coordinator_address"] = address
        if "JAX_NUM_PROCESSES" in os.environ:
            kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
        if "JAX_PROCESS_ID" in os.environ:
            kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
    if os.environ.get(HEARTBEAT_ENV):
        kwargs["heartbeat_timeout_seconds"] = int(os.environ[HEARTBEAT_ENV])
    jax.distributed.initialize(**kwargs)
    log.info("multi-host: process %d of %d", jax.process_index(), jax.process_count())
    return True


def _distributed_is_initialized() -> bool:
    """True when jax.distributed has already been set up in this process."""
    try:
        from jax._src import distributed

        return distributed.global_state.client is not None
    except (ImportError, AttributeError):
        return False


def make_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh over all (global) devices named "data"."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device (parameters, optimiser state)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding that splits the leading (batch) axis over "data"."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def checked_global_batch(global_batch: int) -> int:
    """The global batch, checked to split evenly over the processes (each loads its share)."""
    if global_batch % jax.process_count():
        raise ConfigError(
            f"train.batch_size={global_batch} is not divisible by the {jax.process_count()} processes"
        )
    return global_batch


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Host-local numpy batch -> global jax.Arrays sharded over "data" (works on one or many hosts)."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def put_global(tree: Any, sharding: NamedSharding) -> Any:
    """Place a pytree that every process holds whole (host or local device arrays) with `sharding`.

    Unlike `jax.device_put`, it works when the sharding spans other processes' devices: each
    process fills its own devices' shards from its copy. An array already spread over several
    processes is resharded as it is; typed random keys travel as their integer data. An array
    that already has `sharding` is returned as it is.
    """

    def put(leaf: Any) -> Any:
        if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
            return leaf  # already placed: no host round trip
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return jax.device_put(leaf, sharding)
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(put(jax.random.key_data(leaf)), impl=jax.random.key_impl(leaf))
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place a pytree of arrays on every device of the mesh."""
    return jax.device_put(tree, replicated(mesh))
