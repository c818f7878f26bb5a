"""Per-fold evaluation histories in, pooled metrics out: the last epoch (reported), the epoch chosen
on validation subjects (when held out) and the test-selected bound, each labelled; and the per-epoch
transfer table (held-out metrics, encoder weight distances from the start, the optional probe)."""

from __future__ import annotations

from collections.abc import Sequence

import ml_collections
import numpy as np

from ma2mi_jax import checkpoints
from ma2mi_jax.data.records import MicroSample
from ma2mi_jax.evaluation import metrics
from ma2mi_jax.train.finetune.plan import FoldSpec

BEST_EPOCH_LABEL = "best epoch per fold, selected on the test subject — optimistic, not a valid estimate"
VALIDATION_LABEL = "epoch per fold selected on held-out training subjects — a valid estimate"
TRANSFER_KEY = "transfer_per_epoch"
TRANSFER_LABEL = (
    "per evaluated epoch (0 = the start), pooled over folds: held-out accuracy and UF1 of the fine-tuned "
    "model, mean relative distance ||w - w0|| / ||w0|| of each encoder's weights from the start, and "
    "(finetune.probe_every) the held-out UF1 of a linear probe of the current encoder"
)
RETRAINED_LABEL = (
    "retrained on all training subjects for each fold's validation-selected epochs — a valid estimate"
)


def prediction_rows(samples: Sequence[MicroSample], fold: FoldSpec, probabilities: np.ndarray) -> list[dict]:
    """One row per held-out sample of `fold`: clip, subject, fold, label, prediction, probabilities."""
    rows = []
    for i, p in zip(fold.test_indices, probabilities, strict=True):
        s = samples[int(i)]
        rows.append(
            {
                "clip_id": s.clip_id,
                "subject": s.subject,
                "fold": fold.name,
                "label": s.label,
                "prediction": int(np.argmax(p)),
                "probabilities": p,
            }
        )
    return rows


def test_selected_bound(
    samples: Sequence[MicroSample], folds: Sequence[FoldSpec], histories: dict[str, dict], num_classes: int
) -> dict | None:
    """Metrics at each fold's best evaluated epoch, chosen on its test subject (None with one evaluation).

    This selects on the test data, so it is an optimistic bound, never the reported figure
    (docs/decisions.md#test-selected-best-epoch).
    """
    if not any(len(histories[f.name]["epochs"]) > 1 for f in folds):
        return None
    chosen, per_fold = [], []
    for f in folds:
        hist = histories[f.name]
        truth = np.asarray([samples[int(i)].label for i in f.test_indices])
        accs = [float((np.asarray(p) == truth).mean()) for p in hist["predictions"][f.name]]
        b = int(np.argmax(accs))
        chosen.append(b)
        per_fold.append({"fold": f.name, "epoch": hist["epochs"][b], "accuracy": accs[b]})
    return _labelled(BEST_EPOCH_LABEL, _pooled_at(samples, folds, histories, chosen, num_classes), per_fold)


def _labelled(label: str, pooled: dict, per_fold: list[dict] | None = None) -> dict:
    """A figure kept beside the last epoch's: its label, pooled accuracy, UF1 and UAR, its folds."""
    figure = {"label": label, **{k: pooled[k] for k in ("accuracy", "uf1", "uar")}}
    return figure if per_fold is None else {**figure, "per_fold": per_fold}


def _pooled_at(
    samples: Sequence[MicroSample],
    folds: Sequence[FoldSpec],
    histories: dict[str, dict],
    chosen: list[int],
    num_classes: int,
) -> dict:
    """Pooled accuracy, UF1 and UAR of each fold's test predictions at its chosen evaluation (index)."""
    y_true, y_pred = [], []
    for f, b in zip(folds, chosen, strict=True):
        y_true.extend(samples[int(i)].label for i in f.test_indices)
        y_pred.extend(histories[f.name]["predictions"][f.name][b])
    return metrics.summarize(np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64), num_classes)


def validation_choice(samples: Sequence[MicroSample], fold: FoldSpec, history: dict) -> tuple[int, float]:
    """(index into history["epochs"], validation accuracy) of the fold's best validation evaluation.

    Ties go to the later epoch (nearer the last-epoch default).
    """
    truth = np.asarray([samples[int(i)].label for i in fold.validation_indices])
    accs = [float((np.asarray(p) == truth).mean()) for p in history["validation_predictions"][fold.name]]
    b = len(accs) - 1 - int(np.argmax(accs[::-1]))  # the latest of the best
    return b, accs[b]


