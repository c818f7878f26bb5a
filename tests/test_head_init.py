"""finetune.head_init="probe": the fitted logistic regression as a Dense head, per fold, in the state."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from ma2mi_jax.train import finetune, optim
from ma2mi_jax.train.finetune import fold_step, head_init
from ma2mi_jax.train.finetune.group_build import GroupTrainer
from tests.helpers.configs import tiny_finetune_config
from tests.helpers.finetune import fixed_data, fold_runner


def _fit(x, y):
    mu, sd = x.mean(0), x.std(0) + 1e-6
    fit = LogisticRegression(max_iter=2000, class_weight="balanced").fit((x - mu) / sd, y)
    return fit, mu, sd


@pytest.mark.parametrize("classes", [5, 2])
def test_dense_head_gives_the_fitted_logits_on_raw_features(classes):
    """kernel/bias on raw c reproduce scikit-learn's decision on standardised c (binary: as 2 logits)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, classes, 300)
    x = rng.normal(3.0, 4.0, (300, 8)) + 2.0 * np.eye(8)[y % 8]  # offset and scaled, as c is
    fit, mu, sd = _fit(x, y)
    head = head_init.dense_from_logistic(fit.coef_, fit.intercept_, fit.classes_, mu, sd, classes)
    assert head["kernel"].shape == (8, classes) and head["bias"].shape == (classes,)
    logits = x @ head["kernel"].astype(np.float64) + head["bias"]
    decision = fit.decision_function((x - mu) / sd)
    if classes == 2:
        np.testing.assert_allclose(logits[:, 1] - logits[:, 0], decision, rtol=1e-4, atol=1e-4)
    else:
        np.testing.assert_allclose(logits, decision, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(logits.argmax(-1), fit.predict((x - mu) / sd))


def test_a_class_missing_from_training_gets_zero_weights_and_the_lowest_bias():
    rng = np.random.default_rng(1)
    y = rng.choice([0, 1, 3], 200)  # class 2 of 4 never seen
    x = rng.normal(size=(200, 5)) + np.eye(5)[y]
    fit, mu, sd = _fit(x, y)
    head = head_init.dense_from_logistic(fit.coef_, fit.intercept_, fit.classes_, mu, sd, 4)
    np.testing.assert_array_equal(head["kernel"][:, 2], 0.0)
    assert head["bias"][2] == head["bias"][[0, 1, 3]].min()


def test_every_fold_starts_at_its_own_probe(compile_cache):
    """probe_heads fits each fold on its training pairs; initial_state puts fold f's head in fold f."""
    config = tiny_finetune_config("unused", "unused", **{"finetune.head_init": "probe"})
    model = finetune.build_classifier(config)
    data, _, _ = fixed_data(2, batch=8, seed=0)
    variables, _ = finetune.initial_variables(config, model)
    frames = np.asarray(data["frames"])
    pairs = np.stack([frames[..., :3], frames[..., 3:]], axis=1)
    train = [np.arange(0, 8), np.arange(8, 16)]
    heads = head_init.probe_heads(config, variables, pairs, np.asarray(data["labels"]), train)
    width = variables["params"]["head"]["kernel"].shape
    assert heads["kernel"].shape == (2, *width) and heads["bias"].shape == (2, width[1])
    assert np.all(np.isfinite(heads["kernel"])) and np.abs(heads["kernel"][0] - heads["kernel"][1]).max() > 0
    # a padding fold (the same training pairs as fold 0) gets fold 0's head
    padded = head_init.probe_heads(config, variables, pairs, np.asarray(data["labels"]), [*train, train[0]])
    for k in ("kernel", "bias"):
        np.testing.assert_array_equal(padded[k][:2], heads[k])
        np.testing.assert_array_equal(padded[k][2], heads[k][0])
    tx = optim.make_optimizer(config.train, 10)
    runner = fold_runner(model, tx, data)
    fresh = fold_step.init_fold_state(variables, tx)
    trainer = GroupTrainer(
        group=None, real=[], padded=[None, None], runner=runner, tx=tx, batches=None, keys=None,
        fresh=fresh, labels=np.asarray(data["labels"]), eval_batch_size=8, fit_heads=lambda: heads,
    )  # fmt: skip
    state = runner.stacked(trainer.initial_state())
    np.testing.assert_array_equal(state.params["classifier"]["head"]["kernel"], heads["kernel"])
    np.testing.assert_array_equal(state.params["classifier"]["head"]["bias"], heads["bias"])
    # everything else is the shared init, in both folds
    enc = state.params["classifier"]["miacnet"]["action_encoder"]["conv1"]["kernel"]
    np.testing.assert_array_equal(enc[0], enc[1])


def test_a_resumed_group_restores_its_heads_without_fitting_them_again(tmp_path, compile_cache):
    """A fresh start fits the probe heads once; resuming from a checkpoint restores them, no new fit."""
    from ma2mi_jax.train.finetune import group_loop, plan, workdir_files

    config = tiny_finetune_config("unused", "unused")
    model = finetune.build_classifier(config)
    data, _, _ = fixed_data(2, batch=8, seed=0)
    variables, _ = finetune.initial_variables(config, model)
    tx = optim.make_optimizer(config.train, 10)
    runner = fold_runner(model, tx, data)
    width = variables["params"]["head"]["kernel"].shape  # [D,N]
    fitted = {
        "kernel": np.full((2, *width), 0.25, np.float32),  # [F,D,N]
        "bias": np.full((2, width[1]), -1.0, np.float32),  # [F,N]
    }
    fits = []
    trainer = GroupTrainer(
        group=plan.Group("group_000", (), 1), real=[], padded=[None, None], runner=runner, tx=tx,
        batches=None, keys=None, fresh=fold_step.init_fold_state(variables, tx),
        labels=np.asarray(data["labels"]), eval_batch_size=8, fit_heads=lambda: fits.append(1) or fitted,
    )  # fmt: skip
    ckpt = workdir_files.group_checkpoints(tmp_path, "group_000", keep=2)
    state, history, _, start = group_loop._resume(trainer, ckpt)
    assert start == 0 and len(fits) == 1
    ckpt.save(1, runner.stacked(state), meta={"epoch": 1, "history": history})
    ckpt.close()
    ckpt = workdir_files.group_checkpoints(tmp_path, "group_000", keep=2)
    state, _, _, start = group_loop._resume(trainer, ckpt)
    ckpt.close()
    assert start == 1 and len(fits) == 1
    head = runner.stacked(state).params["classifier"]["head"]
    np.testing.assert_array_equal(head["kernel"], fitted["kernel"])
    np.testing.assert_array_equal(head["bias"], fitted["bias"])


def test_unknown_head_init_names_its_key():
    from ma2mi_jax.errors import ConfigError
    from ma2mi_jax.train.finetune.checks import validate_finetune_config

    with pytest.raises(ConfigError, match=r"finetune\.head_init must be one of \['zero', 'probe'\]"):
        validate_finetune_config(tiny_finetune_config("unused", "unused", **{"finetune.head_init": "lp"}))
