"""Model selection without leakage: validation subjects held out of each fold, and the three figures
(last epoch, validation-selected, test-selected) side by side."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ma2mi_jax.data.records import MicroSample
from ma2mi_jax.errors import ConfigError
from ma2mi_jax.evaluation import report
from ma2mi_jax.train import finetune
from ma2mi_jax.train.finetune import plan, results
from tests.helpers.configs import tiny_finetune_config


def _sample(i: int, subject: str, label: int) -> MicroSample:
    return MicroSample("casme2", f"{subject}/c{i}", subject, (1, 2), ("a", "b"), 1, 2, 2, "x", label)


def _constructed_run():
    """Two folds, 2 test + 2 validation samples each, 3 evaluations where the three rules disagree.

    Fold A: test [0, 1], validation [0, 0]; fold B: test [1, 1], validation [1, 0].
    """
    labels = [0, 1, 0, 0, 1, 1, 1, 0]
    subjects = ["a", "a", "v", "v", "b", "b", "w", "w"]
    samples = [_sample(i, s, y) for i, (s, y) in enumerate(zip(subjects, labels, strict=True))]
    folds = [
        plan.FoldSpec(0, "A", ("a",), np.arange(0), np.array([0, 1]), ("v",), np.array([2, 3])),
        plan.FoldSpec(1, "B", ("b",), np.arange(0), np.array([4, 5]), ("w",), np.array([6, 7])),
    ]
    history = {
        "epochs": [1, 2, 3],
        # test accuracy A: 1, .5, 0 -> best e1; B: 0, .5, .5 -> best e2 (the first of the tie)
        "predictions": {"A": [[0, 1], [0, 0], [1, 0]], "B": [[0, 0], [1, 0], [0, 1]]},
        # validation accuracy A: 0, 1, .5 -> e2; B: 1, .5, 1 -> e3 (the later of the tie)
        "validation_predictions": {"A": [[1, 1], [0, 0], [0, 1]], "B": [[1, 0], [1, 1], [1, 0]]},
        "probabilities": {"A": [[0.4, 0.6], [0.7, 0.3]], "B": [[0.6, 0.4], [0.2, 0.8]]},
    }
    return samples, folds, {"A": history, "B": history}


def test_three_figures_on_a_constructed_run(tmp_path):
    samples, folds, histories = _constructed_run()
    config = tiny_finetune_config(str(tmp_path), str(tmp_path), **{"data.class_names": ("neg", "pos")})
    out, rows = results.assemble_results(config, samples, folds, histories, "scratch")
    # Pooled truth [0, 1, 1, 1]. Last epoch: predictions [1, 0, 0, 1].
    assert out["accuracy"] == pytest.approx(0.25)
    assert out["uf1"] == pytest.approx((0 + 0.4) / 2) and out["uar"] == pytest.approx((0 + 1 / 3) / 2)
    assert [r["prediction"] for r in rows] == [1, 0, 0, 1]
    # Validation-selected: A at epoch 2, B at epoch 3 -> [0, 0, 0, 1].
    val = out["validation_selected"]
    assert [f["epoch"] for f in val["per_fold"]] == [2, 3]
    assert [f["validation_subjects"] for f in val["per_fold"]] == [["v"], ["w"]]
    assert val["accuracy"] == pytest.approx(0.5)
    assert val["uf1"] == pytest.approx((0.5 + 0.5) / 2) and val["uar"] == pytest.approx((1 + 1 / 3) / 2)
    assert "valid estimate" in val["label"]
    # Test-selected: A at epoch 1, B at epoch 2 -> [0, 1, 1, 0].
    best = out["best_epoch_per_fold_test_selected"]
    assert [f["epoch"] for f in best["per_fold"]] == [1, 2]
    assert best["accuracy"] == pytest.approx(0.75)
    assert best["uf1"] == pytest.approx((2 / 3 + 0.8) / 2) and best["uar"] == pytest.approx((1 + 2 / 3) / 2)
    table = report.console_table(out)
    assert "valid estimate" in table and "optimistic" in table
    # Without validation subjects there is no validation figure.
    plain = [plan.FoldSpec(f.index, f.name, f.test_subjects, f.train_indices, f.test_indices) for f in folds]
    assert "validation_selected" not in results.assemble_results(config, samples, plain, histories, "")[0]


def test_hold_out_validation_is_seeded_and_disjoint(data_root):
    config = tiny_finetune_config(data_root, "unused")
    samples, _ = finetune.read_data(config)
    specs = finetune.fold_specs_from_protocol(config, samples)
    held = plan.hold_out_validation(specs, samples, 2, seed=0)
    subjects = np.asarray([s.subject for s in samples])
    for before, after in zip(specs, held, strict=True):
        assert len(after.validation_subjects) == 2
        assert not set(after.validation_subjects) & set(after.test_subjects)
        assert set(subjects[after.validation_indices]) == set(after.validation_subjects)
        assert not set(subjects[after.train_indices]) & set(after.validation_subjects)
        merged = np.sort(np.concatenate([after.train_indices, after.validation_indices]))
        np.testing.assert_array_equal(merged, before.train_indices)
    again = plan.hold_out_validation(specs, samples, 2, seed=0)
    assert [f.validation_subjects for f in again] == [f.validation_subjects for f in held]
    draws = {f.validation_subjects for s in range(6) for f in plan.hold_out_validation(specs, samples, 1, s)}
    assert len(draws) > 1  # the seed moves the choice
    assert plan.hold_out_validation(specs, samples, 0, seed=0) == specs
    with pytest.raises(ConfigError, match=r"finetune.validation_subjects=3 leaves fold sub01"):
        plan.hold_out_validation(specs, samples, 3, seed=0)


def test_run_with_validation_subjects(data_root, tmp_path, capsys):
    """A real run: validation subjects out of training, evaluated each epoch, figure in results.json."""
    overrides = {
        "train.epochs": 3,
        "train.log_every": 1,
        "finetune.validation_subjects": 1,
        "finetune.retrain_selected": True,
    }
    config = tiny_finetune_config(data_root, str(tmp_path), **overrides)
    out = finetune.run_cross_validation(config, str(tmp_path))
    saved = json.loads((tmp_path / "plan.json").read_text())
    assert saved["validation_subjects"] == 1
    folds = saved["groups"][0]["folds"]
    assert all(len(f["validation_subjects"]) == 1 for f in folds)
    assert all(f["validation_subjects"] != f["test_subjects"] for f in folds)
    assert all(f["num_train"] + f["num_validation"] + f["num_test"] == 20 for f in folds)
    history = json.loads((tmp_path / "folds" / "group_000.json").read_text())
    assert all(len(v) == 3 for v in history["validation_predictions"].values())
    val = out["validation_selected"]
    assert [f["fold"] for f in val["per_fold"]] == ["sub01", "sub02", "sub03", "sub04"]
    assert all(f["epoch"] in (1, 2, 3) and f["n_validation"] == 5 for f in val["per_fold"])
    assert json.loads((tmp_path / "results.json").read_text())["validation_selected"] == val
    # Retrained: each fold once more, validation subject included, for the epochs it chose.
    chosen = {f["fold"]: f["epoch"] for f in val["per_fold"]}
    for epochs in set(chosen.values()):
        group = json.loads((tmp_path / "folds" / f"retrain_e{epochs:03d}.json").read_text())
        assert group["epochs"][-1] == epochs
        assert set(group["predictions"]) == {k for k, e in chosen.items() if e == epochs}
    again = out["validation_selected_retrained"]
    assert again["epochs"] == chosen and "retrained" in again["label"]
    printed = capsys.readouterr().out
    assert val["label"] in printed and again["label"] in printed
    with pytest.raises(ConfigError, match=r"retrain_selected=True needs finetune\.validation_subjects > 0"):
        finetune.run_cross_validation(
            tiny_finetune_config(data_root, str(tmp_path / "bad"), **{"finetune.retrain_selected": True}),
            str(tmp_path / "bad"),
        )
    with pytest.raises(ConfigError, match=r"finetune\.validation_subjects must be >= 0"):
        finetune.run_cross_validation(
            tiny_finetune_config(data_root, str(tmp_path / "bad"), **{"finetune.validation_subjects": -1}),
            str(tmp_path / "bad"),
        )
