"""What a cross-validation run leaves beside results.json: predictions CSV, confusion matrix, console table.

Every file is written to a temporary name beside its target and renamed into place, so a crash never
leaves a half-written report.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ma2mi_jax import files

RESULTS_JSON = "results.json"
PREDICTIONS_CSV = "predictions.csv"
CONFUSION_PNG = "confusion_matrix.png"


def write_predictions_csv(path: str | os.PathLike, rows: Sequence[dict], class_names: Sequence[str]) -> Path:
    """One row per held-out sample: clip, subject, fold, true/predicted class and class probabilities.

    Each row dict holds clip_id, subject, fold, label, prediction and probabilities (float[N]).
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        ["clip_id", "subject", "fold", "true_label", "true_class", "pred_label", "pred_class", "correct"]
        + [f"p_{name}" for name in class_names]
    )
    for r in rows:
        probs = [f"{float(p):.6f}" for p in r["probabilities"]]
        writer.writerow(
            [
                r["clip_id"],
                r["subject"],
                r["fold"],
                int(r["label"]),
                class_names[int(r["label"])],
                int(r["prediction"]),
                class_names[int(r["prediction"])],
                int(int(r["label"]) == int(r["prediction"])),
                *probs,
            ]
        )
    path = Path(path)
    files.write_bytes(path, buf.getvalue().encode())
    return path


def plot_confusion_matrix(
    path: str | os.PathLike, cm: np.ndarray, class_names: Sequence[str], title: str = ""
) -> Path:
    """Confusion matrix as a PNG: counts in each cell, colour = row-normalised rate (recall)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    rate = np.divide(cm, np.maximum(rows, 1))
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.2 * n + 2, 1.2 * n + 1.5))
    im = ax.imshow(rate, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), labels=class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), labels=class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    for i in range(n):
        for j in range(n):
            colour = "white" if rate[i, j] > 0.5 else "black"
            ax.text(j, i, f"{cm[i, j]}", ha="center", va="center", color=colour)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    path = Path(path)
    files.write_bytes(path, buf.getvalue())
    return path


def _pct(x: float | None) -> str:
    return "   -  " if x is None or not math.isfinite(x) else f"{100 * x:6.2f}"


def _dec(x: float | None) -> str:
    return "   -  " if x is None or not math.isfinite(x) else f"{x:.4f}"


def per_dataset_lines(results: dict) -> list[str]:
    """One line per data set of a composite run (results["per_dataset"]): n, accuracy, UF1, UAR."""
    entries = results.get("per_dataset") or {}
    width = max((len(name) for name in entries), default=0)
    return [
        f"  {name:<{width}}  n {m['n']:>4}   accuracy {_pct(m['accuracy'])} %   UF1 {_dec(m['uf1'])}   "
        f"UAR {_dec(m['uar'])}"
        for name, m in entries.items()
    ]


def console_table(results: dict, paths: dict[str, str | os.PathLike] | None = None) -> str:
    """Per-fold n / accuracy, pooled accuracy, UF1, UAR, the labelled selected-epoch lines, output paths."""
    lines = []
    width = max([len("fold")] + [len(str(f["fold"])) for f in results["per_fold"]])
    lines.append(f"{'fold':<{width}}  {'n':>4}  {'acc %':>6}  test subjects")
    for f in results["per_fold"]:
        subjects = ",".join(f.get("test_subjects", []))
        lines.append(f"{f['fold']:<{width}}  {f['n']:>4}  {_pct(f['accuracy'])}  {subjects}")
    lines.append("-" * (width + 16))
    epochs = results.get("epochs")
    at = f" (last epoch, {epochs})" if epochs is not None else " (last epoch)"
    lines.append(
        f"pooled over {results['protocol'].get('num_folds', len(results['per_fold']))} folds, "
        f"{results['n']} samples{at}:"
    )
    lines.append(
        f"  accuracy {_pct(results['accuracy'])} %   UF1 {_dec(results['uf1'])}   UAR {_dec(results['uar'])}"
    )
    lines += per_dataset_lines(results)
    for key in ("validation_selected", "validation_selected_retrained", "best_epoch_per_fold_test_selected"):
        other = results.get(key)
        if other:
            lines.append(
                f"  [{other['label']}] accuracy {_pct(other['accuracy'])} %   UF1 {_dec(other['uf1'])}   "
                f"UAR {_dec(other['uar'])}"
            )
    for name, p in (paths or {}).items():
        lines.append(f"  {name}: {p}")
    return "\n".join(lines)
