"""The experiment's table logic: overrides, aggregation over seeds, the markdown table."""

import ml_collections
import numpy as np
import pytest

from ma2mi_jax import configlib
from ma2mi_jax.workflows import experiment


def test_override_sets_nested_keys_and_leaves_the_original():
    base = configlib.pretrain_base()
    out = experiment.override(base, {"model.fusion": "none", "seed": 3, "position_loss.enabled": False})
    assert (out.model.fusion, out.seed, out.position_loss.enabled) == ("none", 3, False)
    assert (base.model.fusion, base.seed) == ("add", 0)
    with pytest.raises(KeyError, match=r"model\.fusoin"):
        experiment.override(base, {"model.fusoin": "none"})


def test_every_row_names_existing_keys():
    pre, ft = configlib.pretrain_base(), configlib.finetune_base()
    for row in experiment.ROWS:
        if row.pretrain is not None:
            assert isinstance(experiment.override(pre, row.pretrain), ml_collections.ConfigDict)
        experiment.override(ft, row.finetune)


def test_rows_that_share_a_pretraining_share_its_settings():
    """A row fine-tuning another row's pre-training (pretrained_as) asks for the same pre-training."""
    rows = {r.name: r for r in experiment.ROWS}
    shared = [r for r in experiment.ROWS if r.pretrained_as]
    assert {r.name for r in shared} >= {"latent_probe_head", "latent_bn", "latent_l2sp"}
    for row in shared:
        assert row.pretrain_row == row.pretrained_as != row.name
        assert rows[row.pretrained_as].pretrain == row.pretrain and not rows[row.pretrained_as].pretrained_as
    assert rows["latent"].pretrain_row == "latent"


def test_aggregate_and_table():
    runs = {
        "latent": [
            {"accuracy": 0.5, "uf1": 0.4, "uar": 0.3, "probe_uf1": 0.3},
            {"accuracy": 0.7, "uf1": 0.6, "uar": 0.5, "probe_uf1": 0.5},
        ],
        "scratch": [{"accuracy": 0.4, "uf1": 0.2, "uar": 0.25, "probe_uf1": 0.25}],
    }
    stats = experiment.aggregate(runs)
    assert stats["latent"]["accuracy"] == pytest.approx((0.6, 0.1))
    assert stats["latent"]["uf1"] == pytest.approx((0.5, np.std([0.4, 0.6])))
    assert stats["scratch"]["uar"] == pytest.approx((0.25, 0.0))
    rows = [r for r in experiment.ROWS if r.name in runs]
    table = experiment.markdown_table(rows, stats, runs)
    assert (
        "| MA2MI, latent space | 60.00 ± 10.00 | 0.5000 ± 0.1000 | 0.4000 ± 0.1000 | 0.4000 ± 0.1000 | 2 |"
        in table
    )
    # One seed: its figure alone, no "± 0" spread.
    assert "| no pre-training (random init) | 40.00 | 0.2000 | 0.2500 | 0.2500 | 1 |" in table


def test_unknown_row_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown rows"):
        experiment.run(
            configlib.autoencoder_base(),
            configlib.pretrain_base(),
            configlib.finetune_base(),
            str(tmp_path),
            [0],
            ["nope"],
        )


def test_paired_difference_and_its_interval():
    # differences 0.1, 0.2, 0.3: mean 0.2, sd 0.1, t(0.975, 2) = 4.3027
    d = experiment.paired_difference([0.5, 0.6, 0.7], [0.4, 0.4, 0.4])
    half = 4.302653 * 0.1 / np.sqrt(3)
    assert d["mean"] == pytest.approx(0.2) and d["n"] == 3
    assert (d["lo"], d["hi"]) == pytest.approx((0.2 - half, 0.2 + half), rel=1e-5)
    one = experiment.paired_difference([0.5], [0.4])
    assert one["mean"] == pytest.approx(0.1) and np.isnan(one["lo"])


def test_paired_table_lists_every_row_against_scratch():
    runs = {
        "scratch": [{"uf1": 0.3, "probe_uf1": 0.2}, {"uf1": 0.4, "probe_uf1": 0.25}],
        "latent": [{"uf1": 0.5, "probe_uf1": 0.4}, {"uf1": 0.45, "probe_uf1": 0.3}],
    }
    rows = [r for r in experiment.ROWS if r.name in runs]
    table = experiment.paired_table(rows, runs, [0, 1])
    line = next(ln for ln in table.splitlines() if ln.startswith("| MA2MI, latent space"))
    assert "+0.1250 [" in line and "+0.200, +0.050" in line
    assert experiment.paired_table(rows, {"latent": runs["latent"]}, [0, 1]) == ""
    assert experiment.paired_table(rows, {"scratch": runs["scratch"]}, [0, 1]) == ""  # nothing to pair
    assert "Against plain fine-tuning" not in table  # no row shares another's pre-training