def retrained_figures(
    samples: Sequence[MicroSample], folds: Sequence[FoldSpec], retrained: dict[str, dict], num_classes: int
) -> dict:
    """Pooled test metrics of the folds retrained with their validation subjects (last epoch of each)."""
    pooled = _pooled_at(samples, folds, retrained, [-1] * len(folds), num_classes)
    epochs = {f.name: retrained[f.name]["epochs"][-1] for f in folds}
    return {**_labelled(RETRAINED_LABEL, pooled), "epochs": epochs}


def validation_selected(
    samples: Sequence[MicroSample], folds: Sequence[FoldSpec], histories: dict[str, dict], num_classes: int
) -> dict | None:
    """Metrics at each fold's epoch of best accuracy on its validation subjects (None without them).

    Ties go to the later epoch (nearer the last-epoch default). The test subjects play no part in
    the choice, so this is a valid estimate (docs/results.md#model-selection).
    """
    if not any(len(f.validation_indices) for f in folds):
        return None
    chosen, per_fold = [], []
    for f in folds:
        b, accuracy = validation_choice(samples, f, histories[f.name])
        chosen.append(b)
        per_fold.append(
            {
                "fold": f.name,
                "epoch": histories[f.name]["epochs"][b],
                "validation_subjects": list(f.validation_subjects),
                "validation_accuracy": accuracy,
                "n_validation": len(f.validation_indices),
            }
        )
    return _labelled(VALIDATION_LABEL, _pooled_at(samples, folds, histories, chosen, num_classes), per_fold)


def assemble_results(
    config: ml_collections.ConfigDict,
    samples: Sequence[MicroSample],
    fold_specs: Sequence[FoldSpec],
    histories: dict[str, dict],
    init_line: str,
    retrained: dict[str, dict] | None = None,
) -> tuple[dict, list[dict]]:
    """Pooled last-epoch metrics, per-fold figures, the test-selected bound, and prediction rows."""
    class_names = list(config.data.class_names)
    evaluated = [f for f in fold_specs if len(f.test_indices)]
    rows = [
        row
        for f in evaluated
        for row in prediction_rows(samples, f, np.asarray(histories[f.name]["probabilities"][f.name]))
    ]
    pooled, per_fold = metrics.pooled_and_per_fold(
        np.asarray([r["label"] for r in rows], np.int64),
        np.asarray([r["prediction"] for r in rows], np.int64),
        [r["fold"] for r in rows],
        [f.name for f in evaluated],
        len(class_names),
    )
    for entry, f in zip(per_fold, evaluated, strict=True):
        entry["test_subjects"] = list(f.test_subjects)
    cm = np.asarray(pooled["confusion_matrix"])
    results = {
        "dataset": config.data.name,
        "class_names": class_names,
        "protocol": {
            "name": config.protocol.name,
            "num_folds": len(evaluated),
            "folds": [{"name": f.name, "test_subjects": list(f.test_subjects)} for f in evaluated],
        },
        "reported_epoch": "last",
        "epochs": int(config.train.epochs),
        "n": pooled["n"],
        "accuracy": pooled["accuracy"],
        "uf1": pooled["uf1"],
        "uar": pooled["uar"],
        "confusion_matrix": pooled["confusion_matrix"],
        "per_class": {
            "f1": dict(zip(class_names, metrics.per_class_f1(cm).tolist(), strict=True)),
            "recall": dict(zip(class_names, metrics.per_class_recall(cm).tolist(), strict=True)),
            "support": dict(zip(class_names, cm.sum(axis=1).tolist(), strict=True)),
        },
        "per_fold": per_fold,
        "init": init_line,
    }
    results.update(_other_figures(samples, evaluated, histories, rows, len(class_names)))
    if retrained:
        results["validation_selected_retrained"] = retrained_figures(
            samples, evaluated, retrained, len(class_names)
        )
    results["config"] = checkpoints.config_to_dict(config)
    return results, rows


