"""Placing host pytrees on a mesh: values, shardings, typed keys, and no second copy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from ma2mi_jax.train import mesh as mesh_lib


def test_put_global_places_host_arrays_and_keys_and_keeps_placed_ones():
    mesh = mesh_lib.make_mesh()
    sharding = NamedSharding(mesh, PartitionSpec())
    host = {"x": np.arange(12, dtype=np.float32).reshape(3, 4), "key": jax.random.split(jax.random.key(3), 2)}
    placed = mesh_lib.put_global(host, sharding)
    assert placed["x"].sharding == sharding and placed["key"].sharding == sharding
    np.testing.assert_array_equal(np.asarray(placed["x"]), host["x"])
    assert jax.dtypes.issubdtype(placed["key"].dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(jax.random.key_data(placed["key"]), jax.random.key_data(host["key"]))
    again = mesh_lib.put_global(placed, sharding)
    assert again["x"] is placed["x"] and again["key"] is placed["key"]  # already there: the same arrays
    other = mesh_lib.put_global({"x": jnp.asarray(host["x"])}, sharding)["x"]  # a default-device array
    assert other.sharding == sharding
