"""Planning: which clips exist, who is in them and what they express (no pixels)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ma2mi_jax.data.synthetic import action_units as aus_lib
from ma2mi_jax.data.synthetic import domain_gap, layouts
from ma2mi_jax.data.synthetic.action_units import Event
from ma2mi_jax.data.synthetic.knobs import Knobs
from ma2mi_jax.data.synthetic.layouts import PROFILES, ClipSpec

LAYOUTS = tuple(PROFILES)
LAYOUT_CODE = {name: i + 1 for i, name in enumerate(LAYOUTS)}


def _scaled_counts(counts: dict[str, int], scale: float) -> dict[str, int]:
    return {k: max(1, round(v * scale)) for k, v in counts.items()}


def _num_subjects(nominal: int, scale: float) -> int:
    return max(2, min(nominal, math.ceil(nominal * scale)))


def _assign_subjects(n_clips: int, subjects: Sequence[int], rng: np.random.Generator) -> list[int]:
    """Subject of each clip: everyone at least once, the rest unevenly (as in the releases)."""
    weights = rng.gamma(1.5, size=len(subjects))
    base = list(subjects)[: min(n_clips, len(subjects))]
    rest = rng.choice(len(subjects), size=n_clips - len(base), p=weights / weights.sum())
    out = base + [subjects[i] for i in rest]
    return [out[i] for i in rng.permutation(n_clips)]


def _micro_au_emotion(layout: str, emotion: str, rng: np.random.Generator) -> str:
    """The AU table name of a micro clip's emotion (SMIC-HS negative: one negative prototype, drawn)."""
    if layout != "smic":
        return emotion.lower()
    if emotion == "negative":
        return str(rng.choice(layouts.SMIC_NEGATIVE_AUS))
    return layouts.SMIC_TO_AU_EMOTION[emotion]


def _micro_event(emotion: str, num_frames: int, knobs: Knobs, rng: np.random.Generator) -> Event:
    onset = int(rng.integers(1, 4))
    apex = onset + int(rng.integers(3, max(4, (num_frames - onset) // 2 + 1)))
    offset = min(num_frames - 1, apex + int(rng.integers(3, num_frames)))
    gain = knobs.micro_intensity * float(rng.uniform(0.5, 1.5))
    aus = {k: v * gain for k, v in aus_lib.sample_aus(emotion, rng).items()}
    return Event(emotion, aus, onset, apex, offset)


def _macro_events(emotion: str, num_frames: int, knobs: Knobs, rng: np.random.Generator) -> list[Event]:
    """1-3 expressions; the first (labelled) is the longest and strongest."""
    events = []
    n = 1 + int(rng.choice(3, p=[0.4, 0.4, 0.2]))
    # Secondary expressions cover every AU: the prototypes (contempt's AU14 included) and the
    # micro sets' single-AU "others" pool.
    others = [e for e in aus_lib.EMOTION_AUS if e != "neutral"] + ["others"]
    for k in range(n):
        emo = emotion if k == 0 else str(rng.choice(others))
        length = (
            int(rng.integers(max(6, num_frames // 2), num_frames + 1)) if k == 0 else int(rng.integers(5, 10))
        )
        start = int(rng.integers(0, num_frames - length + 1))
        apex = start + int(rng.integers(2, max(3, length - 2)))
        gain = (
            knobs.macro_intensity
            * float(rng.uniform(0.6, 1.4))
            * (1.0 if k == 0 else float(rng.uniform(0.3, 0.6)))
        )
        if emo == "neutral":
            gain *= 0.4
        aus = {au: v * gain for au, v in aus_lib.sample_aus(emo, rng).items()}
        events.append(Event(emo, aus, start, apex, start + length - 1))
    return events


def plan(
    layout: str,
    seed: int = 0,
    clips_scale: float = 1.0,
    knobs: Knobs | None = None,
    macro_gap: Sequence[str] = (),
) -> list[ClipSpec]:
    """Every clip of a layout: subject, names, emotion, AU events and frame numbers (no pixels).

    `macro_gap`: domain-gap factors (`domain_gap.FACTORS`) of a macro layout's clips (the plan's draws
    do not depend on them); a micro layout refuses them."""
    if layout not in PROFILES:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if clips_scale <= 0:
        raise ValueError(f"clips_scale must be > 0, got {clips_scale}")
    gap = domain_gap.parse(macro_gap)
    domain_gap.check_layout(layout, gap)
    knobs = knobs or Knobs()
    prof = PROFILES[layout]
    rng = np.random.default_rng(np.random.SeedSequence([seed, LAYOUT_CODE[layout]]))
    counts = _scaled_counts(prof.counts, clips_scale)
    emotions = [e for e, n in counts.items() for _ in range(n)]
    emotions = [emotions[i] for i in rng.permutation(len(emotions))]
    subjects = prof.subjects[: _num_subjects(len(prof.subjects), clips_scale)]
    who = _assign_subjects(len(emotions), subjects, rng)
    taken: dict[int, dict[str, int]] = {}
    specs = []
    for i, (emotion, subject) in enumerate(zip(emotions, who, strict=True)):
        num_frames = int(rng.integers(prof.frames[0], prof.frames[1] + 1))
        first = int(rng.integers(prof.first_frame[0], prof.first_frame[1] + 1))
        extra: dict[str, Any]
        if prof.kind == "micro":
            au_emotion = _micro_au_emotion(layout, emotion, rng)
            name, extra = layouts.name_clip(layout, subject, taken.setdefault(subject, {}), rng, emotion)
            events = [_micro_event(au_emotion, num_frames, knobs, rng)]
            if layout == "smic":  # the release's clips are cut from onset to offset
                events = [dataclasses.replace(events[0], onset=0, offset=num_frames - 1)]
        else:
            au_emotion = layouts.DFEW_TO_AU_EMOTION[emotion]
            name, extra = str(i + 1), {}
            events = _macro_events(au_emotion, num_frames, knobs, rng)
        extra["aus"] = aus_lib.au_code(events[0].aus) or "/"
        if layout == "samm":
            extra["objective"] = layouts.SAMM_OBJECTIVE_CLASS.get(au_emotion, int(rng.integers(1, 8)))
        specs.append(
            ClipSpec(
                i,
                layout,
                subject,
                name,
                emotion,
                au_emotion,
                tuple(events),
                first,
                num_frames,
                (seed, LAYOUT_CODE[layout], i),
                extra,
            )
        )
    return [domain_gap.apply(spec, gap) for spec in specs] if gap else specs
