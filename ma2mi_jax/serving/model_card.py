"""The model card every export carries (MODEL_CARD.md): what the classifier is and how it was judged.

It says, in this order: the data set, protocol and this model's fold; the classes in their label
order; how each fold was split; the selection rule (the last epoch) with the run's pooled figures,
and the test-selected figure labelled as such; the seed, the starting point and the pre-training
it came from; where the full config is. `scripts/predict.py` prints its first lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

CARD_FILE = "MODEL_CARD.md"
PREVIEW_LINES = 4  # the lines predict prints: title, data and protocol, classes, selection


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * float(x):.1f} %"


def _dec(x: Any) -> str:
    return "-" if x is None else f"{float(x):.3f}"


def _fold_table(plan: dict, results: dict) -> list[str]:
    """One row per fold: its test subjects, training and test sample counts, last-epoch accuracy."""
    accuracy = {f["fold"]: f.get("accuracy") for f in results.get("per_fold", [])}
    rows = [
        "| fold | test subjects | training samples | test samples | accuracy (last epoch) |",
        "|---|---|---|---|---|",
    ]
    for group in plan.get("groups", []):
        for f in group["folds"]:
            subjects = ", ".join(f["test_subjects"]) or "(none: trained on every subject)"
            acc = _pct(accuracy.get(f["name"])) if f["num_test"] else "-"
            rows.append(f"| {f['name']} | {subjects} | {f['num_train']} | {f['num_test']} | {acc} |")
    return rows


def _figures(d: dict) -> str:
    return f"accuracy {_pct(d.get('accuracy'))}, UF1 {_dec(d.get('uf1'))}, UAR {_dec(d.get('uar'))}"


def _selection(results: dict) -> list[str]:
    """The selection rule and its figures: the last epoch, and the test-selected best epoch labelled."""
    if not results:
        return ["Selection: the last epoch of training (no cross-validation results beside this export)."]
    lines = [
        f"Selection: the last epoch ({results.get('epochs')}) of every fold; pooled over "
        f"{len(results.get('per_fold', []))} folds, {results.get('n')} samples: {_figures(results)}.",
    ]
    for key in ("validation_selected", "validation_selected_retrained", "best_epoch_per_fold_test_selected"):
        other = results.get(key) or {}
        if other:
            label = other.get("label", key.replace("_", " "))
            lines.append(f"{label[0].upper()}{label[1:]}: {_figures(other)}.")
    return lines


def _training(meta: dict, results: dict, config: dict) -> list[str]:
    """Seed, schedule, size, starting point and the runs this model came from."""
    train = config.get("train", {})
    return [
        f"- seed {config.get('seed', '?')}, {train.get('epochs', '?')} epochs, batch "
        f"{train.get('batch_size', '?')}, learning rate {train.get('lr', '?')}, image size "
        f"{meta.get('image_size', '?')}, ResNet width {meta.get('model', {}).get('resnet_width', '?')}",
        f"- started from: {results.get('init') or config.get('init', '?')}",
        f"- pre-training it came from: {config.get('init', '?')}",
        f"- the cross-validation workdir: {meta.get('source') or '?'}",
    ]


def render(meta: dict, meta_file: str, results: dict | None = None, plan: dict | None = None) -> str:
    """The card's Markdown for an export's `meta` (saved as `meta_file`) and, when known, its run's
    results.json and plan.json."""
    results, plan = results or {}, plan or {}
    config = meta.get("config", {})
    data, protocol = config.get("data", {}), config.get("protocol", {})
    protocol_name = protocol.get("name", "?")
    if protocol_name == "kfold":
        protocol_name = f"{protocol.get('num_folds', '?')}-fold subject-independent"
    elif protocol_name == "loso":
        protocol_name = "leave-one-subject-out"
    classes: Sequence[str] = meta.get("class_names", [])
    subjects = ", ".join(meta.get("test_subjects", [])) or "none (trained on every subject)"
    lines = [
        f"# MA2MI micro-expression classifier: {data.get('name', '?')}, fold {meta.get('fold', '?')}",
        f"Data set {data.get('name', '?')} ({data.get('root', '')}), protocol {protocol_name}; "
        f"this model's held-out subjects: {subjects}.",
        "Classes in label order: " + ", ".join(f"{i} {name}" for i, name in enumerate(classes)) + ".",
        *_selection(results)[:1],
        "",
        *_selection(results)[1:],
        "",
        "## Folds",
        *(_fold_table(plan, results) if plan else ["(no plan.json beside this export)"]),
        "",
        "## Training",
        *_training(meta, results, config),
        f"- the full config: `{meta_file}` beside this file (key `config`)",
        "",
    ]
    return "\n".join(lines)


def preview(card: str) -> list[str]:
    """The first lines of a card, as `scripts/predict.py` prints them."""
    return card.splitlines()[:PREVIEW_LINES]
