"""The one cast the losses and model outputs use: float32, unless a float64 reference asks for more."""

from __future__ import annotations

import jax.numpy as jnp


def at_least_f32(x: jnp.ndarray) -> jnp.ndarray:
    """x as float32, or in its own dtype when that is a wider float (float64 gradient references)."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))
