"""Fine-tuning with L_rec kept as an auxiliary loss (finetune.aux_rec_weight > 0), at the tiny size.

A tiny pre-training workdir (MIACNet + a DiT whose weights are all moved off their initial values)
is written with the project's own checkpoint code; the fine-tuning run and the step-level checks
start from it.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ma2mi_jax import checkpoints, losses
from ma2mi_jax.errors import InitError
from ma2mi_jax.train import finetune, optim
from ma2mi_jax.train.finetune import aux_rec, fold_step, starting_point
from ma2mi_jax.train.pretrain import state as state_lib
from tests.helpers.configs import tiny_finetune_config, tiny_pretrain_config
from tests.helpers.finetune import fixed_data, fold_runner

AUX = 0.5  # finetune.aux_rec_weight of the runs


def _write_pretraining_workdir(workdir: str, overrides: dict, miacnet: dict) -> dict:
    """A tiny MA2MI pre-training workdir (checkpoints/4, config.json) with the given MIACNet variables.

    Its DiT has every weight off its initial value (zero-initialised layers included), as if trained.
    """
    config = tiny_pretrain_config({"data.root": "unused", **overrides})
    models = state_lib.build_models(config)  # latent grid from config.vae (no VAE needed here)
    z = jnp.zeros((1, models.grid, models.grid, models.channels), jnp.float32)  # [1,h,w,ch]
    c = jnp.zeros((1, models.miacnet.features), jnp.float32)  # [1,C]
    cmap = jnp.zeros((1, 1, 1, models.miacnet.features), jnp.float32)  # [1,h',w',C] (map condition)
    dit = jax.eval_shape(models.dit.init, jax.random.key(0), z, c, cmap)["params"]
    leaves, treedef = jax.tree.flatten(dit)
    rng = np.random.default_rng(7)
    dit = jax.tree.unflatten(treedef, [rng.normal(0, 0.05, x.shape).astype(np.float32) for x in leaves])
    params = {"miacnet": miacnet["params"]["miacnet"], "dit": dit}
    stats = {"miacnet": miacnet["batch_stats"]["miacnet"]}
    tx = state_lib.pretrain_optimizer(config, 4)
    state = state_lib.create_train_state(params, stats, tx)
    ckpts = checkpoints.Checkpoints(
        os.path.join(workdir, checkpoints.CHECKPOINT_DIR), keep=1, async_save=False
    )
    ckpts.save(4, state.as_dict(), **checkpoints.run_items({}, config))
    ckpts.close()
    checkpoints.save_config(workdir, config)
    return jax.tree.map(np.asarray, params)


@pytest.fixture(scope="module")
def classifier_variables(data_root, compile_cache):
    """The tiny classifier's random variables (the same compiled initialisation as the runs')."""
    config = tiny_finetune_config(data_root, "unused")
    return finetune.initial_variables(config, finetune.build_classifier(config))[0]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, classifier_variables):
    """(workdir, params) of a tiny latent-space MA2MI pre-training run."""
    workdir = str(tmp_path_factory.mktemp("pretrain"))
    return workdir, _write_pretraining_workdir(workdir, {}, classifier_variables)


@pytest.fixture(scope="module")
def aux_run(tmp_path_factory, data_root, pretrained):
    """One epoch of LOSO (the 4 folds in one group) with finetune.aux_rec_weight=AUX from the pre-training
    workdir."""
    workdir = tmp_path_factory.mktemp("aux_run")
    config = tiny_finetune_config(
        data_root,
        str(workdir),
        **{
            "init": pretrained[0],
            "finetune.aux_rec_weight": AUX,
            "train.epochs": 1,
            "finetune.folds_per_step": 4,
        },
    )
    return workdir, config, finetune.run_cross_validation(config, str(workdir))


def _changed(a, b) -> bool:
    return bool(np.any(np.asarray(a) != np.asarray(b)))


def test_run_trains_dit_per_fold_and_exports_classifier_only(aux_run, pretrained):
    workdir, _, _ = aux_run
    on_disk = json.loads((workdir / "results.json").read_text())
    assert on_disk["n"] == 20 and len(on_disk["per_fold"]) == 4
    assert "L_rec kept with weight 0.5" in on_disk["init"] and "DiT T/2" in on_disk["init"]
    train = json.loads((workdir / "folds" / "group_000.json").read_text())["train"][0]
    assert train["loss"] == pytest.approx(train["ce"] + AUX * train["rec"], rel=1e-5)
    assert 0 < train["rec"] < 10
    raw = checkpoints.restore_host(workdir / checkpoints.CHECKPOINT_DIR / "group_000", 1)
    dit_before = pretrained[1]["dit"]
    dit_after = raw["params"]["dit"]  # leaves [F,...]
    for f in range(4):
        moved = jax.tree.leaves(jax.tree.map(lambda a, b, f=f: _changed(a[f], b), dit_after, dit_before))
        assert all(moved), f"fold {f}: some DiT parameters did not change"
    # Folds saw different subjects, so their DiTs differ.
    blk = dit_after["final_layer"]["linear"]["kernel"]
    assert _changed(blk[0], blk[1])
    # The fold's exported variables are the classifier alone (no DiT).
    variables, _, _ = finetune.load_fold_variables(workdir, "sub02")
    assert set(variables["params"]) == {"miacnet", "head"}
    np.testing.assert_array_equal(
        variables["params"]["head"]["kernel"], raw["params"]["classifier"]["head"]["kernel"][1]
    )


def test_scratch_init_is_refused_naming_the_key(data_root, tmp_path):
    config = tiny_finetune_config(data_root, str(tmp_path), **{"finetune.aux_rec_weight": 1.0})
    with pytest.raises(ValueError, match=r"finetune\.aux_rec_weight.*config\.init"):
        finetune.run_cross_validation(config, str(tmp_path))
    assert not (tmp_path / "plan.json").exists()  # refused before anything was written


@pytest.fixture(scope="module")
def setup(aux_run):
    """Classifier, its variables, the auxiliary DiT/VAE and the optimiser of the run's config."""
    _, config, _ = aux_run
    model = finetune.build_classifier(config)
    variables, _ = finetune.initial_variables(config, model)
    aux = aux_rec.aux_reconstruction(config)
    # The run's optimiser (constant learning rate: the schedule's length does not enter the program)
    tx = optim.make_optimizer(config.train, 10)
    return model, variables, aux, tx, float(config.train.lr)


