"""The whole chain on the synthetic default: generate, autoencoder, pre-train, probe, LOSO, export.

`scripts/quickstart.py` parses three config files (the autoencoder, the pre-training and the LOSO
stage) and calls `run`. Every stage is resumable: a second run reuses the generated data and the
trained autoencoder, resumes or skips finished training, and re-probes and re-exports.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Sequence

import ml_collections

from ma2mi_jax import errors
from ma2mi_jax.data.synthetic import domain_gap
from ma2mi_jax.data.synthetic import generator as synthetic
from ma2mi_jax.evaluation import probe
from ma2mi_jax.models import vae as vae_lib
from ma2mi_jax.train import autoencoder, finetune
from ma2mi_jax.train.pretrain import diagnostics
from ma2mi_jax.train.pretrain import job as pretrain


@dataclasses.dataclass(frozen=True)
class Paths:
    """Where the quick start writes each output, below one folder."""

    out: str

    @property
    def macro_data(self) -> str:
        return os.path.join(self.out, "data", "dfew")

    @property
    def micro_data(self) -> str:
        return os.path.join(self.out, "data", "casme2")

    @property
    def vae(self) -> str:
        return os.path.join(self.out, "vae")

    @property
    def probe_pretrained(self) -> str:
        return os.path.join(self.out, "probe_pretrained")

    @property
    def probe_scratch(self) -> str:
        return os.path.join(self.out, "probe_scratch")

    @property
    def pretrain(self) -> str:
        return os.path.join(self.out, "pretrain")

    @property
    def loso(self) -> str:
        return os.path.join(self.out, "loso")

    @property
    def export(self) -> str:
        return os.path.join(self.out, "classifier")


def _generate(
    layout: str, out: str, size: int, seed: int, clips_scale: float, macro_gap: Sequence[str] = ()
) -> None:
    """Generate a synthetic data set unless a finished one is already there (`macro_gap`: dfew only)."""
    if os.path.isdir(out) and os.listdir(out):
        _check_same_gap(out, domain_gap.parse(macro_gap))
        print(f"[data] reusing {out}", flush=True)
        return
    start = time.perf_counter()
    specs = synthetic.generate(
        layout, out, size=size, seed=seed, clips_scale=clips_scale, macro_gap=macro_gap
    )
    print(
        f"[data] {layout}: {len(specs)} clips at {size}px in {out} ({time.perf_counter() - start:.0f} s)",
        flush=True,
    )


def _check_same_gap(out: str, gap: tuple[str, ...]) -> None:
    """ConfigError when a data set to reuse was generated with other domain-gap factors."""
    manifest = os.path.join(out, "synthetic.json")
    if not os.path.isfile(manifest):
        return
    with open(manifest) as f:
        had = tuple(json.load(f).get("macro_gap", ()))
    if had != gap:
        raise errors.ConfigError(
            f"{out} was generated with domain gap {list(had) or 'none'}, not {list(gap) or 'none'}: "
            "give another --out"
        )


def generate_data(
    pretrain_config: ml_collections.ConfigDict,
    loso_config: ml_collections.ConfigDict,
    paths: Paths,
    clips_scale: float = 1.0,
    macro_gap: Sequence[str] = (),
) -> None:
    """The synthetic macro (DFEW layout) and micro (CASME II layout) sets at the configs' image sizes.

    `macro_gap`: domain-gap factors (`domain_gap.FACTORS`) of the macro set; the micro set is the
    in-domain benchmark's whatever they are.
    """
    _generate(
        "dfew",
        paths.macro_data,
        pretrain_config.data.image_size,
        pretrain_config.seed,
        clips_scale,
        macro_gap,
    )
    _generate("casme2", paths.micro_data, loso_config.data.image_size, loso_config.seed, clips_scale)


def train_vae(config: ml_collections.ConfigDict, paths: Paths) -> None:
    """Train the domain autoencoder on the macro frames unless a finished one is already there."""
    if os.path.isfile(os.path.join(paths.vae, vae_lib.FLAX_WEIGHTS)):
        print(f"[vae] reusing {paths.vae}", flush=True)
        return
    with config.unlocked():
        config.data.root = paths.macro_data
    print(f"[vae] domain autoencoder -> {paths.vae}", flush=True)
    autoencoder.train_autoencoder(config, paths.vae)


def probe_encoders(loso_config: ml_collections.ConfigDict, paths: Paths, seeds: tuple[int, ...]) -> dict:
    """Linear probes of the pre-trained MIACNet and of random inits (one per seed) on the micro set."""
    out = {}
    for name, init, workdir, use in (
        ("pretrained", paths.pretrain, paths.probe_pretrained, seeds[:1]),
        ("scratch", "scratch", paths.probe_scratch, seeds),
    ):
        config = copy.deepcopy(loso_config)
        with config.unlocked():
            config.data.root = paths.micro_data
            config.init = init
        print(f"[probe] linear probe of the {name} encoder -> {workdir}", flush=True)
        out[name] = probe.run_probe(config, workdir, use)
        print(probe.summary(out[name]), flush=True)
    return out


def run(
    autoencoder_config: ml_collections.ConfigDict,
    pretrain_config: ml_collections.ConfigDict,
    loso_config: ml_collections.ConfigDict,
    out: str,
    clips_scale: float = 1.0,
    probe_seeds: tuple[int, ...] = (0, 1, 2),
) -> dict:
    """Run the stages into `out` and print a summary table; returns the LOSO results."""

    start = time.perf_counter()
    paths = Paths(os.path.abspath(out))
    times: dict[str, float] = {}

    t = time.perf_counter()
    generate_data(pretrain_config, loso_config, paths, clips_scale)
    times["data"] = time.perf_counter() - t

    t = time.perf_counter()
    train_vae(autoencoder_config, paths)
    times["vae"] = time.perf_counter() - t

    t = time.perf_counter()
    with pretrain_config.unlocked():
        pretrain_config.data.root = paths.macro_data
        pretrain_config.vae.path = paths.vae
    print(f"[pretrain] MA2MI pre-training -> {paths.pretrain}", flush=True)
    pretrain.train_and_evaluate(pretrain_config, paths.pretrain)
    times["pretrain"] = time.perf_counter() - t

    t = time.perf_counter()
    probes = probe_encoders(loso_config, paths, tuple(probe_seeds))
    times["probe"] = time.perf_counter() - t

    t = time.perf_counter()
    with loso_config.unlocked():
        loso_config.data.root = paths.micro_data
        loso_config.init = paths.pretrain
        loso_config.vae.path = paths.vae
        loso_config.finetune.final_model = True
    print(f"[loso] leave-one-subject-out from {paths.pretrain} -> {paths.loso}", flush=True)
    results = finetune.run_cross_validation(loso_config, paths.loso)
    times["loso"] = time.perf_counter() - t

    t = time.perf_counter()
    if os.path.isdir(paths.export):
        shutil.rmtree(paths.export)
    finetune.export_from_workdir(paths.loso, paths.export, fold=finetune.FINAL_FOLD)
    times["export"] = time.perf_counter() - t

    total = time.perf_counter() - start
    diag = diagnostics.read(paths.pretrain)
    print(summary(results, probes, diag, paths, times, total), flush=True)
    return results


def summary(
    results: dict, probes: dict, diag: dict, paths: Paths, times: dict[str, float], total: float
) -> str:
    """The closing table: last-epoch figures, the probes, where every output went, the time per stage."""
    pre, scratch = probes["pretrained"], probes["scratch"]
    n = len(scratch["per_seed"])
    lines = [
        "",
        "MA2MI quick start (synthetic data; figures from the last epoch of every fold)",
        f"  accuracy {100 * results['accuracy']:6.2f} %   UF1 {results['uf1']:.4f}   UAR {results['uar']:.4f}"
        f"   ({len(results['per_fold'])} folds, {results['protocol']['name']})",
        "",
        "  what pre-training bought, before any fine-tuning (frozen features, linear probe, same folds):",
        f"    pre-trained encoder   UF1 {pre['uf1']:.4f}   UAR {pre['uar']:.4f}",
        f"    random encoder        UF1 {scratch['uf1']:.4f} ± {scratch['uf1_std']:.4f}   "
        f"UAR {scratch['uar']:.4f}   ({n} seeds)",
        "  pretext task on held-out macro pairs: " + diagnostics.summary_line(diag) if diag else "",
        "",
        f"  data            {os.path.dirname(paths.macro_data)}  (preview.png in each data set)",
        f"  autoencoder     {paths.vae}  (reconstructions.png, autoencoder.json)",
        f"  pre-training    {paths.pretrain}  (checkpoints/, pictures/, diagnostics.json, tensorboard/)",
        f"  probes          {paths.probe_pretrained}, {paths.probe_scratch}  (probe.json)",
        f"  cross-validation {paths.loso}  (results.json, predictions.csv, confusion_matrix.png)",
        f"  classifier      {paths.export}",
        f"  predict         python scripts/predict.py --model {paths.export} --onset A.jpg --apex B.jpg",
        "",
        "  time: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + f"; total {total / 60:.1f} min",
    ]
    return "\n".join(lines)
