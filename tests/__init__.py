"""The tests of ma2mi_jax (a package, so that they import their helpers as `tests.helpers`)."""
