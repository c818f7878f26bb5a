"""Tools beside the package that no job of ma2mi_jax uses yet (see README.md here)."""