def _start(runner, variables, tx, num_folds, extra=None):
    """Every fold at step 0, in the runner's form."""
    single = fold_step.init_fold_state(variables, tx, extra)
    return runner.group_state(fold_step.broadcast_folds(single, num_folds))


def test_rec_is_l1_of_dit_on_vae_latents_and_dit_trains_per_fold(setup):
    """The run's vmapped step (same program): loss = CE + w * L1(DiT(VAE(onset), c), VAE(apex))."""
    model, variables, aux, tx, _ = setup
    data, fold_batch, batch = fixed_data(4)
    keys = jnp.stack([fold_step.fold_key(0, i) for i in range(4)])
    runner = fold_runner(model, tx, data, aux=aux, aux_weight=AUX)
    state = _start(runner, variables, tx, 4, {"dit": aux.dit_params})
    state, m = runner.train_step(state, fold_batch, keys)
    m = jax.tree.map(np.asarray, m)  # per fold [F]
    np.testing.assert_allclose(m["loss"], m["ce"] + AUX * m["rec"], rtol=1e-6)
    # The DiT moved, and differently per fold (different labels, so different gradients through c).
    kernel = np.asarray(state.params["dit"]["final_layer"]["linear"]["kernel"])  # [F,...]
    assert _changed(kernel[0], aux.dit_params["final_layer"]["linear"]["kernel"])
    assert _changed(kernel[0], kernel[1])

    # Fold 0's L_rec and CE recomputed here, with c of (onset, apex) from the classifier's MIACNet.
    first = jax.tree.map(lambda x: x[0], batch)

    @jax.jit
    def reference(vae_params):
        (logits, c), _ = model.apply(
            variables,
            first["frame0"],
            first["frame1"],
            train=True,
            return_features=True,
            mutable=["batch_stats"],
        )
        z0 = aux.vae.encode(vae_params, first["frame0"])  # [B,8,8,4]
        z1 = aux.vae.encode(vae_params, first["frame1"])
        pred = aux.dit.apply({"params": aux.dit_params}, z0, c)
        return jnp.mean(jnp.abs(pred - z1)), losses.cross_entropy(logits, first["label"])

    rec, ce = reference(aux.vae.params)
    assert aux.vae.latent_grid(32) == 8
    np.testing.assert_allclose(m["rec"][0], rec, rtol=1e-4)
    np.testing.assert_allclose(m["ce"][0], ce, rtol=1e-4)
    assert rec > 0.01


def test_zero_aux_weight_equals_plain_cross_entropy(setup):
    """aux_rec_weight=0 (one fold at a time) gives the plain CE step's numbers (vmapped over folds).

    The auxiliary term is computed and weighted by zero; the comparison also covers sequential
    mode with the frozen VAE inputs against the vmapped step.
    """
    model, variables, aux, tx, lr = setup
    data, fold_batch, _ = fixed_data(2, seed=5)
    keys = jnp.stack([fold_step.fold_key(0, i) for i in range(2)])
    with_aux = fold_runner(model, tx, data, aux=aux, aux_weight=0.0, sequential=True)
    plain = fold_runner(model, tx, data)
    s_aux = _start(with_aux, variables, tx, 2, {"dit": aux.dit_params})
    s_plain = _start(plain, variables, tx, 2)
    for _ in range(2):
        s_aux, m_aux = with_aux.train_step(s_aux, fold_batch, keys)
        s_plain, m_plain = plain.train_step(s_plain, fold_batch, keys)
        np.testing.assert_allclose(m_aux["loss"], m_plain["loss"], rtol=1e-5)
        np.testing.assert_allclose(m_aux["ce"], m_plain["loss"], rtol=1e-5)
        assert np.all(np.asarray(m_aux["rec"]) > 0)
    s_aux = with_aux.stacked(s_aux)  # one FoldState per fold -> stacked [F,...], as checkpointed
    p_aux, p_plain = s_aux.params["classifier"], s_plain.params["classifier"]
    # Adam moves a weight by about lr per step whatever its gradient's size, so a near-zero gradient
    # whose sign differs by rounding between two programs can differ by 2 lr per step ...
    atol = 2 * 2 * lr + 1e-6
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=atol), p_aux, p_plain)
    # ... and nearly every weight agrees to rounding.
    close = jax.tree.leaves(jax.tree.map(lambda a, b: np.mean(np.abs(a - b) <= 1e-5), p_aux, p_plain))
    assert min(close) > 0.9
    stats_close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    jax.tree.map(stats_close, s_aux.batch_stats, s_plain.batch_stats)
    # The heads moved from zero, so the agreement means something.
    assert np.abs(np.asarray(p_plain["head"]["kernel"])).max() > 1e-4


