"""The fine-tuning switches for a domain gap (bn_reestimate, encoder_lr_scale / encoder_warmup_epochs,
l2sp_weight, freeze_bn) and the per-epoch transfer instrument, each against a hand computation."""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ma2mi_jax import losses
from ma2mi_jax.errors import ConfigError, WorkdirError
from ma2mi_jax.evaluation import probe_fit
from ma2mi_jax.train import finetune, optim
from ma2mi_jax.train.finetune import fold_step, group_build, plan, results, starting_point
from ma2mi_jax.train.finetune.checks import validate_finetune_config
from tests.helpers.configs import tiny_finetune_config
from tests.helpers.finetune import fixed_data, fold_runner

ENCODERS = ("action_encoder", "position_encoder")


def _pairs(data: dict, indices: np.ndarray) -> np.ndarray:
    frames = np.asarray(data["frames"])[indices]  # [n,H,W,6]
    return np.stack([frames[..., :3], frames[..., 3:]], axis=1)  # [n,2,H,W,3]


def _first_bn_input(model, variables: dict, pairs: np.ndarray) -> np.ndarray:
    """The input [n,h,w,C] of the action encoder's first BatchNorm (conv1's output, in no statistic)."""
    seen = []

    def capture(next_fun, args, kwargs, context):
        mod = context.module
        if isinstance(mod, nn.BatchNorm) and mod.path[-2:] == ("action_encoder", "bn1"):
            seen.append(np.asarray(args[0], np.float64))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(capture):
        model.apply(variables, pairs[:, 0], pairs[:, 1], train=False)
    assert len(seen) == 1
    return seen[0]


def test_bn_reestimate_starts_each_fold_at_its_training_pairs_statistics(compile_cache):
    """Before step 0 each fold's BatchNorm statistics are those of its own training pairs: the probe's
    re-estimation on them, and for the first BatchNorm the mean and variance of its input by hand."""
    config = tiny_finetune_config("unused", "unused", **{"finetune.bn_reestimate": True})
    model = finetune.build_classifier(config)
    data, _, _ = fixed_data(2, batch=8, seed=0)
    variables, _ = finetune.initial_variables(config, model)
    folds = (
        plan.FoldSpec(0, "a", ("a",), np.arange(0, 10), np.arange(10, 16)),
        plan.FoldSpec(1, "b", ("b",), np.arange(6, 16), np.arange(0, 6)),
    )
    trainer = group_build.build_group(
        plan.Group("group_000", folds, 2), config=config, model=model, variables=variables, data=data
    )
    state = trainer.runner.stacked(trainer.initial_state())
    module = probe_fit.frozen_miacnet(config)
    miac = {"params": variables["params"]["miacnet"], "batch_stats": variables["batch_stats"]["miacnet"]}
    for i, f in enumerate(folds):
        pairs = _pairs(data, f.train_indices)
        expected = probe_fit.precise_batch_stats(module, miac, pairs, int(config.probe.bn_batch))
        got = fold_step.take_fold(state.batch_stats["miacnet"], i)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), got, expected)
        x = _first_bn_input(model, variables, pairs)  # [n,h,w,C]
        bn = got["action_encoder"]["bn1"]
        np.testing.assert_allclose(bn["mean"], x.mean((0, 1, 2)), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(bn["var"], x.var((0, 1, 2)), rtol=1e-3, atol=1e-5)
        # the macro statistics (here the init's mean 0) are replaced
        assert (
            np.abs(
                np.asarray(bn["mean"]) - variables["batch_stats"]["miacnet"]["action_encoder"]["bn1"]["mean"]
            ).max()
            > 1e-3
        )
    # the two folds' training pairs differ, so do their statistics; off: the init's, untouched
    a = state.batch_stats["miacnet"]["action_encoder"]["bn1"]["mean"]
    assert np.abs(np.asarray(a[0]) - np.asarray(a[1])).max() > 0
    config.finetune.bn_reestimate = False
    plain = group_build.build_group(
        plan.Group("group_000", folds, 2), config=config, model=model, variables=variables, data=data
    )
    assert plain.fit_batch_stats is None
    off = plain.runner.stacked(plain.initial_state())
    jax.tree.map(
        lambda a, b: np.testing.assert_array_equal(a[0], b), off.batch_stats, variables["batch_stats"]
    )  # fmt: skip


def _fake_params() -> dict:
    rng = np.random.default_rng(0)
    leaf = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
    return {
        "classifier": {
            "miacnet": {"action_encoder": {"w": leaf(3, 4)}, "position_encoder": {"w": leaf(5)}},
            "head": {"kernel": leaf(4, 2), "bias": leaf(2)},
        }
    }


def _updates(tx, params, grads_per_step):
    state, out = tx.init(params), []
    for g in grads_per_step:
        u, state = tx.update(g, state, params)
        out.append(u)
    return out


def test_encoder_lr_scale_and_warmup_scale_only_the_encoders_updates():
    """AdamW's encoder updates times scale (x the warm-up ramp after the hold); the head's unchanged."""
    config = tiny_finetune_config("unused", "unused", **{"train.weight_decay": 0.05, "train.grad_clip": 0.0})
    params = _fake_params()
    rng = np.random.default_rng(1)
    grads = [
        jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params) for _ in range(7)
    ]
    plain = _updates(optim.make_optimizer(config.train, 20), params, grads)

    def scaled(scale, hold, warmup):
        tx = optim.make_optimizer(
            config.train, 20, held=fold_step.encoder_path, hold_steps=hold,
            held_scale=optim.scaled_warmup(scale, hold, warmup),
        )  # fmt: skip
        return _updates(tx, params, grads)

    assert optim.scaled_warmup(1.0, 0, 0) is None  # the defaults leave the optimiser as it was
    factors = {
        (0.0, 0, 0): [0.0] * 7,
        (0.5, 0, 0): [0.5] * 7,
        (0.5, 2, 4): [0, 0, 0.125, 0.25, 0.375, 0.5, 0.5],
        (1.0, 0, 3): [1 / 3, 2 / 3, 1, 1, 1, 1, 1],
    }
    for (scale, hold, warmup), expected in factors.items():
        for step, (got, ref) in enumerate(zip(scaled(scale, hold, warmup), plain, strict=True)):
            g, r = got["classifier"], ref["classifier"]
            for name in ENCODERS:
                np.testing.assert_allclose(
                    g["miacnet"][name]["w"], expected[step] * r["miacnet"][name]["w"], rtol=1e-6
                )
            jax.tree.map(np.testing.assert_array_equal, g["head"], r["head"])
            assert np.abs(np.asarray(r["miacnet"]["action_encoder"]["w"])).max() > 0


