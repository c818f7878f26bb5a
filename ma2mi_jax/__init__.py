"""ma2mi_jax: MA2MI micro-expression recognition in JAX/Flax."""

__version__ = "0.1.0"
