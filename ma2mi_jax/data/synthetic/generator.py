"""Procedural micro/macro-expression data sets in the official CASME II, SAMM, MMEW, SMIC-HS, DFEW layouts.

    python scripts/generate_synthetic.py --out data/synthetic/casme2 --layout casme2
    python scripts/generate_synthetic.py --out data/synthetic/dfew --layout dfew
    python scripts/generate_synthetic.py --out data/synthetic/megc2019 --layout megc2019  # 3 sets

The layouts, flags, knobs, determinism and users of the generator: README.md next to this file.

Clips are planned (`planning`), faces drawn per person (`faces`), moved by facial action units
(`action_units`: smooth displacement fields anchored to landmarks, onset -> apex -> offset
envelope, cv2.remap warping) and rendered with head motion, light and noise (`rendering`), then
written as JPEG frames plus the release's annotation sheet or split CSVs (`layouts`), so the real
readers and pipelines are what runs on them. The difficulty knobs are in `knobs`, the calibration
proxy in `calibrate`.

- Micro sets (casme2, samm, mmew, smic): the releases' class counts and subject ids (`clips_scale`
  shrinks them), 12-20 frames per clip, one expression whose apex moves skin by about
  `micro_intensity` pixels at 64x64 (x0.5..1.5 per clip, scaled with the image size), nearly
  static heads (sub-pixel jitter), lighting drift, sensor noise and blinks as distractors.
- Macro set (dfew): many people (an identity space disjoint from the micro sets'), 16-32 frames,
  1-3 expressions per clip at `macro_intensity` pixels, larger head motion; the label of the
  dominant expression goes into the split CSVs for the supervised baseline. Secondary expressions
  are drawn from every prototype (contempt, with AU14, included) and from the micro sets'
  single-AU "others" pool, so every AU a micro class uses occurs in the macro set
  (tests/test_synthetic.py checks it).
- Determinism: the plan comes from `SeedSequence([seed, layout])`, each clip draws from its own
  stream `[seed, layout, clip index]` and each frame from `[..., frame]`, so the output does not
  depend on the number of workers; .xlsx files carry fixed timestamps. Same seed, same bytes.
- Output is written to `.<out>.tmp-XXXX` and renamed to `<out>` at the end; a non-empty `<out>`
  is refused unless `--overwrite`. `preview.png` (onset | apex | |apex - onset| per class, or a
  macro strip) and `synthetic.json` (the arguments and every clip's AUs) land in the root.
- Domain gap (`macro_gap`, `--domain_gap`): the macro set only, in the wild instead of the lab
  look (other faces, lower resolution, heavy JPEG, lighting, 25 fps timing), one factor at a time
  (`domain_gap`); without it the bytes are the in-domain benchmark's.
- `--workers N` renders with a process pool (same bytes); the default renders serially, which at
  64 px is quicker than starting a pool on busy cores (docs/decisions.md#serial-data-generation).

Knobs (`Knobs`, one command-line flag each): expression amplitude (`micro_intensity`,
`macro_intensity`), head translation and rotation over a clip (`*_jitter`, `*_rotation`), sensor
noise and JPEG quality (`noise` and `micro_jpeg_quality` for the micro sets, `macro_noise` and
`macro_jpeg_quality` for the macro set), lighting drift and blinks. The micro sets' defaults are
calibrated so that a from-scratch classifier lands clearly above chance and clearly below perfect in
a LOSO at the quick-start size, leaving room for a gain from pre-training; the macro set's sensor is
quieter than theirs (docs/decisions.md#difficulty-of-the-synthetic-micro-sets,
docs/decisions.md#quieter-macro-sensor). `scripts/generate_synthetic.py --calibrate` measures that
difficulty with two proxies (`calibrate.proxy_loso`, needs scikit-learn): a ridge classifier on
(apex - onset) pixels and a logistic regression on optical flow.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence

import cv2
import numpy as np
from tqdm import tqdm

from ma2mi_jax import errors, files
from ma2mi_jax.data.readers import megc2019
from ma2mi_jax.data.synthetic import annotation_files, domain_gap, layouts
from ma2mi_jax.data.synthetic.knobs import REFERENCE_SIZE, Knobs
from ma2mi_jax.data.synthetic.layouts import PROFILES, ClipSpec
from ma2mi_jax.data.synthetic.planning import LAYOUT_CODE, plan
from ma2mi_jax.data.synthetic.rendering import render_clip

# Several layouts written side by side under one root, in the folders their composite reader expects.
COMPOSITES: dict[str, dict[str, str]] = {"megc2019": dict(megc2019.FOLDERS)}


def _render_and_write(args: tuple[str, ClipSpec, int, Knobs]) -> tuple[int, np.ndarray, np.ndarray]:
    root, spec, size, knobs = args
    frames = render_clip(spec, size, knobs)
    micro = PROFILES[spec.layout].kind == "micro"
    quality = knobs.micro_jpeg_quality if micro else knobs.macro_jpeg_quality
    layouts.write_frames(root, spec, frames, int(quality))
    a = spec.events[0]
    return spec.index, frames[a.onset], frames[a.apex]


def _progress(total: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="clip", disable=not enabled, file=sys.stderr)


def _check_out(out: str, overwrite: bool) -> None:
    """ExistsError unless `out` is missing, an empty folder, or a folder `overwrite` allows replacing."""
    out = os.path.abspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise errors.ExistsError(f"--out {out} exists and is not a folder; choose another path")
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise errors.ExistsError(
            f"--out {out} exists and is not empty; pass --overwrite to replace it or choose another path"
        )


def generate(
    layout: str,
    out: str,
    size: int = 64,
    seed: int = 0,
    *,
    clips_scale: float = 1.0,
    knobs: Knobs | None = None,
    overwrite: bool = False,
    workers: int = 0,
    progress: bool = True,
    preview: bool = True,
    macro_gap: Sequence[str] = (),
) -> list[ClipSpec]:
    """Generate one layout into `out` (atomically) and return the clips' specs.

    `macro_gap`: domain-gap factors of the macro set (`domain_gap.FACTORS`; ConfigError for a
    micro layout or an unknown factor); recorded in synthetic.json.
    """
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    knobs = knobs or Knobs()
    gap = domain_gap.parse(macro_gap)
    specs = plan(layout, seed, clips_scale, knobs, gap)
    _check_out(out, overwrite)
    with files.atomic_dir(out) as tmp:
        jobs = [(tmp, s, size, knobs) for s in specs]
        pairs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        with _progress(len(specs), f"{layout} {size}px", progress) as bar:
            if workers > 1:
                import multiprocessing

                with multiprocessing.get_context("spawn").Pool(workers) as pool:
                    for idx, on, ap in pool.imap_unordered(_render_and_write, jobs, chunksize=4):
                        pairs[idx] = (on, ap)
                        bar.update()
            else:
                for job in jobs:
                    idx, on, ap = _render_and_write(job)
                    pairs[idx] = (on, ap)
                    bar.update()
        rng = np.random.default_rng(np.random.SeedSequence([seed, LAYOUT_CODE[layout], 99]))
        annotation_files.write_annotations(tmp, layout, specs, rng)
        _write_manifest(tmp, layout, size, seed, clips_scale, knobs, specs, gap)
        if preview:
            cv2.imwrite(
                os.path.join(tmp, "preview.png"),
                cv2.cvtColor(_preview(specs, pairs, size, knobs), cv2.COLOR_RGB2BGR),
            )
    return specs


def generate_composite(
    name: str,
    out: str,
    size: int = 64,
    seed: int = 0,
    *,
    clips_scale: float = 1.0,
    knobs: Knobs | None = None,
    overwrite: bool = False,
    workers: int = 0,
    progress: bool = True,
    preview: bool = True,
) -> dict[str, list[ClipSpec]]:
    """Generate every layout of composite `name` (megc2019: CASME2/, SAMM/, SMIC/) under `out`, atomically.

    Each layout is the one `generate` writes alone (same seed, same bytes); returns layout -> specs.
    """
    if name not in COMPOSITES:
        raise ValueError(f"unknown composite {name!r}; choose one of {', '.join(COMPOSITES)}")
    _check_out(out, overwrite)
    specs = {}
    with files.atomic_dir(out) as tmp:
        for layout, folder in COMPOSITES[name].items():
            specs[layout] = generate(
                layout, os.path.join(tmp, folder), size, seed, clips_scale=clips_scale, knobs=knobs,
                workers=workers, progress=progress, preview=preview,
            )  # fmt: skip
    return specs


def run(
    layout: str,
    out: str,
    size: int = 64,
    seed: int = 0,
    *,
    clips_scale: float = 1.0,
    knobs: Knobs | None = None,
    overwrite: bool = False,
    workers: int = 0,
    progress: bool = True,
    preview: bool = True,
    macro_gap: Sequence[str] = (),
) -> str:
    """`generate` (or `generate_composite`) for scripts/generate_synthetic.py: returns the line it prints."""
    start = time.perf_counter()
    gap = domain_gap.parse(macro_gap)
    domain_gap.check_layout(layout, gap)
    options = {"clips_scale": clips_scale, "knobs": knobs, "overwrite": overwrite, "workers": workers,
               "progress": progress, "preview": preview}  # fmt: skip
    if layout in COMPOSITES:
        parts = generate_composite(layout, out, size, seed, **options)
        specs = [s for part in parts.values() for s in part]
    else:
        specs = generate(layout, out, size, seed, **options, macro_gap=gap)
    frames = sum(s.num_frames for s in specs)
    look = f", domain gap {','.join(gap)}" if gap else ""
    return (
        f"wrote {len(specs)} clips ({frames} frames, {size}px, layout {layout}{look}) to "
        f"{os.path.abspath(out)} in {time.perf_counter() - start:.1f}s"
    )


def _write_manifest(
    root: str,
    layout: str,
    size: int,
    seed: int,
    clips_scale: float,
    knobs: Knobs,
    specs: list[ClipSpec],
    gap: tuple[str, ...] = (),
) -> None:
    """synthetic.json: the arguments, the knobs, the domain gap if any, every clip's frames and AU events."""
    px = size / REFERENCE_SIZE
    clips = [
        {
            "clip": layouts.clip_id(s),
            "dir": layouts.clip_dir(s),
            "subject": s.subject,
            "emotion": s.emotion,
            "onset": s.onset,
            "apex": s.apex,
            "offset": s.offset,
            "frames": [s.first_frame, s.first_frame + s.num_frames - 1],
            "events": [
                {
                    "emotion": e.emotion,
                    "onset": e.onset,
                    "apex": e.apex,
                    "offset": e.offset,
                    "aus_px": {k: round(v * px, 4) for k, v in e.aus.items()},
                }
                for e in s.events
            ],
        }
        for s in specs
    ]
    meta = {
        "generator": "ma2mi_jax.data.synthetic.generator",
        "layout": layout,
        "size": size,
        "seed": seed,
        "clips_scale": clips_scale,
        "knobs": dataclasses.asdict(knobs),
        **({"macro_gap": list(gap)} if gap else {}),  # absent in the in-domain benchmark (same bytes)
        "clips": clips,
    }
    with open(os.path.join(root, "synthetic.json"), "w") as f:
        json.dump(meta, f, indent=1)