def test_l2sp_penalty_gradient_goes_to_the_encoders_only(compile_cache):
    """Objective with alpha minus without: value alpha/2 ||w - w0||^2, gradient alpha (w - w0) on the
    encoders' parameters and zero on the head."""
    alpha = 0.3
    config = tiny_finetune_config("unused", "unused")
    model = finetune.build_classifier(config)
    variables, _ = finetune.initial_variables(config, model)
    _, _, frames = fixed_data(1, batch=4, seed=0)
    batch = {k: v[0] for k, v in frames.items()}
    start = fold_step.encoder_params(variables["params"])
    rng = np.random.default_rng(2)
    params = {
        "classifier": jax.tree.map(
            lambda p: p + 0.01 * rng.normal(size=p.shape).astype(np.float32), variables["params"]
        )
    }
    key = jax.random.key(0)

    def value_and_grad(weight):
        objective = fold_step.make_objective(model, losses.cross_entropy, l2sp_weight=weight)
        frozen = {"aux": None, "l2sp_start": start} if weight > 0 else None
        fn = jax.jit(
            jax.value_and_grad(
                lambda p: objective(p, variables["batch_stats"], batch, key, frozen), has_aux=True
            )
        )
        (total, (_, _, parts)), grads = fn(params)
        return total, parts, grads

    t0, _, g0 = value_and_grad(0.0)
    t1, parts, g1 = value_and_grad(alpha)
    sq = sum(
        float(jnp.sum((w - w0) ** 2))
        for name in start
        for w, w0 in zip(
            jax.tree.leaves(params["classifier"]["miacnet"][name]), jax.tree.leaves(start[name]), strict=True
        )
    )
    assert float(parts["l2sp"]) == pytest.approx(sq, rel=1e-5)
    assert float(t1 - t0) == pytest.approx(alpha / 2 * sq, rel=1e-4)
    diff = jax.tree.map(lambda a, b: np.asarray(a, np.float64) - np.asarray(b, np.float64), g1, g0)[
        "classifier"
    ]
    for name in start:
        expected = jax.tree.map(
            lambda w, w0: alpha * (np.asarray(w, np.float64) - np.asarray(w0)),
            params["classifier"]["miacnet"][name],
            start[name],
        )
        jax.tree.map(
            lambda d, e: np.testing.assert_allclose(d, e, rtol=1e-3, atol=1e-6),
            diff["miacnet"][name],
            expected,
        )
    jax.tree.map(lambda d: np.testing.assert_allclose(d, 0.0, atol=1e-7), diff["head"])


