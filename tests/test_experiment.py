"""The experiment's table logic: overrides, aggregation over seeds, the markdown table."""

import ml_collections
import numpy as np
import pytest

from ma2mi_jax import configlib, experiment


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


def test_aggregate_and_table():
    runs = {
        "latent": [{"accuracy": 0.5, "uf1": 0.4, "uar": 0.3}, {"accuracy": 0.7, "uf1": 0.6, "uar": 0.5}],
        "scratch": [{"accuracy": 0.4, "uf1": 0.2, "uar": 0.25}],
    }
    stats = experiment.aggregate(runs)
    assert stats["latent"]["accuracy"] == pytest.approx((0.6, 0.1))
    assert stats["latent"]["uf1"] == pytest.approx((0.5, np.std([0.4, 0.6])))
    assert stats["scratch"]["uar"] == pytest.approx((0.25, 0.0))
    rows = [r for r in experiment.ROWS if r.name in runs]
    table = experiment.markdown_table(rows, stats, runs)
    assert "| MA2MI, latent space | 60.00 ± 10.00 | 0.5000 ± 0.1000 | 0.4000 ± 0.1000 | 2 |" in table
    assert "| no pre-training (random init) | 40.00 ± 0.00 |" in table


def test_unknown_row_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown rows"):
        experiment.run(configlib.pretrain_base(), configlib.finetune_base(), str(tmp_path), [0], ["nope"])
