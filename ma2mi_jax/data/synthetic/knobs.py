"""The difficulty knobs of the synthetic sets.

Pre-training benchmark (the macro set). The pretext task has to be learnable from the frame
difference and about the expression, not about nuisances; measured with the pre-training
diagnostics (`train/diagnostics.py`, held-out pairs, 300 steps of configs/synthetic_pretrain.py)
and the linear probe (`scripts/probe.py`), runs and figures in docs/results.md:
- With the first release's knobs (sensor noise 2 grey levels and JPEG quality 95 in both kinds of
  set) about half of the latent copy error L1(z_t, z_{t+k}) came from nuisances: the same clips
  rendered without noise, JPEG, head motion and lighting drift halve it (0.042 -> 0.022). The
  macro set now has its own knobs, `macro_noise` 1.0 and `macro_jpeg_quality` 98; the micro sets
  keep noise 2 and quality 95, so their difficulty (and the calibration in calibrate.py) is unchanged.
- Secondary macro expressions are drawn from every prototype (contempt, with AU14, included) and
  from the micro sets' single-AU "others" pool, so every AU a micro class uses occurs in the
  macro set (tests/test_synthetic.py checks it).
- Still macro: expressions of 5 px x U(0.6, 1.4) (micro: 1 px x U(0.5, 1.5)), 1-3 per clip, head
  jitter 2 px and rotation 3 degrees (micro: 0.4 px, 0.4 degrees).
- What pre-training learns here does describe 1-px expressions: on a micro set with every
  nuisance off (`--noise 0 --micro_jpeg_quality 100 --micro_jitter 0 --micro_rotation 0
  --light_drift 0 --blink_prob 0`) frozen pre-trained features beat random ones by +0.21 UF1 and
  fine-tuning from them beats scratch by +0.06 (5-fold) / +0.04 (LOSO); with the micro sets'
  nuisances, by neither. The micro sets keep their nuisances (their difficulty is calibrated
  in calibrate.py; without them scratch reaches 0.74); pre-training at the micro sets' sensor
  noise or at 1 px did not help.
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
