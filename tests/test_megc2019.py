"""MEGC 2019 composite: the 3-class mapping, distinct subjects, the config and roots, per-database metrics."""

from __future__ import annotations

import collections
import json
import math
import os
import shutil

import pytest

from ma2mi_jax.data import protocols
from ma2mi_jax.data.readers import registry as readers
from ma2mi_jax.data.records import DataError
from ma2mi_jax.data.synthetic import generator
from ma2mi_jax.errors import ConfigError
from ma2mi_jax.evaluation import metrics, report
from tests.helpers.configs import REPO, config_file
from tests.helpers.scripts import run_script

SCALE = 0.1
# The releases' counts (docs/datasets.md) and the MEGC 2019 grouping, written out by hand.
RELEASE_COUNTS = {
    "casme2": dict(others=99, disgust=63, happiness=32, repression=27, surprise=25, sadness=7, fear=2),
    "samm": dict(Anger=57, Contempt=12, Happiness=26, Surprise=15, Other=26, Disgust=9, Fear=8, Sadness=6),
    "smic": dict(negative=70, positive=51, surprise=43),
}
EXPECTED_CLASS = {
    "repression": "negative", "anger": "negative", "contempt": "negative", "disgust": "negative",
    "fear": "negative", "sadness": "negative", "negative": "negative",
    "happiness": "positive", "positive": "positive", "surprise": "surprise",
}  # fmt: skip


@pytest.fixture(scope="module")
def composite(tmp_path_factory):
    """CASME2/, SAMM/, SMIC/ at 32 px and a tenth of each release."""
    root = str(tmp_path_factory.mktemp("megc") / "MEGC2019")
    specs = generator.generate_composite("megc2019", root, size=32, seed=0, clips_scale=SCALE,
                                         progress=False, preview=False)  # fmt: skip
    return root, specs


def _config(root: str, **data):
    config = config_file(os.path.join(REPO, "configs", "megc2019.py"), "tiny")
    with config.unlocked():
        config.data.root = root
        for key, value in data.items():
            config.data[key] = value
    return config


def test_config_reads_the_composite_with_the_megc_classes(composite):
    root, _ = composite
    config = _config(root)
    assert tuple(config.data.class_names) == ("negative", "positive", "surprise")
    samples, rep = readers.read_micro(config.data)
    expected = collections.Counter()
    for db, counts in RELEASE_COUNTS.items():
        for emotion, n in counts.items():
            cls = EXPECTED_CLASS.get(emotion.lower())
            if cls:
                expected[(db, cls)] += max(1, round(n * SCALE))
    got = collections.Counter((s.dataset, s.emotion) for s in samples)
    assert got == expected
    assert all(config.data.class_names[s.label] == s.emotion for s in samples)
    others = sum(max(1, round(counts.get(k, 0) * SCALE)) for counts in RELEASE_COUNTS.values()
                 for k in ("others", "Other") if k in counts)  # fmt: skip
    assert len(rep.dropped) == others
    assert all("not in the 3-class protocol" in reason for _, reason in rep.dropped)


def test_subjects_and_clips_stay_distinct_across_databases(composite):
    root, specs = composite
    samples, _ = readers.read_micro(_config(root).data)
    by_db = collections.defaultdict(set)
    for s in samples:
        by_db[s.dataset].add(s.subject)
        assert s.subject.startswith(f"{s.dataset}_") and "/" not in s.subject
        assert s.clip_id.startswith(f"{s.dataset}/")
    assert set(by_db) == {"casme2", "samm", "smic"}
    assert "smic_s1" in by_db["smic"] and any(x.startswith("samm_0") for x in by_db["samm"])
    assert len(set().union(*by_db.values())) == sum(len(v) for v in by_db.values())
    folds = protocols.make_folds(samples, "loso")
    assert sorted(f.name for f in folds) == sorted(set().union(*by_db.values()))
    assert len({s.clip_id for s in samples}) == len(samples)
    # the subjects the generator gave each database (SAMM 6 -> "006", SMIC 1 -> "s1")
    written = {f"smic_s{sp.subject}" for sp in specs["smic"]}
    assert by_db["smic"] == written


