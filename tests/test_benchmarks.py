"""benchmarks/: the helpers, and each script run at `:tiny` as a subprocess with its figures checked.

The script runs compile the full training steps (about 1-2 min each on a loaded 2-core CPU), so
they are marked slow; the helper tests run in well under a second.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ma2mi_jax.models import flops as flops_lib

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _common():
    """benchmarks/common.py as a module (it defines no flags on import)."""
    if "bench_common" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_common", BENCH / "common.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_common"] = module  # dataclasses look their module up here
        spec.loader.exec_module(module)
    return sys.modules["bench_common"]


def test_parse_figures_reads_name_value_lines():
    text = (
        "== t ==\nstep_ms: 12.5 ms (median of 3)\nflops_per_step_xla: 1.5e+09 FLOP\nMFU: n/a on cpu\nx y: 3\n"
    )
    assert _common().parse_figures(text) == {"step_ms": 12.5, "flops_per_step_xla": 1.5e9}


def test_peak_table_and_mfu_line():
    common = _common()
    assert common.peak_flops_per_device("NVIDIA H100 80GB HBM3") == 989e12
    assert common.peak_flops_per_device("NVIDIA H100 PCIe") == 756e12
    assert common.peak_flops_per_device("NVIDIA H200") == 989e12
    assert common.peak_flops_per_device("cpu") is None
    assert common.mfu_line(1e9, "float32") == f"MFU: n/a on {common.device_kind()}"


def test_step_times_median_and_timer_counts_steps():
    common = _common()
    assert common.StepTimes([0.3, 0.1, 0.2]).median == pytest.approx(0.2)
    calls = []
    carry, times = common.time_steps(lambda c: calls.append(c) or c + 1, 0, warmup=2, steps=3)
    assert carry == 5 and len(calls) == 5 and len(times.seconds) == 3
    assert all(s >= 0 for s in times.seconds)


def _positive(figures: dict[str, float], names: list[str]) -> None:
    missing = [n for n in names if n not in figures]
    assert not missing, f"figures not printed: {missing}; got {sorted(figures)}"
    assert all(figures[n] > 0 for n in names), {n: figures[n] for n in names}


def _gpu_check():
    """benchmarks/gpu_check.py as a module."""
    if "gpu_check" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_check", BENCH / "gpu_check.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_check"] = module
        spec.loader.exec_module(module)
    return sys.modules["gpu_check"]


@pytest.fixture(scope="module")
def tiny_check(tmp_path_factory) -> dict:
    """benchmarks/gpu_check.py --size tiny, three of its parts (one per benchmark script and the LOSO run).

    The script's own subprocesses run the benchmarks as the GPU run does; their figures are
    checked below. The paper-size parts are the same commands on the real configs.
    """
    out = tmp_path_factory.mktemp("gpu_check")
    proc = subprocess.run(
        [sys.executable, str(BENCH / "gpu_check.py"), f"--out={out}", "--size=tiny",
         "--only=pretrain_bf16,finetune_sequential,loso"],
        cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert set(report["parts"]) == {"pretrain_bf16", "finetune_sequential", "loso"}
    assert all(p["status"] == "ok" for p in report["parts"].values()), report["parts"]
    return report


def _part(report: dict, name: str) -> tuple[str, dict[str, float]]:
    part = report["parts"][name]
    return Path(part["log"]).read_text(), part["figures"]


@pytest.mark.slow
def test_pretrain_step_tiny_in_bfloat16_with_latent_cache(tiny_check):
    """The 24 GB-card settings of pre-training (bf16, the latent cache) at :tiny."""
    out, fig = _part(tiny_check, "pretrain_bf16")
    _positive(
        fig,
        [
            "compile_s",
            "step_ms",
            "samples_per_s",
            "flops_per_step_analytic",
            "flops_per_step_xla",
            "achieved_flops_per_s",
            "peak_memory",
            "onthefly_step_ms",
            "cached_step_ms",
            "latent_cache_speedup",
        ],
    )
    assert "load_average:" in out and "MFU: n/a on cpu" in out and "--config.dtype=bfloat16" in out
    # :tiny = 32 px, width 8, DiT T/2 on the 8x8x4 latent of the (8,16,16) VAE, batch 4, L_equ on.
    per_sample = (
        flops_lib.miacnet_flops(32, 8, "add")
        + flops_lib.dit_flops("T/2", 8, 4, cond_dim=64)
        + flops_lib.resnet18_flops(32, 8)
    )
    assert fig["flops_per_step_analytic"] == pytest.approx(3 * per_sample * 4, rel=1e-3)
    # samples/s is the batch over the median step time.
    assert fig["samples_per_s"] == pytest.approx(4 / (fig["step_ms"] / 1e3), rel=1e-2)
    assert fig["latent_cache_speedup"] == pytest.approx(
        fig["onthefly_step_ms"] / fig["cached_step_ms"], rel=1e-2
    )


@pytest.mark.slow
def test_finetune_step_tiny_pipeline_and_step(tiny_check):
    out, fig = _part(tiny_check, "finetune_sequential")
    _positive(
        fig,
        [
            "host_draw_ms",
            "pipeline_ms",
            "train_step_ms",
            "fold_step_ms",
            "epoch_step_ms",
            "samples_per_s",
            "flops_per_step_analytic",
            "memory_estimate",
            "peak_memory",
            "cv_train_estimate_s",
        ],
    )
    assert "pipeline_overhead" in fig and "mode: sequential" in out
    assert "load_average:" in out
    # 2 folds x batch 4 per step; analytic FLOPs = 3 x MIACNet forward at 32 px, width 8.
    assert fig["samples_per_s"] == pytest.approx(8 / (fig["fold_step_ms"] / 1e3), rel=1e-2)
    assert fig["flops_per_step_analytic"] == pytest.approx(3 * flops_lib.miacnet_flops(32, 8) * 8, rel=1e-3)
    # The overhead is the ratio of the two printed step times.
    want = 100 * (fig["fold_step_ms"] / fig["train_step_ms"] - 1)
    assert fig["pipeline_overhead"] == pytest.approx(want, abs=0.5)  # both printed rounded


@pytest.mark.slow
def test_gpu_check_times_a_real_loso_run(tiny_check):
    loso = tiny_check["parts"]["loso"]
    assert loso["figures"]["first_epoch_s"] > 0 and loso["figures"]["seconds_per_epoch"] > 0
    assert "results.json" in Path(loso["log"]).read_text()
    assert tiny_check["header"][0].startswith("== gpu check ==")


def test_gpu_check_parts_at_paper_size_name_real_configs(tmp_path):
    check = _gpu_check()
    paper = check.parts("paper", str(tmp_path))
    tiny = check.parts("tiny", str(tmp_path))
    assert [p.name for p in paper] == [p.name for p in tiny]
    assert [p.name for p in paper] == [
        "pretrain_bf16", "pretrain_f32", "finetune_vmapped", "finetune_sequential", "loso",
    ]  # fmt: skip
    for part in paper:
        config = part.command[part.command.index("--config") + 1]
        assert (ROOT / config).is_file() and ":tiny" not in config, part.name
    assert sum(p.limit_s for p in paper) <= 8 * 60  # the device time the first GPU run is given
    assert "--config.dtype=bfloat16" in paper[0].command and "--config.dtype=float32" in paper[1].command
    log = "group_000 epoch 1/2: loss 1.6 acc 0.2 (12.5s)\ngroup_000 epoch 2/2: loss 1.5 acc 0.3 (2.5s)\n"
    assert check.epoch_figures(log) == {"first_epoch_s": 12.5, "seconds_per_epoch": 2.5}


def test_input_pipeline_rate_at_tiny():
    """benchmarks/input_pipeline.py generates a set, reads it through the pipeline and prints its rate."""
    proc = subprocess.run(
        [sys.executable, str(BENCH / "input_pipeline.py"), "--config", "configs/synthetic_pretrain.py:tiny",
         "--batches", "2", "--clips_scale", "0.05", "--target", "1000"],
        cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    fig = _common().parse_figures(proc.stdout)
    _positive(fig, ["pairs_per_s", "pairs_per_core_s", "cpu_ms_per_pair", "cores_needed"])
    assert fig["cores_needed"] == pytest.approx(1000 / fig["pairs_per_core_s"], rel=0.01)
    assert fig["cpu_ms_per_pair"] == pytest.approx(1000 / fig["pairs_per_core_s"], rel=0.01)
    assert "clips: 16 at 32 px, batch 4, 2 timed batches" in proc.stdout  # DFEW x 0.05
