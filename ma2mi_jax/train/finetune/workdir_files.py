"""A cross-validation workdir on disk, and reading a finished run back (fold weights, export).

plan.json                  what must not change between a run and its resumption (`plan`)
config.json                the run's config
checkpoints/<group>/<ep>/  fold-stacked state + JSON meta (epoch, evaluation history)
folds/<group>.json         a finished group's history
results.json, predictions.csv, confusion_matrix.png, tb/
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import ml_collections
import numpy as np

from ma2mi_jax import checkpoints
from ma2mi_jax.errors import NotFoundError, WorkdirError
from ma2mi_jax.evaluation import report
from ma2mi_jax.serving import classifier
from ma2mi_jax.train.finetune.fold_step import take_fold

PLAN_JSON = "plan.json"
FINAL_FOLD = "all"  # name of the model trained on every subject (finetune.final_model)
FOLDS_DIR = "folds"
GROUP_CHECKPOINT_ITEMS = ("meta",)  # JSON items of a group checkpoint beside its state


def plan_path(workdir: str | os.PathLike) -> Path:
    """workdir/plan.json."""
    return Path(workdir) / PLAN_JSON


def finished_group_path(workdir: str | os.PathLike, group: str) -> Path:
    """workdir/folds/<group>.json, written when the group's training has finished."""
    return Path(workdir) / FOLDS_DIR / f"{group}.json"


def group_checkpoints(
    workdir: str | os.PathLike, group: str, keep: int, async_save: bool = False
) -> checkpoints.Checkpoints:
    """The Orbax manager of one group's checkpoints (step = epoch)."""
    return checkpoints.Checkpoints(
        Path(workdir) / checkpoints.CHECKPOINT_DIR / group,
        keep=keep,
        json_items=GROUP_CHECKPOINT_ITEMS,
        async_save=async_save,
    )


def _read_plan(workdir: Path) -> dict:
    path = plan_path(workdir)
    if not path.exists() or not (workdir / checkpoints.CONFIG_FILE).exists():
        raise NotFoundError(
            f"{workdir} is not a cross-validation workdir (no {checkpoints.CONFIG_FILE} / {PLAN_JSON}); "
            "give the --workdir of a scripts/loso.py run"
        )
    return json.loads(path.read_text())


def trained_fold_names(workdir: str | os.PathLike) -> list[str]:
    """Names of the folds of a workdir whose training has finished."""
    workdir = Path(workdir)
    plan = _read_plan(workdir)
    return [
        f["name"]
        for g in plan["groups"]
        if finished_group_path(workdir, g["name"]).exists()
        for f in g["folds"]
    ]


def load_fold_variables(
    workdir: str | os.PathLike, fold: str
) -> tuple[dict, ml_collections.ConfigDict, tuple[str, ...]]:
    """One fold's classifier {"params","batch_stats"} at its last epoch, the run's config, its test subjects.

    Reads the group checkpoint on the host (numpy), whatever mesh or fold mode the run used.
    """
    workdir = Path(workdir)
    plan = _read_plan(workdir)
    config = ml_collections.ConfigDict(json.loads((workdir / checkpoints.CONFIG_FILE).read_text()))
    names = [f["name"] for g in plan["groups"] for f in g["folds"]]
    group = next((g for g in plan["groups"] if fold in [f["name"] for f in g["folds"]]), None)
    if group is None:
        hint = " (train it with --config.finetune.final_model=True)" if fold == FINAL_FOLD else ""
        raise WorkdirError(f"no fold named {fold!r} in {workdir}{hint}; folds: {', '.join(names)}")
    if not finished_group_path(workdir, group["name"]).exists():
        raise NotFoundError(
            f"fold {fold} ({group['name']}) has not finished training in {workdir}; resume the run first"
        )
    directory = Path(workdir) / checkpoints.CHECKPOINT_DIR / group["name"]
    raw = checkpoints.restore_host(directory, int(config.train.epochs))
    i = [f["name"] for f in group["folds"]].index(fold)
    out = {
        "params": take_fold(raw["params"]["classifier"], i),
        "batch_stats": take_fold(raw["batch_stats"], i),
    }
    return jax.tree.map(np.asarray, out), config, tuple(group["folds"][i]["test_subjects"])


def export_from_workdir(
    workdir: str | os.PathLike, out: str | os.PathLike, fold: str | None = None, overwrite: bool = False
) -> list[Path]:
    """Export one fold (`fold`, "all" for the model trained on every subject) or every fold to out/<fold>."""
    if fold is not None:
        targets = [(fold, Path(out))]
    else:
        targets = [(name, Path(out) / name) for name in trained_fold_names(workdir)]
    results_path = Path(workdir) / report.RESULTS_JSON
    results = json.loads(results_path.read_text()) if results_path.is_file() else None
    written = []
    for name, path in targets:
        variables, config, test_subjects = load_fold_variables(workdir, name)
        written.append(
            classifier.export_classifier(
                path,
                variables,
                config,
                fold=name,
                test_subjects=test_subjects,
                source=str(Path(workdir).absolute()),
                overwrite=overwrite,
                run_results=results,
                run_plan=_read_plan(Path(workdir)),
            )
        )
    return written