def test_encoder_distances_of_a_group_equal_a_hand_computation_in_both_modes():
    """The runner reads every fold's ||w - w0|| / ||w0|| in one call, vmapped or sequential: fold f
    moved by f * 0.01 * noise has the distance computed by hand in float64 (fold 0: exactly 0)."""
    config = tiny_finetune_config("unused", "unused")
    model = finetune.build_classifier(config)
    variables, _ = finetune.initial_variables(config, model)
    data, _, _ = fixed_data(3, batch=4, seed=0)
    tx = optim.make_optimizer(config.train, 10)
    start = fold_step.encoder_params(variables["params"])
    rng = np.random.default_rng(4)
    noise = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), variables["params"])
    moved = [jax.tree.map(lambda p, n, f=f: p + f * 0.01 * n, variables["params"], noise) for f in range(3)]
    states = [fold_step.init_fold_state({**variables, "params": p}, tx) for p in moved]

    def by_hand(params: dict, name: str) -> float:
        now = jax.tree.leaves(fold_step.encoder_params(params)[name])
        then = jax.tree.leaves(start[name])
        diff = sum(
            np.sum((np.asarray(a, np.float64) - np.asarray(b)) ** 2) for a, b in zip(now, then, strict=True)
        )
        return float(np.sqrt(diff / sum(np.sum(np.asarray(b, np.float64) ** 2) for b in then)))

    for sequential in (False, True):
        runner = fold_runner(model, tx, data, sequential=sequential)
        got = runner.encoder_distances(runner.group_state(fold_step.stack_folds(states)), start)
        assert set(got) == set(ENCODERS)
        for name in ENCODERS:
            assert got[name].shape == (3,)
            assert got[name][0] == 0.0
            expected = [by_hand(p, name) for p in moved]
            np.testing.assert_allclose(got[name], expected, rtol=1e-5)
            assert got[name][2] == pytest.approx(2 * got[name][1], rel=1e-4)


def test_freeze_bn_keeps_the_encoders_statistics_while_their_weights_train(compile_cache):
    """The default, from a pre-trained start: two steps of the run's own fold step (build_group) leave
    both encoders' running statistics as they were while kernels, scales and biases train."""
    config = tiny_finetune_config("unused", "unused")
    assert config.finetune.freeze_bn  # the default
    assert set(fold_step.inference_bn_modules(config.finetune, pretrained=True)) == set(ENCODERS)
    assert fold_step.inference_bn_modules(config.finetune, pretrained=False) == ()  # nothing to keep
    assert "a random start has no statistics to keep" in starting_point.batchnorm_line(config)
    config.init = "workdirs/pretrain"
    assert starting_point.batchnorm_line(config).startswith("frozen at the start's running statistics")
    config.finetune.freeze_bn = False
    assert fold_step.inference_bn_modules(config.finetune, pretrained=True) == ()  # the paper's
    assert "the paper's plain fine-tuning" in starting_point.batchnorm_line(config)
    config.finetune.freeze_bn = True  # and config.init names a pre-training: its variables come below
    model = finetune.build_classifier(config)
    data, batch, _ = fixed_data(2, seed=0)
    variables, _ = finetune.initial_variables(tiny_finetune_config("unused", "unused"), model)  # random
    # Running statistics that differ from any batch's, yet leave the ReLUs alive (a large mean shift
    # would silence the tiny encoders and with them every gradient).
    shifted = jax.tree_util.tree_map_with_path(
        lambda path, v: v * 1.5 if "var" in jax.tree_util.keystr(path) else v + 0.01, variables["batch_stats"]
    )
    variables = {"params": variables["params"], "batch_stats": shifted}
    folds = (
        plan.FoldSpec(0, "a", ("a",), np.arange(0, 4), np.arange(4, 8)),
        plan.FoldSpec(1, "b", ("b",), np.arange(4, 8), np.arange(0, 4)),
    )
    trainer = group_build.build_group(
        plan.Group("group_000", folds, 1), config=config, model=model, variables=variables, data=data
    )
    state = trainer.initial_state()
    for _ in range(2):
        state, _ = trainer.runner.train_step(state, batch, trainer.keys)
    after = trainer.runner.stacked(state)
    for name in ENCODERS:
        jax.tree.map(
            lambda a, b: np.testing.assert_array_equal(a[0], b),
            after.batch_stats["miacnet"][name],
            variables["batch_stats"]["miacnet"][name],
        )
        start = dict(jax.tree_util.tree_flatten_with_path(variables["params"]["miacnet"][name])[0])
        now = jax.tree_util.tree_flatten_with_path(after.params["classifier"]["miacnet"][name])[0]
        moved = {
            jax.tree_util.keystr(path)
            for path, a in now
            if np.abs(np.asarray(a[0]) - np.asarray(start[path])).max() > 0
        }
        # the weights train, BatchNorm scale and bias included
        assert any("kernel" in k for k in moved) and any("scale" in k for k in moved)
        assert any("bias" in k for k in moved)