def test_paired_table_puts_a_fine_tuning_switch_against_plain_fine_tuning():
    """A row that fine-tunes the latent row's pre-training otherwise is also paired with that row."""
    runs = {
        "scratch": [{"uf1": 0.3, "probe_uf1": 0.2}, {"uf1": 0.4, "probe_uf1": 0.25}],
        "latent": [{"uf1": 0.5, "probe_uf1": 0.4}, {"uf1": 0.45, "probe_uf1": 0.3}],
        "latent_freeze_bn": [{"uf1": 0.6, "probe_uf1": 0.4}, {"uf1": 0.5, "probe_uf1": 0.3}],
    }
    rows = [r for r in experiment.ROWS if r.name in runs]
    plain = experiment.paired_table(rows, runs, [0, 1]).split("Against plain fine-tuning")[1]
    line = next(ln for ln in plain.splitlines() if ln.startswith("| MA2MI latent, BatchNorm frozen"))
    assert "| +0.0750 [" in line and "| +0.100, +0.050 |" in line
    assert not any(ln.startswith("| MA2MI, latent space") for ln in plain.splitlines())


def test_selection_table_puts_the_three_epochs_side_by_side():
    results = {
        "validation_selected": {"uf1": 0.45},
        "best_epoch_per_fold_test_selected": {"uf1": 0.7},
    }
    want = {"uf1_validation_selected": 0.45, "uf1_test_selected": 0.7}
    assert experiment.selection_figures(results) == want
    assert experiment.selection_figures({"uf1": 0.5}) == {}
    runs = {
        "scratch": [
            {"uf1": 0.5, "uf1_validation_selected": 0.45, "uf1_test_selected": 0.7, "uf1_retrained": 0.5},
            {"uf1": 0.6, "uf1_validation_selected": 0.5, "uf1_test_selected": 0.7, "uf1_retrained": 0.6},
        ],
        "latent": [{"uf1": 0.6}, {"uf1": 0.6}],  # run without validation subjects: no line
    }
    rows = [r for r in experiment.ROWS if r.name in runs]
    table = experiment.selection_table(rows, runs)
    line, retrained = [ln for ln in table.splitlines() if ln.startswith("| no pre-training")]
    assert "retrained for the chosen epochs" in retrained and retrained.split("|")[3].strip() == "0.5500"
    cells = [c.strip() for c in line.split("|")[2:-1]]
    assert cells[:3] == ["0.5500", "0.4750", "0.7000"]
    # validation − last: −0.05, −0.10 -> mean −0.075; test − last: +0.2, +0.1 -> +0.15
    assert cells[3].startswith("-0.0750 [") and cells[4].startswith("+0.1500 [")
    assert cells[5].startswith("+0.2250 [")
    assert "MA2MI, latent" not in table
    assert experiment.selection_table(rows, {"latent": runs["latent"]}) == ""


def test_transfer_table_puts_rows_side_by_side_by_epoch():
    def table(uf1s, dist, probe=None):
        rows = []
        for e, (u, d) in enumerate(zip(uf1s, dist, strict=True)):
            row = {
                "epoch": e,
                "uf1": u,
                "accuracy": u,
                "distance": {"action_encoder": d, "position_encoder": d},
            }
            if probe is not None:
                row["probe_uf1"] = probe[e]
            rows.append(row)
        return {"label": "x", "rows": rows}

    transfer = {
        "scratch": [table([0.0, 0.2, 0.4], [0.0, 0.5, 0.7]), table([0.0, 0.4, 0.6], [0.0, 0.3, 0.5])],
        "latent": [table([0.1, 0.3, 0.5], [0.0, 0.1, 0.2], probe=[0.3, 0.35, 0.4]), None],
    }
    rows = [r for r in experiment.ROWS if r.name in transfer]
    text = experiment.transfer_table(rows, transfer)
    lines = text.splitlines()
    assert lines[2] == "| setting | epoch 0 | epoch 1 | epoch 2 |"
    assert (
        lines[4]
        == "| no pre-training (random init) (2 seeds) | 0.000, d 0.000 | 0.300, d 0.400 | 0.500, d 0.600 |"
    )
    assert lines[5].endswith("| 0.500, d 0.200, probe 0.400 |") and "(1 seeds)" in lines[5]
    assert experiment.transfer_table(rows, {"scratch": [None]}) == ""
