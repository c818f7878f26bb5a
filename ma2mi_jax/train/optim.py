"""AdamW with the paper's per-step exponential decay, optional clipping, frozen, held and scaled sub-trees."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
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
    held: Callable[[tuple], bool] | None = None,
    hold_steps: int = 0,
    held_scale: optax.Schedule | None = None,
) -> optax.GradientTransformation:
    """AdamW(lr schedule, weight decay) with optional global-norm clipping.

    `trainable(path) -> bool` receives a parameter's key path (tuple of names); parameters for
    which it returns False get zero updates (frozen) and no optimiser state. Parameters for which
    `held(path)` is True get zero updates for the first `hold_steps` steps and the same AdamW
    afterwards (AdamW's moments see their gradients from step 0 and the learning-rate schedule runs
    on; weight decay applies only once they move). `held_scale(step)` (optional) multiplies their
    whole AdamW update, weight decay included: their rate and decay are both scaled, as for a
    parameter group with its own learning rate.
    """
    tx = optax.adamw(learning_rate_schedule(train, total_steps), weight_decay=train.weight_decay)
    if train.grad_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(train.grad_clip), tx)
    if hold_steps < 0:
        raise ValueError(f"hold_steps must be >= 0, got {hold_steps}")
    hold = held is not None and (hold_steps > 0 or held_scale is not None)
    if trainable is None and not hold:
        return tx

    def label(path: tuple[str, ...]) -> str:
        if trainable is not None and not trainable(path):
            return "freeze"
        return "hold" if hold and held(path) else "train"

    def labels(params):
        return jax.tree_util.tree_map_with_path(lambda path, _: label(_path_names(path)), params)

    transforms = {"train": tx, "freeze": optax.set_to_zero()}
    if hold:

        def factor(count: jax.Array) -> jax.Array:
            released = (count >= hold_steps).astype(jnp.float32)  # f32[]
            return released if held_scale is None else released * held_scale(count)

        transforms["hold"] = optax.chain(tx, optax.scale_by_schedule(factor))
    return optax.multi_transform(transforms, labels)


def scaled_warmup(scale: float, start: int, warmup_steps: int) -> optax.Schedule | None:
    """`scale` times a linear rise from step `start`: scale * min(1, (count - start + 1) / warmup_steps).

    Zero before `start`; None when it is the constant 1 (scale 1, no warm-up), so that the caller
    leaves the optimiser as it was.
    """
    if scale == 1.0 and warmup_steps <= 0:
        return None
    if warmup_steps <= 0:
        return lambda count: jnp.float32(scale) * (count >= start).astype(jnp.float32)
    return lambda count: (
        jnp.float32(scale) * jnp.clip((count - start + 1).astype(jnp.float32) / warmup_steps, 0.0, 1.0)
    )


def _path_names(path: tuple) -> tuple[str, ...]:
    """Key-path entries of a pytree leaf as plain strings."""
    return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
