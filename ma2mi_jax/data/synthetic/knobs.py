"""The difficulty knobs of the synthetic sets, one command-line flag each.

Micro sets: expression amplitude (`micro_intensity`), head jitter and rotation, sensor noise and
JPEG quality, lighting drift and blinks as distractors; their defaults are calibrated
(`calibrate`, docs/decisions.md#difficulty-of-the-synthetic-micro-sets). The macro set has its own
amplitude, motion, noise and JPEG knobs: its sensor is quieter than the micro sets', so that the
pretext task is about the expression rather than the nuisances
(docs/decisions.md#quieter-macro-sensor). Secondary macro expressions are drawn from every
prototype and from the micro sets' single-AU "others" pool, so every AU a micro class uses occurs
in the macro set (tests/test_synthetic.py checks it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

REFERENCE_SIZE = 64  # pixel amounts (intensity, jitter) are given at this image size


def _knob(default: float, text: str) -> Any:
    """A Knobs field whose help text the script shows for its flag."""
    return dataclasses.field(default=default, metadata={"help": text})


@dataclasses.dataclass(frozen=True)
class Knobs:
    """Difficulty knobs; pixel amounts are at 64x64 and scale with the image size."""

    micro_intensity: float = _knob(
        1.0, "Apex displacement peak of a micro expression, pixels at 64x64 (x U(0.5, 1.5) per clip)."
    )
    macro_intensity: float = _knob(
        5.0, "Apex displacement peak of a macro expression, pixels at 64x64 (x U(0.6, 1.4) per clip)."
    )
    micro_jitter: float = _knob(0.4, "Head translation over a micro clip, pixels at 64x64.")
    macro_jitter: float = _knob(2.0, "Head translation over a macro clip, pixels at 64x64.")
    micro_rotation: float = _knob(0.4, "Head rotation over a micro clip, degrees.")
    macro_rotation: float = _knob(3.0, "Head rotation over a macro clip, degrees.")
    noise: float = _knob(2.0, "Sensor noise standard deviation of the micro sets, grey levels.")
    macro_noise: float = _knob(1.0, "Sensor noise standard deviation of the macro set, grey levels.")
    micro_jpeg_quality: float = _knob(95, "JPEG quality of the micro sets' frames.")
    macro_jpeg_quality: float = _knob(98, "JPEG quality of the macro set's frames.")
    light_drift: float = _knob(0.03, "Relative change of brightness and light direction over a clip.")
    blink_prob: float = _knob(
        0.3, "Chance that a micro clip holds a blink; a macro clip blinks this often per 16 frames."
    )
