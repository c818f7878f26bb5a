"""The transfer experiment: the shape of the paper's Table 1 and Table 4 on the synthetic benchmark.

Each row is a pre-training variant (or none) followed by a linear probe of its frozen encoder
and cross-validated fine-tuning from its checkpoint, repeated over seeds (the seed drives
pre-training, the random init of the scratch row and fine-tuning; the generated data sets and the
domain autoencoder are shared by every run). Reported figures are last-epoch, pooled over folds,
as mean ± std over seeds, and every row against the scratch row as a paired difference per seed
with a 95 % interval (paired t). Runs with `finetune.validation_subjects` > 0 add a table of the
last-epoch, validation-selected and test-selected UF1 side by side. Every run keeps its own
workdir, so an interrupted experiment resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from ma2mi_jax import files
from ma2mi_jax.evaluation import probe
from ma2mi_jax.train import finetune
from ma2mi_jax.train.finetune.results import TRANSFER_KEY
from ma2mi_jax.train.pretrain import job as pretrain
from ma2mi_jax.workflows import quickstart


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the results table: how to pre-train (None: not at all) and fine-tune."""

    name: str
    label: str
    table: str
    pretrain: Mapping[str, Any] | None
    finetune: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # The row whose pre-training (per seed) this one fine-tunes from: rows that differ only in how
    # they fine-tune share one pre-training instead of repeating it.
    pretrained_as: str = ""

    @property
    def pretrain_row(self) -> str:
        """The row whose folder holds this row's pre-training."""
        return self.pretrained_as or self.name


ROWS = (
    Row("scratch", "no pre-training (random init)", "Table 1", None, {"init": "scratch"}),
    Row("maer", "MAER (supervised macro pre-training)", "Table 1", {"objective": "supervised"}),
    Row("pixel", "MA2MI, pixel space", "Table 1", {"space": "pixel", "model.dit": "T/4"}),
    Row("latent", "MA2MI, latent space", "Table 1", {}),
    Row(
        "no_fpe",
        "w/o position encoder (fusion none)",
        "Table 4",
        {"model.fusion": "none"},
        {"model.fusion": "none"},
    ),
    Row("no_lpos", "w/o position losses", "Table 4", {"position_loss.enabled": False}),
    Row("joint", "branches not independent", "Table 4", {"model.stop_position_grad": False}),
    # Fine-tuning remedies for a domain gap: the latent row's pre-training, fine-tuned otherwise.
    *(
        Row(name, f"MA2MI latent, {label}", "Fine-tuning", {}, switches, pretrained_as="latent")
        for name, label, switches in (
            ("latent_probe_head", "head started at its probe fit (LP-FT)", {"finetune.head_init": "probe"}),
            ("latent_bn", "BatchNorm re-estimated first", {"finetune.bn_reestimate": True}),
            ("latent_lr", "encoders at 0.1x the rate", {"finetune.encoder_lr_scale": 0.1}),
            ("latent_l2sp", "L2-SP 0.01", {"finetune.l2sp_weight": 0.01}),
            ("latent_freeze_bn", "BatchNorm frozen", {"finetune.freeze_bn": True}),
            (
                "latent_adabn",
                "BatchNorm re-estimated, then frozen",
                {"finetune.bn_reestimate": True, "finetune.freeze_bn": True},
            ),
        )
    ),
)
# The paper's tables fine-tune as the paper does (BatchNorm trained); a row's switches come on top.
PAPER_FINETUNING = {"finetune.freeze_bn": False}
METRICS = ("accuracy", "uf1", "uar")
TRANSFER_COLUMNS = 6  # epochs shown in the transfer table


