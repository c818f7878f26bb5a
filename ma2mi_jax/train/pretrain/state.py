"""Pre-training state (params, BatchNorm statistics, optimiser state, step) and the models it serves.

Parameter layout, shared with fine-tuning through `pretrained.load_pretrained_miacnet`:
    params      = {"miacnet": ..., "dit": ...}     (reconstruction objective)
                  {"miacnet": ..., "head": ...}    (supervised objective, MIACClassifier's layout)
    batch_stats = {"miacnet": ...}
The frozen VAE's parameters are never part of the state.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ma2mi_jax.models import dit as dit_lib
from ma2mi_jax.models import miacnet as miacnet_lib
from ma2mi_jax.train import optim
from ma2mi_jax.train.pretrain import checks

PyTree = Any


@flax.struct.dataclass
class TrainState:
    """Everything that changes during pre-training; a pytree, so it can be donated and sharded."""

    step: jax.Array  # int32 scalar: number of updates applied
    params: PyTree
    batch_stats: PyTree
    opt_state: PyTree

    def as_dict(self) -> dict[str, PyTree]:
        """Plain-dict form used in checkpoints."""
        return {
            "step": self.step,
            "params": self.params,
            "batch_stats": self.batch_stats,
            "opt_state": self.opt_state,
        }

    @classmethod
    def from_dict(cls, d: dict[str, PyTree]) -> TrainState:
        """Inverse of `as_dict`."""
        return cls(step=d["step"], params=d["params"], batch_stats=d["batch_stats"], opt_state=d["opt_state"])


@dataclasses.dataclass(frozen=True)
class Models:
    """The Flax modules of one pre-training variant (unused ones are None)."""

    miacnet: nn.Module | None  # reconstruction objective
    dit: nn.Module | None  # reconstruction objective
    classifier: nn.Module | None  # supervised objective (MIACClassifier)
    image_size: int
    grid: int  # spatial size of the DiT's input (latent or pixel grid)
    channels: int  # channels of the DiT's input and output (4 latent, 3 pixel)
    register_target: bool = False  # the DiT's input and target come from MIACNet's registered pair

    @property
    def supervised(self) -> bool:
        """True for the MAER (cross-entropy) objective."""
        return self.classifier is not None


def build_models(config: ml_collections.ConfigDict, num_classes: int = 0, vae: Any = None) -> Models:
    """Modules for `config` (objective, space, model sizes, compute dtype); `vae` sets the latent grid."""
    dtype = jnp.dtype(config.dtype)
    size = int(config.data.image_size)
    if config.objective == "supervised":
        classifier = miacnet_lib.classifier_from_config(config.model, num_classes, dtype)
        return Models(None, None, classifier, size, size, 3)
    if config.space == "latent" and vae is not None:
        grid, channels = vae.latent_grid(size), vae.latent_channels
    elif config.space == "latent":
        grid, channels = size // checks.latent_downsample(config.vae), int(config.vae.latent_channels)
    else:
        grid, channels = size, 3
    miacnet = miacnet_lib.miacnet_from_config(config.model, dtype)
    dit = dit_lib.DiT(
        variant=config.model.dit,
        out_channels=channels,
        dtype=dtype,
        residual=bool(config.model.dit_residual),
        map_condition=bool(config.model.dit_condition_map),
    )
    return Models(miacnet, dit, None, size, grid, channels, bool(config.model.get("register_target", False)))


def init_variables(models: Models, rng: jax.Array) -> tuple[PyTree, PyTree]:
    """Fresh (params, batch_stats) in the layout above; float32 parameters.

    One compiled program: run eagerly, every initialiser and layer would compile on its own and
    leave its own persistent-cache entry (docs/decisions.md#initialisation-in-one-compiled-program).
    The values agree with the eager ones to float rounding.
    """
    return jax.jit(functools.partial(_fresh_variables, models))(rng)


def _fresh_variables(models: Models, rng: jax.Array) -> tuple[PyTree, PyTree]:
    frames = jnp.zeros((1, models.image_size, models.image_size, 3), jnp.uint8)  # [1,H,W,3]
    k_miac, k_dit = jax.random.split(rng)
    if models.supervised:
        v = models.classifier.init(k_miac, frames, frames, train=False)
        return dict(v["params"]), dict(v.get("batch_stats", {}))
    v = models.miacnet.init(k_miac, frames, frames, train=False)
    # Shapes only: the DiT's init needs c and the fused map, not MIACNet's values.
    shapes = jax.eval_shape(functools.partial(models.miacnet.apply, train=False), v, frames, frames)
    c, cmap = (jnp.zeros(shapes[k].shape, jnp.float32) for k in ("c", "map"))  # [1,C], [1,h',w',C]
    z = jnp.zeros((1, models.grid, models.grid, models.channels), jnp.float32)  # [1,h,w,ch]
    dit_params = models.dit.init(k_dit, z, c, cmap)["params"]
    params = {"miacnet": v["params"], "dit": dit_params}
    return params, {"miacnet": v.get("batch_stats", {})}


def trainable_fn(config: ml_collections.ConfigDict):
    """Which parameters the optimiser may move: the position encoder only when a loss reaches it.

    With the position loss off and `model.stop_position_grad`, no loss reaches the position
    encoder, so it is frozen (AdamW's weight decay would otherwise still shrink it).
    """
    pos_loss = config.position_loss.enabled and config.model.fusion != "none"
    rec_reaches_fp = config.objective == "supervised" or not config.model.stop_position_grad
    if pos_loss or rec_reaches_fp:
        return None
    return lambda path: "position_encoder" not in path


def pretrain_optimizer(config: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
    """AdamW with the config's schedule, clipping and frozen branches."""
    return optim.make_optimizer(config.train, total_steps, trainable_fn(config))


def create_train_state(params: PyTree, batch_stats: PyTree, tx: optax.GradientTransformation) -> TrainState:
    """Step 0 state with a fresh optimiser."""
    return TrainState(
        step=jnp.asarray(0, jnp.int32), params=params, batch_stats=batch_stats, opt_state=tx.init(params)
    )


def param_count(tree: PyTree) -> int:
    """Number of scalars in a pytree."""
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))
