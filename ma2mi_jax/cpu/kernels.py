"""The CPU forms of the ResNet trunk's operations, switched on here and nowhere else.

On XLA:CPU the trunk runs its stride-1 convolutions over maps within the kernel's reach as one
matrix product (`small_map_conv`) and its stem max-pool as a selection among strided slices
(`max_pool`); on other backends it keeps XLA's own operations. Parameters are the same either way.
"""

from __future__ import annotations

import jax

from ma2mi_jax.cpu import max_pool, small_map_conv
from ma2mi_jax.models.resnet import TrunkOps


def trunk_ops() -> TrunkOps:
    """The trunk's operations for the default backend: the CPU forms on a CPU, XLA's elsewhere."""
    if jax.default_backend() != "cpu":
        return TrunkOps()
    return TrunkOps(
        conv_general_dilated=small_map_conv.conv_general_dilated,
        stem_max_pool=max_pool.max_pool_by_slices,
    )
