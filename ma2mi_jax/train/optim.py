"""AdamW with the paper's per-step exponential decay, optional clipping and frozen sub-trees."""

from __future__ import annotations

from collections.abc import Callable

import jax
import ml_collections
import optax


def learning_rate_schedule(train: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Exponential decay from `train.lr` to `train.lr * train.final_lr_ratio` over `total_steps`."""
    if total_steps <= 0:
        raise ValueError(f"train: total steps must be positive, got {total_steps}")
    if not 0.0 < train.final_lr_ratio <= 1.0:
        raise ValueError(f"train.final_lr_ratio must be in (0, 1], got {train.final_lr_ratio}")
    if train.final_lr_ratio == 1.0:
        return optax.constant_schedule(train.lr)
    return optax.exponential_decay(
        init_value=train.lr,
        transition_steps=max(total_steps - 1, 1),
        decay_rate=train.final_lr_ratio,
    )


def make_optimizer(
    train: ml_collections.ConfigDict,
    total_steps: int,
    trainable: Callable[[tuple], bool] | None = None,
) -> optax.GradientTransformation:
    """AdamW(lr schedule, weight decay) with optional global-norm clipping.

    `trainable(path) -> bool` receives a parameter's key path (tuple of names); parameters for
    which it returns False get zero updates (frozen) and no optimiser state.
    """
    tx = optax.adamw(learning_rate_schedule(train, total_steps), weight_decay=train.weight_decay)
    if train.grad_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(train.grad_clip), tx)
    if trainable is None:
        return tx

    def labels(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: "train" if trainable(_path_names(path)) else "freeze", params
        )

    return optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)


def _path_names(path: tuple) -> tuple[str, ...]:
    """Key-path entries of a pytree leaf as plain strings."""
    return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
