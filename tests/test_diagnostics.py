"""Pre-training diagnostics on constructed cases: copy, constant condition, the held-out set."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ma2mi_jax.data.readers import registry as readers
from ma2mi_jax.data.records import DataError
from ma2mi_jax.train.pretrain import diagnostics
from ma2mi_jax.train.pretrain import state as state_lib
from ma2mi_jax.train.pretrain import step as pretrain_step
from tests.helpers.configs import tiny_pretrain_config
from tests.helpers.pretrain import make_dfew

B, SIZE = 4, 32


def _models(residual: bool):
    config = tiny_pretrain_config({"space": "pixel", "model.dit": "T/4", "model.dit_residual": residual})
    models = state_lib.build_models(config)
    params, stats = state_lib.init_variables(models, pretrain_step.init_key(0))
    return models, params, stats


def _batch(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    f0 = rng.integers(0, 256, (B, SIZE, SIZE, 3), dtype=np.uint8)
    f1 = np.clip(f0.astype(int) + rng.integers(-40, 40, f0.shape), 0, 255).astype(np.uint8)
    return {"frame0": f0, "frame1": f1, "label": np.zeros(B, np.int32)}


def _mean(per_sample: dict) -> dict:
    return {k: float(np.mean(v)) for k, v in jax.device_get(per_sample).items()}


def test_a_model_that_copies_its_input_scores_the_copy_baseline():
    models, params, stats = _models(residual=True)  # zero final layer + residual: prediction = z_t
    out = _mean(diagnostics.make_eval_fn(models)(params, stats, {}, _batch()))
    assert out["copy"] > 0.01
    assert out["rec"] == pytest.approx(out["copy"], rel=1e-6)
    assert out["shuffled_c"] == pytest.approx(out["copy"], rel=1e-6)
    assert out["static_c"] == pytest.approx(out["copy"], rel=1e-6)


def test_a_constant_condition_makes_shuffling_it_change_nothing():
    models, params, stats = _models(residual=False)
    rng = np.random.default_rng(1)
    # a DiT whose output depends on c, and a MIACNet that maps every pair to c = 0
    params = dict(params)
    params["dit"] = jax.tree_util.tree_map(lambda x: x + 0.05 * rng.standard_normal(x.shape), params["dit"])
    params["miacnet"] = jax.tree_util.tree_map(jnp.zeros_like, params["miacnet"])
    out = _mean(diagnostics.make_eval_fn(models)(params, stats, {}, _batch()))
    assert out["shuffled_c"] == pytest.approx(out["rec"], rel=1e-6)
    assert out["static_c"] == pytest.approx(out["rec"], rel=1e-6)
    assert abs(out["rec"] - out["copy"]) > 1e-3  # a real prediction, not the copy
    # with c varying across the batch, rolling it does change the prediction
    params["miacnet"] = jax.tree_util.tree_map(
        lambda x: x + 0.5 * rng.standard_normal(x.shape), params["miacnet"]
    )
    varied = _mean(diagnostics.make_eval_fn(models)(params, stats, {}, _batch()))
    assert varied["shuffled_c"] != pytest.approx(varied["rec"], rel=1e-4)


def _moved_batch() -> dict:
    """Smooth patterns (x_t) and the same moved by 1.5 px and 1 % brighter (x_{t+k}): head motion alone."""
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    f0, f1 = [], []
    for _ in range(B):
        freq, phase = rng.uniform(0.5, 1.5, 3), rng.uniform(0.0, 6.0, 3)
        for shift, out in ((0.0, f0), (1.5 / SIZE, f1)):
            img = [
                np.sin(6 * f * (xx - shift) + p) * np.cos(5 * f * yy)
                for f, p in zip(freq, phase, strict=True)
            ]
            out.append(np.clip((np.stack(img, -1) + 1.0) * 120.0 * (1.01 if shift else 1.0), 0, 255))
    return {"frame0": np.rint(f0).astype(np.uint8), "frame1": np.rint(f1).astype(np.uint8)}


def test_a_registered_target_leaves_head_motion_nothing_to_predict():
    """model.register_target: the DiT's input and target are the registered pair, so a pure movement
    makes the copy baseline a fraction of the unregistered one's (measured 0.0054 against 0.093)."""
    batch = _moved_batch()
    values = {"model.register_iterations": 8, "model.register_target": True}
    models = state_lib.build_models(tiny_pretrain_config({"space": "pixel", "model.dit": "T/4", **values}))
    params, stats = state_lib.init_variables(models, pretrain_step.init_key(0))
    out = _mean(diagnostics.make_eval_fn(models)(params, stats, {}, batch))
    frame0, frame1 = (pretrain_step.to_unit_range(batch[k]) for k in ("frame0", "frame1"))
    raw = float(np.mean(np.abs(np.asarray(frame1) - np.asarray(frame0))))  # the unregistered copy
    assert raw > 0.001 and out["copy"] < 0.2 * raw, (raw, out["copy"])


def test_a_registered_target_is_what_the_vae_encodes():
    """In latent space the DiT's (input, target) are the VAE's latents of MIACNet's registered pair."""
    from ma2mi_jax.models import vae as vae_lib

    batch = _moved_batch()
    values = {"model.register_iterations": 8, "model.register_target": True}
    config = tiny_pretrain_config({"space": "latent", **values})
    vae = vae_lib.vae_from_config(config.vae, SIZE, seed=0)
    models = state_lib.build_models(config, 0, vae)
    registered = (batch["frame0"], batch["frame0"][::-1])  # stands in for MIACNet's output
    z0, z1 = pretrain_step.targets(models, vae, vae.params, batch, {"registered": registered})
    np.testing.assert_array_equal(z0, vae.encode(vae.params, batch["frame0"]))
    np.testing.assert_array_equal(z1, vae.encode(vae.params, batch["frame0"][::-1]))
    unregistered = state_lib.build_models(tiny_pretrain_config({"space": "latent"}), 0, vae)
    _, z1_raw = pretrain_step.targets(unregistered, vae, vae.params, batch, {})
    np.testing.assert_array_equal(z1_raw, vae.encode(vae.params, batch["frame1"]))


