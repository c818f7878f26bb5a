"""The whole chain on the synthetic default: generate, pre-train, LOSO from the checkpoint, export.

`scripts/quickstart.py` parses two config files (the pre-training and the LOSO stage) and calls
`run`. Every stage is resumable: a second run reuses the generated data, resumes or skips finished
training, and re-exports.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time

import ml_collections

from ma2mi_jax.data import synthetic


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
    def pretrain(self) -> str:
        return os.path.join(self.out, "pretrain")

    @property
    def loso(self) -> str:
        return os.path.join(self.out, "loso")

    @property
    def export(self) -> str:
        return os.path.join(self.out, "classifier")


def _generate(layout: str, out: str, size: int, seed: int, clips_scale: float) -> None:
    """Generate a synthetic data set unless a finished one is already there."""
    if os.path.isdir(out) and os.listdir(out):
        print(f"[data] reusing {out}", flush=True)
        return
    start = time.perf_counter()
    specs = synthetic.generate(layout, out, size=size, seed=seed, clips_scale=clips_scale)
    print(
        f"[data] {layout}: {len(specs)} clips at {size}px in {out} ({time.perf_counter() - start:.0f} s)",
        flush=True,
    )


def generate_data(
    pretrain_config: ml_collections.ConfigDict,
    loso_config: ml_collections.ConfigDict,
    paths: Paths,
    clips_scale: float = 1.0,
) -> None:
    """The synthetic macro (DFEW layout) and micro (CASME II layout) sets at the configs' image sizes."""
    _generate("dfew", paths.macro_data, pretrain_config.data.image_size, pretrain_config.seed, clips_scale)
    _generate("casme2", paths.micro_data, loso_config.data.image_size, loso_config.seed, clips_scale)


def run(
    pretrain_config: ml_collections.ConfigDict,
    loso_config: ml_collections.ConfigDict,
    out: str,
    clips_scale: float = 1.0,
) -> dict:
    """Run the four stages into `out` and print a summary table; returns the LOSO results."""
    from ma2mi_jax import inference
    from ma2mi_jax.train import finetune, pretrain

    start = time.perf_counter()
    paths = Paths(os.path.abspath(out))
    times: dict[str, float] = {}

    t = time.perf_counter()
    generate_data(pretrain_config, loso_config, paths, clips_scale)
    times["data"] = time.perf_counter() - t

    t = time.perf_counter()
    with pretrain_config.unlocked():
        pretrain_config.data.root = paths.macro_data
    print(f"[pretrain] MA2MI pre-training -> {paths.pretrain}", flush=True)
    pretrain.train_and_evaluate(pretrain_config, paths.pretrain)
    times["pretrain"] = time.perf_counter() - t

    t = time.perf_counter()
    with loso_config.unlocked():
        loso_config.data.root = paths.micro_data
        loso_config.init = paths.pretrain
        loso_config.finetune.final_model = True
    print(f"[loso] leave-one-subject-out from {paths.pretrain} -> {paths.loso}", flush=True)
    results = finetune.run_cross_validation(loso_config, paths.loso)
    times["loso"] = time.perf_counter() - t

    t = time.perf_counter()
    if os.path.isdir(paths.export):
        shutil.rmtree(paths.export)
    inference.export_from_workdir(paths.loso, paths.export, fold=finetune.FINAL_FOLD)
    times["export"] = time.perf_counter() - t

    total = time.perf_counter() - start
    print(summary(results, paths, times, total), flush=True)
    return results


def summary(results: dict, paths: Paths, times: dict[str, float], total: float) -> str:
    """The closing table: last-epoch figures, where every output went, and how long each stage took."""
    lines = [
        "",
        "MA2MI quick start (synthetic data; figures from the last epoch of every fold)",
        f"  accuracy {100 * results['accuracy']:6.2f} %   UF1 {results['uf1']:.4f}   UAR {results['uar']:.4f}"
        f"   ({len(results['per_fold'])} folds, {results['protocol']['name']})",
        "",
        f"  data            {os.path.dirname(paths.macro_data)}  (preview.png in each data set)",
        f"  pre-training    {paths.pretrain}  (checkpoints/, pictures/, tensorboard/)",
        f"  cross-validation {paths.loso}  (results.json, predictions.csv, confusion_matrix.png)",
        f"  classifier      {paths.export}",
        f"  predict         python scripts/predict.py --model {paths.export} --onset A.jpg --apex B.jpg",
        "",
        "  time: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + f"; total {total / 60:.1f} min",
    ]
    return "\n".join(lines)
