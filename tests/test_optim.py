"""Frozen and held sub-trees of the optimiser (toy pytrees) and the config check of the hold."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ma2mi_jax.train import optim


def _train(**overrides) -> ml_collections.ConfigDict:
    base = {"lr": 1e-2, "weight_decay": 0.0, "final_lr_ratio": 1.0, "grad_clip": 0.0}
    return ml_collections.ConfigDict({**base, **overrides})


def _grads(step: int) -> dict:
    """Gradients that change from step to step, so that AdamW's moments matter."""
    g = jnp.asarray([1.0, -2.0, 0.5]) * (1.0 + 0.3 * step)
    return {"encoder": {"w": g}, "head": {"w": -g}}


def test_held_leaves_get_zero_updates_then_plain_adamw_updates():
    """Held for 3 steps: updates exactly 0, then AdamW's (to rounding) on the same gradient history."""
    params = {"encoder": {"w": jnp.ones(3)}, "head": {"w": jnp.zeros(3)}}
    held = optim.make_optimizer(_train(), 10, held=lambda path: "encoder" in path, hold_steps=3)
    plain = optim.make_optimizer(_train(), 10)
    s_held, s_plain = held.init(params), plain.init(params)
    for step in range(6):
        u_held, s_held = held.update(_grads(step), s_held, params)
        u_plain, s_plain = plain.update(_grads(step), s_plain, params)
        np.testing.assert_allclose(u_held["head"]["w"], u_plain["head"]["w"], rtol=1e-6)
        if step < 3:
            np.testing.assert_array_equal(u_held["encoder"]["w"], np.zeros(3))
        else:
            np.testing.assert_allclose(u_held["encoder"]["w"], u_plain["encoder"]["w"], rtol=1e-6)
            assert np.abs(np.asarray(u_held["encoder"]["w"])).min() > 0


def test_frozen_wins_over_held_and_weight_decay_waits_for_release():
    """A frozen leaf never moves; a held leaf is not decayed while held."""
    params = {"encoder": {"w": jnp.ones(3)}, "head": {"w": jnp.ones(3)}}
    zero = {"encoder": {"w": jnp.zeros(3)}, "head": {"w": jnp.zeros(3)}}
    tx = optim.make_optimizer(
        _train(weight_decay=0.5), 10, trainable=lambda path: "head" not in path,
        held=lambda path: True, hold_steps=2,
    )  # fmt: skip
    state = tx.init(params)
    for step in range(4):
        updates, state = tx.update(zero, state, params)
        np.testing.assert_array_equal(updates["head"]["w"], np.zeros(3))
        if step < 2:
            np.testing.assert_array_equal(updates["encoder"]["w"], np.zeros(3))
        else:  # weight decay alone: -lr * wd * w
            np.testing.assert_allclose(updates["encoder"]["w"], -1e-2 * 0.5 * np.ones(3), rtol=1e-6)


def test_negative_hold_is_refused():
    with pytest.raises(ValueError, match="hold_steps"):
        optim.make_optimizer(_train(), 10, held=lambda path: True, hold_steps=-1)


def test_no_hold_steps_is_plain_adamw():
    """hold_steps=0 holds nothing: the same updates as without `held`."""
    params = {"encoder": {"w": jnp.ones(3)}, "head": {"w": jnp.zeros(3)}}
    a = optim.make_optimizer(_train(), 10, held=lambda path: True, hold_steps=0)
    b = optim.make_optimizer(_train(), 10)
    ua, _ = a.update(_grads(0), a.init(params), params)
    ub, _ = b.update(_grads(0), b.init(params), params)
    np.testing.assert_array_equal(ua["encoder"]["w"], ub["encoder"]["w"])
    assert np.abs(np.asarray(ua["encoder"]["w"])).min() > 0


@pytest.mark.parametrize("epochs", [-1, 3])
def test_head_only_epochs_out_of_range_names_its_key(epochs):
    """finetune.head_only_epochs must leave at least one epoch that trains the encoders."""
    from ma2mi_jax.errors import ConfigError
    from ma2mi_jax.train.finetune.checks import validate_finetune_config
    from tests.helpers.configs import tiny_finetune_config

    overrides = {"train.epochs": 3, "finetune.head_only_epochs": epochs}
    config = tiny_finetune_config("unused", "unused", **overrides)
    with pytest.raises(
        ConfigError, match=r"finetune\.head_only_epochs must be >= 0 and below train\.epochs \(3\)"
    ):
        validate_finetune_config(config)
    config = tiny_finetune_config("unused", "unused", **{"train.epochs": 3, "finetune.head_only_epochs": 2})
    validate_finetune_config(config)
