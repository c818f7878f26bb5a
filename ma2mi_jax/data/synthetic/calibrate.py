"""Calibration proxy: how hard a synthetic micro set is for simple from-scratch classifiers.

A from-scratch classifier on (onset, apex) pairs should land clearly above chance and clearly
below perfect in a LOSO at the quick-start size, so that a gain from pre-training can show. Two
proxies, not the project's trainer, measure it on a generated set: `diff_ridge`, a ridge
classifier on standardised grey (apex - onset) pixels, and `flow_logreg`, a logistic regression
on Farneback optical flow pooled on an 8x8 grid; UF1 / UAR / accuracy are pooled over the folds.
`python scripts/generate_synthetic.py --calibrate [knob flags]` runs them (needs scikit-learn).
The defaults' figures and each knob's effect: docs/decisions.md#difficulty-of-the-synthetic-micro-sets.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from ma2mi_jax.data.synthetic.knobs import Knobs
from ma2mi_jax.data.synthetic.layouts import ClipSpec
from ma2mi_jax.data.synthetic.planning import plan
from ma2mi_jax.data.synthetic.rendering import render_clip


def onset_apex_pairs(specs: Sequence[ClipSpec], size: int, knobs: Knobs) -> tuple[np.ndarray, np.ndarray]:
    """Onset and apex frames uint8[N,H,W,3] of every clip, rendered in memory."""
    on, ap = [], []
    for s in specs:
        a = s.events[0]
        f = render_clip(s, size, knobs, frames=(a.onset, a.apex))
        on.append(f[0])
        ap.append(f[1])
    return np.stack(on), np.stack(ap)


def _flow_grid(on: np.ndarray, ap: np.ndarray, cells: int = 8) -> np.ndarray:
    """Farneback optical flow onset -> apex, averaged over a cells x cells grid: float32[N, cells*cells*2]."""
    out = []
    for a, b in zip(on, ap, strict=True):
        g0, g1 = (cv2.cvtColor(v, cv2.COLOR_RGB2GRAY) for v in (a, b))
        flow = cv2.calcOpticalFlowFarneback(g0, g1, None, 0.5, 2, 9, 3, 5, 1.1, 0)  # [H,W,2]
        out.append(cv2.resize(flow, (cells, cells), interpolation=cv2.INTER_AREA).reshape(-1))
    return np.stack(out)


def _loso_predict(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, make_model: Callable[[], Any]
) -> np.ndarray:
    pred = np.empty_like(y)
    for g in np.unique(groups):
        test = groups == g
        mu, sd = x[~test].mean(0), x[~test].std(0) + 1e-3
        model = make_model()
        model.fit((x[~test] - mu) / sd, y[~test])
        pred[test] = model.predict((x[test] - mu) / sd)
    return pred


def proxy_loso(
    layout: str = "casme2",
    size: int = 64,
    seed: int = 0,
    knobs: Knobs | None = None,
    clips_scale: float = 1.0,
    classes: Sequence[str] = ("happiness", "disgust", "repression", "surprise", "others"),
) -> dict[str, dict[str, float]]:
    """Calibration proxies, LOSO on (onset, apex) pairs: UF1/UAR/accuracy of two simple models.

    "diff_ridge": ridge classifier on standardised grey (apex - onset) pixels (no motion prior);
    "flow_logreg": logistic regression on Farneback flow averaged over an 8x8 grid (a hand-made
    motion feature, in the spirit of MDMO). Classes are balanced in both; needs scikit-learn.
    """
    from sklearn.linear_model import LogisticRegression, RidgeClassifier
    from sklearn.metrics import f1_score, recall_score

    knobs = knobs or Knobs()
    specs = [s for s in plan(layout, seed, clips_scale, knobs) if s.emotion.lower() in classes]
    on, ap = onset_apex_pairs(specs, size, knobs)
    y = np.array([list(classes).index(s.emotion.lower()) for s in specs])
    groups = np.array([s.subject for s in specs])
    diff = (ap.astype(np.float32) - on.astype(np.float32)).mean(-1).reshape(len(specs), -1)  # [N,H*W]
    models = {
        "diff_ridge": (diff, lambda: RidgeClassifier(alpha=1000.0, class_weight="balanced")),
        "flow_logreg": (
            _flow_grid(on, ap),
            lambda: LogisticRegression(C=0.05, max_iter=500, class_weight="balanced"),
        ),
    }
    out = {}
    for name, (x, make) in models.items():
        pred = _loso_predict(x, y, groups, make)
        out[name] = {
            "uf1": round(float(f1_score(y, pred, average="macro")), 3),
            "uar": round(float(recall_score(y, pred, average="macro")), 3),
            "accuracy": round(float((pred == y).mean()), 3),
        }
    out["samples"] = {"n": len(y), "subjects": len(np.unique(groups))}
    return out


def run(
    layout: str = "casme2",
    size: int = 64,
    seed: int = 0,
    knobs: Knobs | None = None,
    clips_scale: float = 1.0,
) -> str:
    """`proxy_loso` for `generate_synthetic.py --calibrate`: its result and run time as one JSON line."""
    start = time.perf_counter()
    # SMIC-HS has only its three classes; the other micro layouts are measured on CASME II's five.
    only = {"classes": ("negative", "positive", "surprise")} if layout == "smic" else {}
    result = proxy_loso(layout, size, seed, knobs, clips_scale, **only)
    return json.dumps({**result, "seconds": round(time.perf_counter() - start, 1)})