def test_pixel_space_pretraining_uses_pixels_and_checks_the_dit_variant(
    tmp_path, data_root, classifier_variables
):
    """space='pixel' pre-training: DiT on pixels in [-1,1], no VAE; a DiT variant mismatch names keys."""
    pre = str(tmp_path / "pixel_pretrain")
    params = _write_pretraining_workdir(pre, {"space": "pixel", "model.dit": "T/4"}, classifier_variables)
    overrides = {"init": pre, "finetune.aux_rec_weight": AUX}
    with pytest.raises(ValueError, match=r"model\.dit='T/4'.*space='pixel'"):
        config = tiny_finetune_config(data_root, "unused", **overrides)  # tiny: model.dit='T/2'
        aux_rec.aux_reconstruction(config)
    config = tiny_finetune_config(data_root, "unused", **overrides, **{"model.dit": "T/4"})
    aux = aux_rec.aux_reconstruction(config)
    assert aux.vae is None and aux.space == "pixel" and aux.frozen_inputs() == {}
    jax.tree.map(np.testing.assert_array_equal, aux.dit_params, params["dit"])
    batch = jax.tree.map(lambda x: x[0], fixed_data(1, seed=9)[2])
    c = jnp.asarray(np.random.default_rng(0).normal(size=(4, 64)), jnp.float32)  # [B,C]

    @jax.jit
    def both():
        got = aux.loss({"dit": aux.dit_params}, c, batch, jax.random.key(0), {})
        x0 = batch["frame0"].astype(jnp.float32) / 127.5 - 1.0
        x1 = batch["frame1"].astype(jnp.float32) / 127.5 - 1.0
        pred = aux.dit.apply({"params": aux.dit_params}, x0, c)  # [B,32,32,3]
        return got, jnp.mean(jnp.abs(pred - x1))

    got, want = both()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert want > 0.1


def test_a_dit_that_reads_the_fused_map_is_refused_naming_the_keys(tmp_path, data_root, classifier_variables):
    """Fine-tuning passes c only, so a DiT pre-trained with model.dit_condition_map cannot serve L_rec."""
    pre = str(tmp_path / "map_pretrain")
    _write_pretraining_workdir(pre, {"model.dit_condition_map": True}, classifier_variables)
    config = tiny_finetune_config(data_root, "unused", **{"init": pre, "finetune.aux_rec_weight": AUX})
    with pytest.raises(InitError, match=r"dit_condition_map=True.*finetune\.aux_rec_weight=0"):
        aux_rec.aux_reconstruction(config)


def test_init_line_says_when_pre_training_registered_its_pairs_otherwise(data_root, pretrained):
    """The pre-training run registered nothing (register_iterations 0): silent at 0, named at 8."""
    config = tiny_finetune_config(data_root, "unused", init=pretrained[0])
    assert starting_point.registration_note(config, pretrained[0]) == ""
    with config.unlocked():
        config.model.register_iterations = 8
    note = starting_point.registration_note(config, pretrained[0])
    assert "model.register_iterations=0" in note and "uses 8" in note


def test_fine_tuning_from_a_random_vae_pre_training_warns(tmp_path, pretrained, classifier_variables, caplog):
    """The tiny pre-training ran without vae.path (a random VAE): its workdir warns, one with a VAE not."""
    assert starting_point.warn_random_vae(pretrained[0])
    assert "RANDOMLY INITIALISED VAE" in caplog.text and pretrained[0] in caplog.text
    caplog.clear()
    with_vae = str(tmp_path / "with_vae")
    _write_pretraining_workdir(with_vae, {"vae.path": "third_party/sd-vae-ft-ema"}, classifier_variables)
    assert not starting_point.warn_random_vae(with_vae)
    pixel = str(tmp_path / "pixel")
    _write_pretraining_workdir(pixel, {"space": "pixel"}, classifier_variables)
    assert not starting_point.warn_random_vae(pixel)  # no VAE involved at all
    assert not starting_point.warn_random_vae(str(tmp_path))  # not a pre-training workdir
    assert "RANDOMLY INITIALISED VAE" not in caplog.text