def test_ratios_and_summary_line_say_what_was_measured():
    entry = {"step": 300, "rec": 0.03, "copy": 0.04, "shuffled_c": 0.039, "static_c": 0.036}
    r = diagnostics.ratios(entry)
    assert r["rec_over_copy"] == pytest.approx(0.75) and r["shuffled_over_rec"] == pytest.approx(1.3)
    line = diagnostics.summary_line({**entry, **r})
    assert "c lowers L_rec by 23.1 % against a shuffled c" in line
    assert "beats copying z_t by 25.0 %" in line
    worse = diagnostics.summary_line({**entry, "rec": 0.05, "shuffled_c": 0.05})
    assert "c makes no difference to L_rec against a shuffled c" in worse
    assert "the prediction is 25.0 % worse than copying z_t" in worse
    far_worse = diagnostics.summary_line({**entry, "rec": 0.574, "shuffled_c": 0.5})
    assert "c raises L_rec by 14.8 % against a shuffled c" in far_worse
    assert "the prediction's L_rec is 14.3 times that of copying z_t" in far_worse


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = make_dfew(str(tmp_path_factory.mktemp("dfew") / "DFEW"), clips_scale=0.05)
    return readers.read_macro({"name": "dfew", "root": root})[0]


def test_held_out_clips_are_fixed_by_the_seed_and_disjoint_from_training(clips):
    train, held = diagnostics.hold_out(clips, 4, 4, seed=0)
    again_train, again_held = diagnostics.hold_out(clips, 4, 4, seed=0)
    assert [c.clip_id for c in held] == [c.clip_id for c in again_held] and len(held) == 4
    assert {c.clip_id for c in train} == {c.clip_id for c in again_train}
    assert not {c.clip_id for c in train} & {c.clip_id for c in held}
    assert len(train) + len(held) == len(clips)
    other = diagnostics.hold_out(clips, 4, 4, seed=1)[1]
    assert [c.clip_id for c in other] != [c.clip_id for c in held]
    assert diagnostics.hold_out(clips, 0, 4, seed=0) == (list(clips), [])
    with pytest.raises(DataError, match=r"train.eval_clips=.* lower train.eval_clips"):
        diagnostics.hold_out(clips, len(clips) - 2, 4, seed=0)


def test_evaluation_pairs_are_the_same_every_time(clips):
    held = diagnostics.hold_out(clips, 3, 4, seed=0)[1]
    a = diagnostics.eval_pairs(held, 6, 4, SIZE, 1, 4, seed=0)
    b = diagnostics.eval_pairs(held, 6, 4, SIZE, 1, 4, seed=0)
    assert a["frame0"].shape == (8, SIZE, SIZE, 3)  # rounded up to whole batches
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert a["k"].min() >= 1 and a["k"].max() <= 4
    assert not np.array_equal(a["frame0"], a["frame1"])


def test_maer_reports_cross_entropy_and_accuracy_at_known_values():
    config = tiny_pretrain_config({"objective": "supervised"})
    models = state_lib.build_models(config, num_classes=7)
    params, stats = state_lib.init_variables(models, pretrain_step.init_key(0))  # zero head: uniform logits
    batch = {**_batch(), "label": np.array([0, 3, 0, 6], np.int32)}
    out = _mean(diagnostics.make_eval_fn(models)(params, stats, {}, batch))
    assert out["ce"] == pytest.approx(np.log(7.0), rel=1e-5)
    assert out["accuracy"] == pytest.approx(0.5)  # ties go to class 0: the two pairs labelled 0
    line = diagnostics.summary_line({"step": 4, **out})
    assert line.startswith("held-out macro pairs: accuracy 0.500")


def test_shuffling_the_condition_shuffles_the_map_it_keeps():
    config = tiny_pretrain_config({"space": "pixel", "model.dit": "T/4", "model.dit_condition_map": True})
    models = state_lib.build_models(config)
    params, stats = state_lib.init_variables(models, pretrain_step.init_key(0))
    rng = np.random.default_rng(3)
    noisy = lambda tree, s: jax.tree_util.tree_map(lambda x: x + s * rng.standard_normal(x.shape), tree)
    dit_params = noisy(dict(params["dit"]), 0.05)
    # the global c reaches no block (its MLP is zero), so only the map can tell pairs apart
    dit_params["c_embedder_2"] = jax.tree_util.tree_map(jnp.zeros_like, dit_params["c_embedder_2"])
    params = {"miacnet": noisy(params["miacnet"], 0.5), "dit": dit_params}
    out = _mean(diagnostics.make_eval_fn(models)(params, stats, {}, _batch()))
    assert out["shuffled_c"] != pytest.approx(out["rec"], rel=1e-4)
    assert out["static_c"] != pytest.approx(out["rec"], rel=1e-4)
    params["dit"]["map_embedder"] = jax.tree_util.tree_map(jnp.zeros_like, dit_params["map_embedder"])
    blind = _mean(diagnostics.make_eval_fn(models)(params, stats, {}, _batch()))
    assert blind["shuffled_c"] == pytest.approx(blind["rec"], rel=1e-6)