def _other_figures(
    samples: Sequence[MicroSample],
    evaluated: Sequence[FoldSpec],
    histories: dict[str, dict],
    rows: list[dict],
    num_classes: int,
) -> dict:
    """The figures beside the pooled last epoch, each only where it applies: per data set of a
    composite, validation-selected, test-selected."""
    figures = {}
    datasets = [samples[int(i)].dataset for f in evaluated for i in f.test_indices]  # the order of `rows`
    by_dataset = metrics.per_dataset_metrics(
        [r["label"] for r in rows], [r["prediction"] for r in rows], datasets, num_classes
    )
    if by_dataset:  # a composite such as megc2019: each database's own UF1/UAR beside the pooled ones
        figures["per_dataset"] = by_dataset
    selected = validation_selected(samples, evaluated, histories, num_classes)
    if selected is not None:
        figures["validation_selected"] = selected
    bound = test_selected_bound(samples, evaluated, histories, num_classes)
    if bound is not None:
        figures["best_epoch_per_fold_test_selected"] = bound
    table = transfer_table(samples, evaluated, histories, num_classes)
    if table is not None:
        figures[TRANSFER_KEY] = table
    return figures


def _row_predictions(history: dict, row: dict, fold: str) -> list | None:
    """A fold's held-out predictions at a transfer row's epoch: the start's at 0, else the evaluation's."""
    if "predictions" in row:
        return row["predictions"][fold]
    if row["epoch"] in history["epochs"]:
        return history["predictions"][fold][history["epochs"].index(row["epoch"])]
    return None


def transfer_table(
    samples: Sequence[MicroSample], folds: Sequence[FoldSpec], histories: dict[str, dict], num_classes: int
) -> dict | None:
    """The "transfer" rows of every fold's history pooled per epoch (None without them).

    Each row: epoch, accuracy and uf1 of the pooled held-out predictions (None where not evaluated),
    distance {encoder: mean over folds of ||w - w0|| / ||w0||}, and probe_uf1 / probe_accuracy
    where the probe ran. Only epochs that every fold recorded are pooled.
    """
    rows_of = {f.name: {r["epoch"]: r for r in histories[f.name].get("transfer", [])} for f in folds}
    if not folds or not all(rows_of.values()):
        return None
    epochs = sorted(set.intersection(*(set(r) for r in rows_of.values())))
    truth = np.asarray([samples[int(i)].label for f in folds for i in f.test_indices], np.int64)
    table = []
    for e in epochs:
        rows = [rows_of[f.name][e] for f in folds]
        row: dict = {"epoch": e}
        preds = [_row_predictions(histories[f.name], r, f.name) for f, r in zip(folds, rows, strict=True)]
        pooled = None
        if all(p is not None for p in preds):
            flat = np.asarray([x for p in preds for x in p], np.int64)  # the order of `truth`
            pooled = metrics.summarize(truth, flat, num_classes)
        row["accuracy"] = None if pooled is None else pooled["accuracy"]
        row["uf1"] = None if pooled is None else pooled["uf1"]
        encoders = sorted(rows[0]["distance"][folds[0].name])
        row["distance"] = {
            k: float(np.mean([r["distance"][f.name][k] for f, r in zip(folds, rows, strict=True)]))
            for k in encoders
        }
        if all("probe" in r for r in rows):
            probe = [x for f, r in zip(folds, rows, strict=True) for x in r["probe"][f.name]]
            scored = metrics.summarize(truth, np.asarray(probe, np.int64), num_classes)
            row["probe_accuracy"], row["probe_uf1"] = scored["accuracy"], scored["uf1"]
        table.append(row)
    return {"label": TRANSFER_LABEL, "rows": table}


def transfer_lines(table: dict) -> str:
    """The transfer table as console text: one line per epoch."""
    encoders = sorted({k for r in table["rows"] for k in r["distance"]})
    probe = any("probe_uf1" in r for r in table["rows"])

    def cell(value: float | None, fmt: str) -> str:
        return f"{'-':>8}" if value is None else format(value, fmt)

    head = f"{'epoch':>6} {'acc':>8} {'UF1':>8}" + "".join(f" {'d_' + k.split('_')[0]:>10}" for k in encoders)
    lines = [f"[{table['label']}]", head + (f" {'probe UF1':>10}" if probe else "")]
    for r in table["rows"]:
        line = f"{r['epoch']:>6} {cell(r['accuracy'], '8.4f')} {cell(r['uf1'], '8.4f')}"
        line += "".join(f" {r['distance'][k]:>10.4f}" for k in encoders)
        if probe:
            line += f" {cell(r.get('probe_uf1'), '10.4f')}"
        lines.append(line)
    return "\n".join(lines)