def test_roots_override_and_errors_name_the_key(composite, tmp_path):
    root, _ = composite
    elsewhere = str(tmp_path / "smic_elsewhere")
    shutil.copytree(os.path.join(root, "SMIC"), elsewhere)
    partial = str(tmp_path / "partial")
    os.makedirs(partial)
    for db in ("CASME2", "SAMM"):
        os.symlink(os.path.join(root, db), os.path.join(partial, db))
    with pytest.raises(DataError, match=r"megc2019: the smic folder not found: .*partial/SMIC .*data.root"):
        readers.read_micro(_config(partial).data)
    samples, _ = readers.read_micro(_config(partial, roots={"smic": elsewhere}).data)
    assert {s.dataset for s in samples} == {"casme2", "samm", "smic"}
    assert all(s.onset_path.startswith(elsewhere) for s in samples if s.dataset == "smic")
    with pytest.raises(DataError, match=r"data.roots.samm"):
        readers.read_micro(_config(root, roots={"samm": str(tmp_path / "nowhere")}).data)
    with pytest.raises(ConfigError, match=r"data.sheet"):
        readers.read_micro(_config(root, sheet="x.xlsx").data)


def test_per_dataset_figures_match_hand_computed_values():
    # A: truth 0 0 1 2, predictions 0 1 1 2 -> F1 2/3, 2/3, 1; recall 1/2, 1, 1
    # B: truth 0 1 1, predictions 0 0 1 -> F1 2/3, 2/3 (class 2 absent: skipped); recall 1, 1/2
    y_true = [0, 0, 1, 2, 0, 1, 1]
    y_pred = [0, 1, 1, 2, 0, 0, 1]
    ds = ["A", "A", "A", "A", "B", "B", "B"]
    per = metrics.per_dataset_metrics(y_true, y_pred, ds, 3)
    assert list(per) == ["A", "B"]
    assert (
        per["A"]["n"] == 4 and math.isclose(per["A"]["uf1"], 7 / 9) and math.isclose(per["A"]["uar"], 5 / 6)
    )
    assert (
        per["B"]["n"] == 3 and math.isclose(per["B"]["uf1"], 2 / 3) and math.isclose(per["B"]["uar"], 3 / 4)
    )
    pooled = metrics.summarize(y_true, y_pred, 3)  # F1 2/3, 2/3, 1; recall 2/3, 2/3, 1
    assert math.isclose(pooled["uf1"], 7 / 9) and math.isclose(pooled["uar"], 7 / 9)
    assert metrics.per_dataset_metrics(y_true, y_pred, ["A"] * 7, 3) == {}
    with pytest.raises(ValueError, match="length mismatch"):
        metrics.per_dataset_metrics(y_true, y_pred, ds[:-1], 3)
    lines = report.per_dataset_lines({"per_dataset": per})
    assert len(lines) == 2 and "UF1 0.7778" in lines[0] and "UAR 0.7500" in lines[1]


@pytest.mark.slow
def test_loso_script_runs_the_composite_end_to_end(composite, tmp_path):
    root, _ = composite
    workdir = tmp_path / "run"
    args = ["--config.init=scratch", "--config.train.epochs=1", "--workdir", str(workdir)]
    result = run_script(
        ["scripts/loso.py", "--config", "configs/megc2019.py:tiny", f"--config.data.root={root}", *args]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["dataset"] == "megc2019" and results["class_names"] == ["negative", "positive", "surprise"]
    per = results["per_dataset"]
    assert set(per) == {"casme2", "samm", "smic"}
    assert sum(p["n"] for p in per.values()) == results["n"]
    cm = [[sum(p["confusion_matrix"][i][j] for p in per.values()) for j in range(3)] for i in range(3)]
    assert cm == results["confusion_matrix"]
    folds = [f["name"] for f in results["protocol"]["folds"]]
    assert all(f.split("_")[0] in per for f in folds)
    for db in per:
        assert f"  {db}" in result.stdout and "UF1" in result.stdout