def test_bad_values_name_their_keys():
    bad = {
        "finetune.encoder_lr_scale": 0.0,
        "finetune.encoder_warmup_epochs": 2,  # of 2 epochs (below)
        "finetune.l2sp_weight": -1.0,
        "finetune.probe_every": -2,
    }
    for key, value in bad.items():
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            validate_finetune_config(
                tiny_finetune_config("unused", "unused", **{"train.epochs": 2, key: value})
            )
    validate_finetune_config(
        tiny_finetune_config("unused", "unused", **{"train.epochs": 3, "finetune.encoder_warmup_epochs": 2})
    )


def test_transfer_table_and_remedies_in_one_run(data_root, tmp_path, compile_cache, capsys):
    """Every switch on: the run completes; results.json's table has epochs 0..2, distances 0 at the start
    and > 0 after training, the probe's UF1 at each, and the held-out figures of the evaluations."""
    overrides = {
        "train.epochs": 2,
        "train.log_every": 1,
        "finetune.bn_reestimate": True,
        "finetune.encoder_lr_scale": 0.5,
        "finetune.encoder_warmup_epochs": 1,
        "finetune.l2sp_weight": 0.01,
        "finetune.freeze_bn": True,  # a random start keeps none: tested from a pre-trained one above
        "finetune.probe_every": 1,
        "finetune.folds_per_step": 4,
    }
    config = tiny_finetune_config(data_root, str(tmp_path), **overrides)
    out = finetune.run_cross_validation(config, str(tmp_path))
    table = json.loads((tmp_path / "results.json").read_text())[results.TRANSFER_KEY]
    assert table == out[results.TRANSFER_KEY]
    rows = table["rows"]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert set(rows[0]["distance"]) == set(ENCODERS)
    assert all(v == 0.0 for v in rows[0]["distance"].values())
    assert all(v > 0 for v in rows[-1]["distance"].values())
    assert all(0 <= r["probe_uf1"] <= 1 and 0 <= r["uf1"] <= 1 for r in rows)
    assert rows[-1]["accuracy"] == pytest.approx(out["accuracy"]) and rows[-1]["uf1"] == pytest.approx(
        out["uf1"]
    )
    hist = json.loads((tmp_path / "folds" / "group_000.json").read_text())
    assert hist["train"][0]["l2sp"] > 0  # w moved from w_start within epoch 1
    printed = capsys.readouterr().out
    assert "probe UF1" in printed and "d_action" in printed


def test_a_resume_with_another_way_of_training_the_encoders_is_refused(tmp_path):
    """The plan names each switch that changes the paper's fine-tuning (freeze_bn only where it
    applies: a pre-trained start); resuming with another setting is refused naming it."""
    groups = [plan.Group("group_000", (plan.FoldSpec(0, "a", ("a",), np.arange(2), np.arange(2, 4)),), 1)]

    def plan_of(**overrides):
        config = tiny_finetune_config("unused", "unused", **overrides)
        return plan.plan_dict(config, groups, [])

    assert "freeze_bn" not in plan_of()  # a random start keeps no statistics
    assert plan_of(init="workdirs/pretrain")["freeze_bn"] is True
    assert "freeze_bn" not in plan_of(init="workdirs/pretrain", **{"finetune.freeze_bn": False})
    assert plan_of(**{"finetune.l2sp_weight": 0.01})["l2sp_weight"] == 0.01
    assert not set(plan_of(**{"finetune.freeze_bn": False})) & {"bn_reestimate", "l2sp_weight", "freeze_bn"}
    plan.check_or_write_plan(tmp_path, plan_of(init="workdirs/pretrain", **{"finetune.freeze_bn": False}))
    with pytest.raises(WorkdirError, match=r"different plan \(freeze_bn differ"):
        plan.check_or_write_plan(tmp_path, plan_of(init="workdirs/pretrain"))
