"""Export -> load -> predict reproduces the cross-validation predictions; Grad-CAM; scripts; bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from ma2mi_jax.serving import classifier, gradcam, model_card
from ma2mi_jax.train import finetune
from tests.helpers.configs import tiny_finetune_config
from tests.helpers.finetune import write_casme2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = {"train.epochs": 1, "finetune.folds_per_step": 1, "finetune.final_model": True}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, compile_cache):
    """A finished LOSO run (4 folds, one at a time) plus the model trained on every subject."""
    root = write_casme2(str(tmp_path_factory.mktemp("casme2")))
    workdir = tmp_path_factory.mktemp("run")
    config = tiny_finetune_config(root, str(workdir), **RUN)
    finetune.run_cross_validation(config, str(workdir))
    return root, workdir, config


def _fold_probabilities(workdir, fold):
    """Last-epoch probabilities of a fold's held-out samples, as the run stored them."""
    for name in os.listdir(workdir / "folds"):
        probs = json.loads((workdir / "folds" / name).read_text())["probabilities"]
        if fold in probs:
            return np.asarray(probs[fold])
    raise KeyError(fold)


def _assert_the_card_describes_the_run(clf, workdir, config):
    """MODEL_CARD.md: the fold, the classes in label order, the run's figures, each fold's split."""
    results = json.loads((workdir / "results.json").read_text())
    card = clf.card
    assert card.startswith("# MA2MI micro-expression classifier: casme2, fold sub02")
    assert "protocol leave-one-subject-out; this model's held-out subjects: sub02." in card
    classes = ", ".join(f"{i} {name}" for i, name in enumerate(config.data.class_names))
    assert f"Classes in label order: {classes}." in card
    assert f"Selection: the last epoch ({config.train.epochs}) of every fold; pooled over 4 folds" in card
    assert f"UF1 {results['uf1']:.3f}, UAR {results['uar']:.3f}" in card
    assert ("best_epoch_per_fold_test_selected" in results) == ("optimistic" in card)
    sub02 = next(f for f in results["per_fold"] if f["fold"] == "sub02")
    assert f"| sub02 | sub02 | 15 | 5 | {100 * sub02['accuracy']:.1f} % |" in card
    assert f"- seed {config.seed}," in card and str(workdir.absolute()) in card
    assert model_card.preview(card) == card.splitlines()[:4]


def test_the_card_labels_the_test_selected_figure_and_reads_without_a_run():
    meta = {
        "fold": "sub01",
        "class_names": ["negative", "positive"],
        "test_subjects": ["sub01"],
        "config": {"data": {"name": "samm"}, "protocol": {"name": "kfold", "num_folds": 5}, "seed": 3},
    }
    results = {"epochs": 80, "n": 10, "accuracy": 0.5, "uf1": 0.4, "uar": 0.45, "per_fold": [{}, {}],
               "best_epoch_per_fold_test_selected": {"label": finetune.BEST_EPOCH_LABEL, "accuracy": 0.7,
                                                     "uf1": 0.6, "uar": 0.65}}  # fmt: skip
    card = model_card.render(meta, "classifier.json", results)
    assert "protocol 5-fold subject-independent" in card and "0 negative, 1 positive" in card
    selection = "Selection: the last epoch (80) of every fold; pooled over 2 folds, 10 samples: accuracy 50.0"
    bound = "Best epoch per fold, selected on the test subject — optimistic, not a valid estimate: accuracy"
    assert selection in card and bound in card and "accuracy 70.0 %, UF1 0.600, UAR 0.650" in card
    bare = model_card.render(meta, "classifier.json")
    assert "Selection: the last epoch of training (no cross-validation results" in bare and "seed 3" in bare


def test_export_load_predict_reproduces_training_predictions(trained, tmp_path):
    _, workdir, config = trained
    (path,) = finetune.export_from_workdir(workdir, tmp_path / "sub02", fold="sub02")
    clf = classifier.load_classifier(path)
    assert clf.class_names == tuple(config.data.class_names) and clf.image_size == 32
    assert clf.meta["test_subjects"] == ["sub02"] and clf.meta["model"]["resnet_width"] == 8
    samples, _ = finetune.read_data(config)
    held_out = [s for s in samples if s.subject == "sub02"]
    expected = _fold_probabilities(workdir, "sub02")
    assert len(held_out) == len(expected) == 5
    for s, p in zip(held_out, expected, strict=True):
        got = clf.predict_pair(s.onset_path, s.apex_path)
        np.testing.assert_allclose(got["probabilities"], p, atol=1e-5)
        assert (
            got["class_index"] == int(np.argmax(p))
            and got["class_name"] == clf.class_names[int(np.argmax(p))]
        )
    _assert_the_card_describes_the_run(clf, workdir, config)
    s = held_out[0]
    np.testing.assert_allclose(
        clf.predict_clip(os.path.dirname(s.onset_path), s.onset, s.apex)["probabilities"],
        expected[0],
        atol=1e-5,
    )
    # The folds' models differ: another fold's export predicts other probabilities for the same pair.
    (other,) = finetune.export_from_workdir(workdir, tmp_path / "sub03", fold="sub03")
    q = classifier.load_classifier(other).predict_pair(s.onset_path, s.apex_path)["probabilities"]
    assert np.abs(q - expected[0]).max() > 1e-6