def _label(img: np.ndarray, text: str) -> np.ndarray:
    img = img.copy()
    cv2.putText(img, text, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 0), 1, cv2.LINE_AA)
    return img


def _preview(
    specs: Sequence[ClipSpec],
    pairs: dict[int, tuple[np.ndarray, np.ndarray]],
    size: int,
    knobs: Knobs,
    per_class: int = 3,
) -> np.ndarray:
    """uint8 RGB picture: per class, `per_class` clips as onset | apex | |apex - onset| x gain."""
    tile = max(96, size)

    def up(img: np.ndarray) -> np.ndarray:
        return cv2.resize(img, (tile, tile), interpolation=cv2.INTER_NEAREST)

    micro = PROFILES[specs[0].layout].kind == "micro"
    rows = []
    if micro:
        gain = 255.0 / max(8.0, 6 * knobs.noise)
        for emotion in dict.fromkeys(s.emotion for s in specs):
            row = []
            for s in [s for s in specs if s.emotion == emotion][:per_class]:
                on, ap = pairs[s.index]
                diff = np.abs(ap.astype(np.float32) - on.astype(np.float32)).mean(-1) * gain
                diff = np.repeat(np.clip(diff, 0, 255).astype(np.uint8)[..., None], 3, -1)
                row += [
                    _label(up(on), f"{emotion[:9]} on"),
                    _label(up(ap), f"apex {s.extra['aus']}"),
                    up(diff),
                ]
            row += [np.zeros((tile, tile, 3), np.uint8)] * (3 * per_class - len(row))
            rows.append(np.concatenate(row, 1))
    else:
        for s in specs[:6]:
            frames = render_clip(s, size, knobs)
            idx = np.linspace(0, len(frames) - 1, 8).round().astype(int)
            strip = [_label(up(frames[i]), f"{s.emotion} t{i}" if i == 0 else f"t{i}") for i in idx]
            rows.append(np.concatenate(strip, 1))
    return np.concatenate(rows, 0)