def override(config: ml_collections.ConfigDict, values: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """A copy of `config` with dotted keys set; a key that does not exist is an error naming it."""
    out = ml_collections.ConfigDict(config.to_dict())
    for dotted, value in values.items():
        *parents, leaf = dotted.split(".")
        node = out
        for p in parents:
            node = node[p]
        if leaf not in node:
            raise KeyError(f"experiment row sets unknown config key '{dotted}'")
        node[leaf] = value
    out.lock()
    return out


def run_one(
    row: Row,
    seed: int,
    pretrain_config: ml_collections.ConfigDict,
    loso_config: ml_collections.ConfigDict,
    paths: quickstart.Paths,
    out: str,
) -> tuple[dict, dict]:
    """Pre-train (unless the row has none), probe and fine-tune one (row, seed); reuse finished work."""
    run_dir = os.path.join(out, row.name, f"seed{seed}")
    ft = {"vae.path": paths.vae, **PAPER_FINETUNING, **row.finetune}
    if row.pretrain is not None:
        pre_values = {"vae.path": paths.vae, **row.pretrain, "seed": seed, "data.root": paths.macro_data}
        pre = override(pretrain_config, pre_values)
        pre_dir = os.path.join(out, row.pretrain_row, f"seed{seed}", "pretrain")
        if not os.path.exists(os.path.join(pre_dir, "metrics.json")):
            pretrain.train_and_evaluate(pre, pre_dir)
        ft.setdefault("init", pre_dir)
    loso = override(loso_config, {**ft, "seed": seed, "data.root": paths.micro_data})
    probed = _cached(os.path.join(run_dir, "probe", probe.FILENAME))
    if probed is None:
        probed = probe.run_probe(loso, os.path.join(run_dir, "probe"), [seed])
    results = _cached(os.path.join(run_dir, "loso", "results.json"))
    if results is None:
        results = finetune.run_cross_validation(loso, os.path.join(run_dir, "loso"))
    return results, probed


def _cached(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Mean of a_i - b_i over paired seeds with its paired-t interval (n < 2: no interval)."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    out = {"mean": float(d.mean()), "n": len(d), "lo": float("nan"), "hi": float("nan")}
    if len(d) > 1:
        from scipy import stats

        half = stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
        out.update(lo=float(d.mean() - half), hi=float(d.mean() + half))
    return out


def paired_table(rows: Sequence[Row], results: Mapping[str, Sequence[dict]], seeds: Sequence[int]) -> str:
    """Every row minus the scratch row, per seed (fine-tuned UF1 and probe UF1), with 95 % intervals."""
    if "scratch" not in results or not set(results) - {"scratch"}:
        return ""
    lines = [
        "**Against no pre-training, paired by seed (row − scratch; 95 % paired-t interval)**",
        "",
        "| setting | fine-tuned UF1 − scratch | probe UF1 − scratch | per seed (fine-tuned) |",
        "|---|---|---|---|",
    ]
    base = results["scratch"]
    for r in rows:
        if r.name == "scratch":
            continue
        ft = paired_difference([x["uf1"] for x in results[r.name]], [x["uf1"] for x in base])
        pr = paired_difference([x["probe_uf1"] for x in results[r.name]], [x["probe_uf1"] for x in base])
        per = ", ".join(f"{x['uf1'] - y['uf1']:+.3f}" for x, y in zip(results[r.name], base, strict=True))
        lines.append(f"| {r.label} | {_interval(ft)} | {_interval(pr)} | {per} |")
    return "\n".join([*lines, "", *_against_plain(rows, results)])


def _against_plain(rows: Sequence[Row], results: Mapping[str, Sequence[dict]]) -> list[str]:
    """Rows that fine-tune another row's pre-training otherwise, minus that row (fine-tuned UF1)."""
    pairs = [r for r in rows if r.pretrained_as and r.pretrained_as in results and r.name in results]
    if not pairs:
        return []
    lines = [
        "**Against plain fine-tuning of the same pre-training, paired by seed (row − the row it shares it "
        "with)**",
        "",
        "| setting | fine-tuned UF1 − plain | per seed |",
        "|---|---|---|",
    ]
    for r in pairs:
        mine, plain = results[r.name], results[r.pretrained_as]
        d = paired_difference([x["uf1"] for x in mine], [x["uf1"] for x in plain])
        per = ", ".join(f"{x['uf1'] - y['uf1']:+.3f}" for x, y in zip(mine, plain, strict=True))
        lines.append(f"| {r.label} | {_interval(d)} | {per} |")
    return [*lines, ""]


def selection_figures(results: Mapping[str, Any]) -> dict[str, float]:
    """UF1 at the validation-selected and test-selected epochs, and retrained (where a run has them)."""
    keys = {
        "validation_selected": "uf1_validation_selected",
        "best_epoch_per_fold_test_selected": "uf1_test_selected",
        "validation_selected_retrained": "uf1_retrained",
    }
    return {name: float(results[key]["uf1"]) for key, name in keys.items() if key in results}


def selection_table(rows: Sequence[Row], results: Mapping[str, Sequence[dict]]) -> str:
    """Last-epoch, validation-selected and test-selected UF1 side by side, with the paired differences
    (only rows run with finetune.validation_subjects > 0)."""
    lines = [
        "**Model selection: which epoch of each fold is read (UF1, mean over seeds; 95 % paired-t)**",
        "",
        "| setting | last epoch | validation-selected | test-selected (optimistic) "
        "| validation − last | test-selected − last | test-selected − validation |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        runs = results.get(r.name, [])
        for key, label in (
            ("uf1_validation_selected", ""),
            ("uf1_retrained", ", retrained for the chosen epochs"),
        ):
            if not runs or not all(key in x for x in runs):
                continue
            last, val, best = ([x[k] for x in runs] for k in ("uf1", key, "uf1_test_selected"))
            lines.append(
                f"| {r.label}{label} | {np.mean(last):.4f} | {np.mean(val):.4f} | {np.mean(best):.4f} "
                f"| {_interval(paired_difference(val, last))} | {_interval(paired_difference(best, last))} "
                f"| {_interval(paired_difference(best, val))} |"
            )
    return "\n".join([*lines, ""]) if len(lines) > 4 else ""


def transfer_table(rows: Sequence[Row], transfer: Mapping[str, Sequence[dict | None]]) -> str:
    """Held-out UF1 and the action encoder's distance from its start per epoch, each row side by side
    (means over seeds of the runs' `transfer_per_epoch`), with the probe of the current encoder
    where the runs had `finetune.probe_every`."""
    runs = {r.name: [t["rows"] for t in transfer.get(r.name, []) if t] for r in rows}
    runs = {name: tables for name, tables in runs.items() if tables}
    if not runs:
        return ""
    epochs = sorted(set.intersection(*({x["epoch"] for x in t} for ts in runs.values() for t in ts)))
    if len(epochs) > TRANSFER_COLUMNS:  # evenly spaced, the first and the last included
        picks = np.linspace(0, len(epochs) - 1, TRANSFER_COLUMNS).round().astype(int)
        epochs = [epochs[i] for i in sorted(set(picks))]
    lines = [
        "**Where transfer is kept or lost: held-out UF1 by epoch, mean over seeds "
        "(d = the action encoder's ||w − w0|| / ||w0||; probe = a linear probe of the current encoder)**",
        "",
        "| setting | " + " | ".join(f"epoch {e}" for e in epochs) + " |",
        "|---|" + "---|" * len(epochs),
    ]
    for r in rows:
        if r.name not in runs:
            continue
        cells = []
        for e in epochs:
            at = [next(x for x in t if x["epoch"] == e) for t in runs[r.name]]
            uf1 = [x["uf1"] for x in at if x["uf1"] is not None]
            cell = f"{np.mean(uf1):.3f}" if uf1 else "–"
            cell += f", d {np.mean([x['distance']['action_encoder'] for x in at]):.3f}"
            if all("probe_uf1" in x for x in at):
                cell += f", probe {np.mean([x['probe_uf1'] for x in at]):.3f}"
            cells.append(cell)
        lines.append(f"| {r.label} ({len(runs[r.name])} seeds) | " + " | ".join(cells) + " |")
    return "\n".join([*lines, ""])


def _interval(d: Mapping[str, float]) -> str:
    if np.isnan(d["lo"]):
        return f"{d['mean']:+.4f}"
    return f"{d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]"


def aggregate(results: Mapping[str, Sequence[dict]]) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean and standard deviation (over seeds, ddof=0) of each metric (and the probe's UF1) per row."""
    return {
        name: {
            m: (float(np.mean([r[m] for r in runs])), float(np.std([r[m] for r in runs])))
            for m in (*METRICS, "probe_uf1")
        }
        for name, runs in results.items()
    }


def _spread(mean_sd: tuple[float, float], n: int, scale: float = 1.0, digits: int = 4) -> str:
    """'mean ± sd' over n seeds; one seed has no spread, so its figure alone (not '± 0')."""
    mean, sd = scale * mean_sd[0], scale * mean_sd[1]
    return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if n > 1 else "")


def markdown_table(rows: Sequence[Row], stats: Mapping, results: Mapping[str, Sequence[dict]]) -> str:
    """Rows × (accuracy, UF1, UAR) as mean ± std, grouped by the paper's table."""
    lines = []
    for table in dict.fromkeys(r.table for r in rows):
        lines += [
            f"**{table} shape**",
            "",
            "| setting | accuracy (%) | UF1 | UAR | linear probe UF1 | seeds |",
            "|---|---|---|---|---|---|",
        ]
        for r in (r for r in rows if r.table == table):
            s, n = stats[r.name], len(results[r.name])
            lines.append(
                f"| {r.label} | {_spread(s['accuracy'], n, 100.0, 2)} | {_spread(s['uf1'], n)} "
                f"| {_spread(s['uar'], n)} | {_spread(s['probe_uf1'], n)} | {n} |"
            )
        lines.append("")
    return "\n".join(lines)


def bar_plot(path: str, rows: Sequence[Row], stats: Mapping) -> None:
    """Grouped bars of accuracy, UF1 and UAR per row with ± std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 * len(rows) + 2, 4))
    x = np.arange(len(rows))
    for i, m in enumerate(METRICS):
        means = [stats[r.name][m][0] for r in rows]
        stds = [stats[r.name][m][1] for r in rows]
        ax.bar(
            x + (i - 1) * 0.27, means, 0.27, yerr=stds, capsize=3, label=m.upper() if m != "accuracy" else m
        )
    ax.set_xticks(x, [r.label.replace(" (", "\n(") for r in rows], fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("last epoch, pooled over folds")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("synthetic benchmark: mean ± std over seeds")
    fig.tight_layout()
    with files.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def run(
    autoencoder_config: ml_collections.ConfigDict,
    pretrain_config: ml_collections.ConfigDict,
    loso_config: ml_collections.ConfigDict,
    out: str,
    seeds: Sequence[int],
    row_names: Sequence[str] | None = None,
    macro_gap: Sequence[str] = (),
) -> dict:
    """Run every (row, seed), then write results.md, results.json and results.png into `out`.

    `macro_gap`: domain-gap factors of the generated macro set (`data/synthetic/domain_gap.py`).
    """
    rows = [r for r in ROWS if row_names is None or r.name in row_names]
    unknown = set(row_names or ()) - {r.name for r in ROWS}
    if unknown:
        raise ValueError(f"unknown rows {sorted(unknown)}; known: {[r.name for r in ROWS]}")
    out = os.path.abspath(out)
    # Every row compiles the same programs again: a persistent cache compiles each once.
    jax.config.update("jax_compilation_cache_dir", os.path.join(out, "xla_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    paths = quickstart.Paths(os.path.join(out, "shared"))
    quickstart.generate_data(pretrain_config, loso_config, paths, macro_gap=macro_gap)
    quickstart.train_vae(autoencoder_config, paths)
    start = time.perf_counter()
    results: dict[str, list[dict]] = {}
    transfer: dict[str, list[dict | None]] = {}
    for row in rows:
        for seed in seeds:
            print(f"[experiment] {row.name} seed {seed}", flush=True)
            r, p = run_one(row, seed, pretrain_config, loso_config, paths, out)
            figures = {**{m: r[m] for m in METRICS}, "probe_uf1": p["uf1"], **selection_figures(r)}
            results.setdefault(row.name, []).append(figures)
            transfer.setdefault(row.name, []).append(r.get(TRANSFER_KEY))
    stats = aggregate(results)
    table = "\n".join(
        [
            markdown_table(rows, stats, results),
            paired_table(rows, results, seeds),
            selection_table(rows, results),
            transfer_table(rows, transfer),
        ]
    )
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(table)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"seeds": list(seeds), "runs": results, "stats": stats}, f, indent=2)
    bar_plot(os.path.join(out, "results.png"), rows, stats)
    print(table, flush=True)
    print(
        f"[experiment] {len(rows) * len(seeds)} runs, {(time.perf_counter() - start) / 60:.1f} min; "
        f"table, JSON and plot in {out}",
        flush=True,
    )
    return {"runs": results, "stats": stats}
