"""Linear probe: the classifier on toy features, exact BatchNorm re-estimation, a run on a tiny set."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ma2mi_jax.evaluation import probe, probe_fit
from ma2mi_jax.models import miacnet as miacnet_lib
from tests.helpers.configs import tiny_finetune_config

K = 5


def _folds(groups: np.ndarray) -> list:
    return [(np.flatnonzero(groups != g), np.flatnonzero(groups == g)) for g in np.unique(groups)]


def test_probe_separates_linearly_separable_features():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(K), 40)
    centres = rng.normal(0, 4, (K, 16))
    x = centres[labels] + rng.normal(0, 1, (len(labels), 16))
    groups = np.tile(np.arange(10), 20)  # 10 "subjects", every class in each
    out = probe_fit.linear_probe(x, labels, _folds(groups), K)
    assert out["uf1"] > 0.9 and out["uar"] > 0.9 and out["n"] == len(labels)


def test_probe_on_random_features_stays_near_chance():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(K), 40)
    x = rng.normal(0, 1, (len(labels), 16))
    out = probe_fit.linear_probe(x, labels, _folds(np.tile(np.arange(10), 20)), K)
    assert out["uf1"] < 0.35  # chance is 0.2


def test_probe_needs_every_sample_in_a_test_fold():
    x, labels = np.zeros((4, 2)), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="in no fold's test set"):
        probe_fit.linear_probe(x, labels, [(np.array([0, 1]), np.array([2]))], 2)


@pytest.fixture(scope="module")
def miacnet_and_pairs():
    module = miacnet_lib.MIACNet(width=8, fusion="add", stop_position_grad=False)
    rng = np.random.default_rng(2)
    pairs = rng.integers(0, 256, (12, 2, 32, 32, 3), dtype=np.uint8)
    variables = jax.jit(lambda k: module.init(k, pairs[:1, 0], pairs[:1, 1], train=False))(jax.random.key(0))
    return module, dict(variables), pairs


def test_batch_statistics_are_the_exact_statistics_of_the_set(miacnet_and_pairs):
    module, variables, pairs = miacnet_and_pairs
    stats = probe_fit.precise_batch_stats(module, variables, pairs, chunk=len(pairs))
    # eval mode with the re-estimated statistics = train mode (batch statistics) on the whole set
    evaluated = module.apply(
        {"params": variables["params"], "batch_stats": stats}, pairs[:, 0], pairs[:, 1], train=False
    )["c"]
    trained, _ = module.apply(variables, pairs[:, 0], pairs[:, 1], train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(evaluated, trained["c"], rtol=1e-4, atol=1e-4)
    # in chunks, the first BatchNorm (after the first convolution) still gets the set's exact moments
    chunked = probe_fit.precise_batch_stats(module, variables, pairs, chunk=5)
    for branch in ("action_encoder", "position_encoder"):
        for moment in ("mean", "var"):
            np.testing.assert_allclose(
                chunked[branch]["bn1"][moment], stats[branch]["bn1"][moment], rtol=1e-4, atol=1e-6
            )


def test_features_are_c_c_with_the_pooled_action_map_or_the_map(miacnet_and_pairs):
    module, variables, pairs = miacnet_and_pairs
    c = probe_fit.extract_features(module, variables, pairs, "c", chunk=5)
    both = probe_fit.extract_features(module, variables, pairs, "c+action", chunk=5)
    fused = probe_fit.extract_features(module, variables, pairs, "map", chunk=5)
    out = module.apply(variables, jnp.asarray(pairs[:, 0]), jnp.asarray(pairs[:, 1]), train=False)
    h, w = out["map"].shape[1:3]
    assert c.shape == (12, 64) and both.shape == (12, 128) and fused.shape == (12, h * w * 64)
    np.testing.assert_allclose(c, out["c"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(both[:, 64:], out["action"].mean((1, 2)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fused.reshape(out["map"].shape).mean((1, 2)), out["c"], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"probe\.features"):
        probe_fit.extract_features(module, variables, pairs, "pixels", chunk=5)


def test_probe_run_writes_probe_json_with_seeds(data_root, tmp_path, compile_cache):
    config = tiny_finetune_config(data_root, str(tmp_path / "unused"))  # LOSO over 4 subjects, scratch
    out = probe.run_probe(config, str(tmp_path / "probe"), seeds=[0, 1])
    with open(tmp_path / "probe" / probe.FILENAME) as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(out))
    assert {"uf1", "uar", "accuracy", "per_seed", "init"} <= set(saved)
    assert saved["init"] == "scratch" and [r["seed"] for r in saved["per_seed"]] == [0, 1]
    assert saved["num_folds"] == 4 and saved["num_samples"] == 20
    assert saved["uf1"] == pytest.approx(np.mean([r["uf1"] for r in saved["per_seed"]]))
    assert (
        "UF1" in probe.summary(saved) and os.path.basename(probe.output_dir(config, False)) == "probe_scratch"
    )


def test_probe_output_is_config_workdir_when_given_else_beside_the_init(data_root, tmp_path):
    config = tiny_finetune_config(data_root, str(tmp_path / "given"))
    assert probe.output_dir(config, workdir_given=True) == str(tmp_path / "given")
    with config.unlocked():
        config.init = str(tmp_path / "pretrain")
    assert probe.output_dir(config, workdir_given=False) == str(tmp_path / "pretrain" / "probe")
    with config.unlocked():
        config.init = "imagenet:/weights/resnet18.pth"
    assert probe.output_dir(config, workdir_given=False) == os.path.join("workdirs", "probe_imagenet")
