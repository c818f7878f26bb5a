"""What a training run shows: a progress bar, TensorBoard scalars (tensorboardX) and PNG pictures.

Shared by pre-training and fine-tuning. Everything is a no-op on processes other than 0 of a
multi-host run, so every process may call it.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence

import jax
import numpy as np
import tqdm

from ma2mi_jax import files


def is_chief() -> bool:
    """True on the process that writes logs and pictures (process 0)."""
    return jax.process_index() == 0


class Progress:
    """A tqdm bar over steps showing the latest loss and samples/s."""

    def __init__(self, total: int, initial: int = 0, desc: str = "train", unit: str = "step") -> None:
        self._bar = tqdm.tqdm(
            total=total, initial=initial, desc=desc, unit=unit, disable=not is_chief(), dynamic_ncols=True
        )

    def update(self, steps: int, **postfix: float) -> None:
        """Advance by `steps` and show `postfix` values (e.g. loss=..., samples_s=...)."""
        self._bar.set_postfix({k: _fmt(v) for k, v in postfix.items()}, refresh=False)
        self._bar.update(steps)

    def write(self, line: str) -> None:
        """Print a line without breaking the bar."""
        if is_chief():
            self._bar.write(line)

    def close(self) -> None:
        """Finish the bar."""
        self._bar.close()


def _fmt(v: float) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class Scalars:
    """TensorBoard event files written with tensorboardX (no TensorFlow needed)."""

    def __init__(self, logdir: str) -> None:
        self._writer = None
        if is_chief():
            from tensorboardX import SummaryWriter

            os.makedirs(logdir, exist_ok=True)
            self._writer = SummaryWriter(logdir=logdir)

    def write(self, step: int, values: Mapping[str, float]) -> None:
        """One scalar per name at `step` (names like "loss/rec", "train/lr")."""
        if self._writer is None:
            return
        for name, value in values.items():
            self._writer.add_scalar(name, float(value), global_step=int(step))
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class Throughput:
    """Samples per second between `mark()` calls, and over the whole run since `start()`."""

    def __init__(self) -> None:
        self._t0 = self._last = time.perf_counter()
        self._n0 = self._n_last = 0

    def start(self, samples: int = 0) -> None:
        """Begin timing now (call after compilation so it is not counted)."""
        self._t0 = self._last = time.perf_counter()
        self._n0 = self._n_last = samples

    def mark(self, samples: int) -> float:
        """Samples/s since the previous mark; `samples` is the running total."""
        now = time.perf_counter()
        rate = (samples - self._n_last) / max(now - self._last, 1e-9)
        self._last, self._n_last = now, samples
        return rate

    def exclude(self, seconds: float) -> None:
        """Leave `seconds` (spent on pictures, not training) out of the rates."""
        self._t0 += seconds
        self._last += seconds

    def overall(self, samples: int) -> float:
        """Samples/s since `start()`."""
        return (samples - self._n0) / max(self.seconds(), 1e-9)

    def seconds(self) -> float:
        """Seconds since `start()`, less the excluded time."""
        return time.perf_counter() - self._t0


def image_grid(rows: Mapping[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """Rows of uint8 [N,H,W,3] images (same N, H, W) -> one uint8 [R*H, N*W, 3] grid and row names."""
    names = list(rows)
    arrays = [np.asarray(rows[n]) for n in names]
    lines = [np.concatenate(list(a), axis=1) for a in arrays]  # each [H, N*W, 3]
    return np.concatenate(lines, axis=0), names


def reconstruction_rows(
    frame0: np.ndarray,
    frame1: np.ndarray,
    prediction: np.ndarray,
    max_items: int = 8,
    vae_reconstruction: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The paper's Fig. 6a rows: x_t, x_{t+k}, the decoded prediction and |x_{t+k} - prediction|.

    With `vae_reconstruction` (decode of the true latent) a row shows what the VAE alone gives.
    """
    n = min(max_items, len(frame0))
    f0, f1, pred = (np.asarray(a[:n], np.uint8) for a in (frame0, frame1, prediction))  # [n,H,W,3]
    diff = np.abs(f1.astype(np.int16) - pred.astype(np.int16)).astype(np.uint8)
    rows = {"x_t": f0, "x_t+k": f1}
    if vae_reconstruction is not None:
        rows["VAE(x_t+k)"] = np.asarray(vae_reconstruction[:n], np.uint8)
    return {**rows, "prediction": pred, "|difference|": diff}


def save_picture(path: str, rows: Mapping[str, np.ndarray], title: str = "") -> str | None:
    """Write a labelled grid of image rows as a PNG (atomically); returns the path (None off-chief)."""
    if not is_chief():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid, names = image_grid(rows)
    height, width = grid.shape[:2]
    n_rows = len(names)
    scale = max(1.0, 96.0 / (height / n_rows))  # at least ~1 inch per row
    fig, ax = plt.subplots(figsize=(max(2.0, width * scale / 96 + 1.2), height * scale / 96 + 0.4), dpi=96)
    ax.imshow(grid, interpolation="nearest")
    ax.set_yticks([(i + 0.5) * height / n_rows for i in range(n_rows)], names)
    ax.set_xticks([])
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    try:
        with files.atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path


def mean_metrics(history: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Average each metric over a window of per-step dicts."""
    if not history:
        return {}
    return {k: float(np.mean([h[k] for h in history])) for k in history[0]}


def first_nonfinite(history: Sequence[Mapping[str, float]], first_step: int, key: str = "loss") -> int | None:
    """Step number of the first entry whose `key` is NaN/Inf (entries are steps first_step, +1, ...)."""
    for i, h in enumerate(history):
        if not math.isfinite(float(h[key])):
            return first_step + i
    return None