def test_export_every_fold_and_the_final_model(trained, tmp_path):
    _, workdir, _ = trained
    paths = finetune.export_from_workdir(workdir, tmp_path / "all_folds")
    assert sorted(p.name for p in paths) == ["all", "sub01", "sub02", "sub03", "sub04"]
    final = classifier.load_classifier(tmp_path / "all_folds" / "all")
    assert final.meta["fold"] == "all" and final.meta["test_subjects"] == []
    frame = np.full((48, 40, 3), 100, np.uint8)
    out = final.predict_pair(frame, frame + 20)
    assert out["probabilities"].shape == (5,) and abs(float(out["probabilities"].sum()) - 1) < 1e-5
    # No temporary folders left beside the exports.
    assert sorted(os.listdir(tmp_path / "all_folds")) == ["all", "sub01", "sub02", "sub03", "sub04"]


def test_export_refuses_to_overwrite_and_unknown_fold(trained, tmp_path):
    _, workdir, _ = trained
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        finetune.export_from_workdir(workdir, out, fold="sub01")
    assert os.listdir(out) == ["keep.txt"]
    with pytest.raises(ValueError, match=r"no fold named 'sub09'.*sub01, sub02"):
        finetune.export_from_workdir(workdir, tmp_path / "x", fold="sub09")
    assert not (tmp_path / "x").exists()


def test_load_rejects_non_exports_and_mismatching_architecture(trained, tmp_path):
    _, workdir, _ = trained
    with pytest.raises(FileNotFoundError, match="not an exported classifier"):
        classifier.load_classifier(tmp_path)
    (path,) = finetune.export_from_workdir(workdir, tmp_path / "e", fold="sub01")
    meta = json.loads((path / "classifier.json").read_text())
    meta["model"]["resnet_width"] = 16
    (path / "classifier.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"(?s)mismatching key.*model \(16,\), checkpoint \(8,\)"):
        classifier.load_classifier(path)


def test_fine_tuning_can_start_from_an_export(trained, tmp_path):
    root, workdir, config = trained
    (path,) = finetune.export_from_workdir(workdir, tmp_path / "e", fold="all")
    config = tiny_finetune_config(root, str(tmp_path / "w"), **RUN)
    config.init = str(path)
    model = finetune.build_classifier(config)
    variables, line = finetune.initial_variables(config, model)
    assert "exported classifier" in line
    exported = classifier.load_exported_variables(path)
    jax.tree.map(np.testing.assert_array_equal, variables["params"]["miacnet"], exported["params"]["miacnet"])
    assert not np.asarray(variables["params"]["head"]["kernel"]).any()  # head starts at zero


def test_gradcam_heat_map(trained, tmp_path):
    _, workdir, config = trained
    (path,) = finetune.export_from_workdir(workdir, tmp_path / "e", fold="sub01")
    clf = classifier.load_classifier(path)
    samples, _ = finetune.read_data(config)
    s = samples[0]
    heat, k = gradcam.gradcam(clf, s.onset_path, s.apex_path)
    assert heat.shape == (32, 32) and heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    assert k == clf.predict_pair(s.onset_path, s.apex_path)["class_index"]
    out = gradcam.save_gradcam(clf, s.onset_path, s.apex_path, tmp_path / "cam.png")
    assert (tmp_path / "cam.png").read_bytes()[:4] == b"\x89PNG" and out["class_index"] == k
    with pytest.raises(ValueError, match="png"):
        gradcam.save_gradcam(clf, s.onset_path, s.apex_path, tmp_path / "cam.jpg")


def test_scripts_export_and_predict(trained, tmp_path, compile_cache):
    _, workdir, config = trained
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": compile_cache}
    exp = subprocess.run(
        [sys.executable, "scripts/export.py", f"--workdir={workdir}", "--fold=sub04",
         f"--out={tmp_path / 'm'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert exp.returncode == 0, exp.stderr[-2000:]
    assert "could not be restored" not in exp.stderr  # no Orbax warnings on a normal export
    samples, _ = finetune.read_data(config)
    s = next(s for s in samples if s.subject == "sub04")
    clip = os.path.dirname(s.onset_path)
    pred = subprocess.run(
        [sys.executable, "scripts/predict.py", f"--model={tmp_path / 'm'}", f"--clip={clip}",
         f"--onset_frame={s.onset}", f"--apex_frame={s.apex}", f"--gradcam={tmp_path / 'heat.png'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert pred.returncode == 0, pred.stderr[-2000:]
    card = (tmp_path / "m" / model_card.CARD_FILE).read_text()
    assert pred.stdout.startswith("\n".join(model_card.preview(card)) + "\n")  # predict shows the card first
    expected = _fold_probabilities(workdir, "sub04")[0]
    assert f"prediction: {config.data.class_names[int(np.argmax(expected))]}" in pred.stdout
    assert f"{config.data.class_names[0]:<12} {expected[0]:.4f}" in pred.stdout
    assert (tmp_path / "heat.png").exists()
    bad = subprocess.run(
        [sys.executable, "scripts/predict.py", f"--model={tmp_path / 'm'}", f"--clip={clip}",
         f"--onset_frame={s.onset}", "--apex_frame=9999"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2 and f"error: {clip}: no frame 9999 for the apex" in bad.stderr
