"""The first GPU run: the figures docs/performance.md asks of a GPU, in one short command.

    bash benchmarks/gpu_check.sh OUT                          # on the GPU host (installs, then this)
    python benchmarks/gpu_check.py --out OUT                  # paper size, packages already installed
    python benchmarks/gpu_check.py --out OUT --size tiny      # the same parts at :tiny (float32)

Parts, each a subprocess with its own time limit (one that fails or overruns is recorded as such
and the next one starts):
  pretrain_bf16, pretrain_f32   benchmarks/pretrain_step.py --latent_cache on the DFEW config: the
                                step with the VAE inside it and with cached latents, samples/s, MFU,
                                XLA FLOPs and memory estimate, peak device memory
  finetune_vmapped,             benchmarks/finetune_step.py on the CASME II config in bfloat16, all
  finetune_sequential           26 LOSO folds in one vmapped step, then one fold after the other:
                                the input pipeline alone, the step alone and both together
  loso                          scripts/loso.py on a generated CASME II-layout set at the config's
                                size (from scratch, 2 epochs): seconds per epoch as the run logs them
`OUT/gpu_check.json` is rewritten after every part, so a cut run keeps what it measured; the
summary printed at the end names each part's headline figures.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
from absl import app, flags

OUT = flags.DEFINE_string("out", "gpu_check", "Folder for gpu_check.json, the logs and the LOSO run.")
SIZE = flags.DEFINE_enum("size", "paper", ["paper", "tiny"], "paper = the real configs; tiny = their :tiny.")
ONLY = flags.DEFINE_list("only", [], "Run only these parts (default: all).")

EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+): .*\((\d+(?:\.\d+)?)s\)\s*$")


@dataclasses.dataclass(frozen=True)
class Part:
    """One measurement: its command (from the repository root), time limit and headline figures."""

    name: str
    command: tuple[str, ...]
    limit_s: int
    headline: tuple[str, ...]


def _configs(size: str) -> dict[str, str]:
    if size == "paper":
        return {"pretrain": "configs/dfew.py", "finetune": "configs/casme2.py", "image_size": "224"}
    return {
        "pretrain": "configs/synthetic_pretrain.py:tiny",
        "finetune": "configs/synthetic_loso.py:tiny",
        "image_size": "32",
    }


def parts(size: str, out: str) -> list[Part]:
    """Every part of the check at `size` ("paper" | "tiny"), writing under `out`."""
    c, py = _configs(size), sys.executable
    steps = ["--steps", "10", "--warmup", "2"] if size == "paper" else ["--steps", "2", "--warmup", "1"]
    pretrain_figures = ("onthefly_step_ms", "cached_step_ms", "latent_cache_speedup", "samples_per_s", "MFU")
    finetune_figures = (
        "pipeline_ms",
        "train_step_ms",
        "fold_step_ms",
        "samples_per_s",
        "cv_train_estimate_s",
    )
    # Paper size: 460 s in all, within the 8 minutes a first GPU run is given (install included).
    limits = {"pretrain": 100, "finetune": 70, "loso": 120} if size == "paper" else {}
    finetune_args = ["--config.dtype=bfloat16"] if size == "paper" else ["--folds", "2"]
    data = os.path.join(out, "casme2_data")
    workdir = os.path.join(out, "loso")
    loso = (
        py, "scripts/loso.py", "--config", c["finetune"], "--config.init=scratch",
        f"--config.data.root={data}", "--config.train.epochs=2", f"--config.workdir={workdir}",
    )  # fmt: skip
    return [
        *(
            Part(
                f"pretrain_{tag}",
                (
                    py,
                    "benchmarks/pretrain_step.py",
                    "--config",
                    c["pretrain"],
                    f"--config.dtype={dtype}",
                    "--latent_cache",
                    *steps,
                ),
                limits.get("pretrain", 300),
                pretrain_figures,
            )
            for tag, dtype in (("bf16", "bfloat16"), ("f32", "float32"))
        ),
        *(
            Part(
                f"finetune_{mode}",
                (
                    py,
                    "benchmarks/finetune_step.py",
                    "--config",
                    c["finetune"],
                    "--mode",
                    mode,
                    *finetune_args,
                    *steps,
                ),
                limits.get("finetune", 300),
                finetune_figures,
            )
            for mode in ("vmapped", "sequential")
        ),
        Part("loso", loso, limits.get("loso", 300), ("seconds_per_epoch", "first_epoch_s")),
    ]


def generate_data(out: str, size: str) -> None:
    """The LOSO part's data: a generated CASME II-layout set at the config's frame size (once)."""
    data = os.path.join(out, "casme2_data")
    if os.path.isdir(data):
        return
    scale = "0.25" if size == "paper" else "0.1"
    subprocess.run(
        [sys.executable, "scripts/generate_synthetic.py", f"--out={data}", "--layout=casme2",
         f"--size={_configs(size)['image_size']}", f"--clips_scale={scale}", "--workers=8", "--quiet",
         "--nopreview"],
        cwd=common.REPO_ROOT, check=True, capture_output=True, text=True,
    )  # fmt: skip


def epoch_figures(log: str) -> dict[str, float]:
    """seconds_per_epoch (the later epochs' mean) and first_epoch_s (compilation included) of a run's log."""
    seconds = [float(m.group(3)) for m in map(EPOCH_LINE.search, log.splitlines()) if m]
    if not seconds:
        return {}
    later = seconds[1:] or seconds
    return {"first_epoch_s": seconds[0], "seconds_per_epoch": sum(later) / len(later)}


def run_part(part: Part, out: str) -> dict:
    """Run one part under its limit; its figures, status, wall time and log file."""
    log_path = os.path.join(out, f"{part.name}.log")
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            part.command, cwd=common.REPO_ROOT, capture_output=True, text=True, timeout=part.limit_s
        )
        text, status = proc.stdout + proc.stderr, "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
    except subprocess.TimeoutExpired as cut:
        text = _text(cut.stdout) + _text(cut.stderr)
        status = f"cut at {part.limit_s} s"
    with open(log_path, "w") as f:
        f.write(text)
    figures = {**common.parse_figures(text), **epoch_figures(text)}
    return {
        "status": status,
        "wall_s": round(time.perf_counter() - start, 1),
        "command": " ".join(part.command),
        "log": log_path,
        "figures": figures,
        "headline": {k: figures.get(k) for k in part.headline},
    }


def _text(stream: bytes | str | None) -> str:
    return stream.decode(errors="replace") if isinstance(stream, bytes) else (stream or "")


def main(argv: list[str]) -> None:
    """Run every part, rewrite gpu_check.json after each, print the summary."""
    del argv
    out = os.path.abspath(OUT.value)
    os.makedirs(out, exist_ok=True)
    report = {"size": SIZE.value, "header": common.header("gpu check"), "parts": {}}
    path = os.path.join(out, "gpu_check.json")
    for part in parts(SIZE.value, out):
        if ONLY.value and part.name not in ONLY.value:
            continue
        if part.name == "loso":
            generate_data(out, SIZE.value)
        print(f"[gpu_check] {part.name} (at most {part.limit_s} s)", flush=True)
        report["parts"][part.name] = run_part(part, out)
        with open(path + ".tmp", "w") as f:
            json.dump(report, f, indent=2)
        os.replace(path + ".tmp", path)
    for name, r in report["parts"].items():
        shown = ", ".join(f"{k} {v:.4g}" for k, v in r["headline"].items() if v is not None)
        print(f"{name}: {r['status']}, {r['wall_s']} s; {shown}")
    print(f"figures and logs: {out}")


if __name__ == "__main__":
    app.run(main)
