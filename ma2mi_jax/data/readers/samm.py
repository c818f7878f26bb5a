"""SAMM reader: `SAMM_Micro_FACS_Codes*.xlsx` + `SAMM/006/006_1_2/006_05562.jpg`.

Layout accepted (docs/datasets.md#micro-expression-sets-fine-tuning):
- sheet: `data.sheet`, or the one `SAMM_Micro_FACS_Codes*.xlsx|.csv` in the root. The header row
  (first cell `Subject`) is found by content: row 14 in v2 (13 description rows above), row 1 in
  other releases. Columns by name: Subject, Filename, Onset Frame, Apex Frame, Offset Frame,
  Estimated Emotion; "or" inside Action Units cells is never parsed.
- frames: `<root>/SAMM/<subject>/<Filename>/` (or `<root>/<subject>/...`), subject zero-padded to
  3 digits; frame-number padding in file names varies by clip (`006_05562.jpg`, `009_3577.jpg`),
  so frames are matched by parsed number.
- subject: 6 or "006" -> "006"; clip id "006/006_1_2".
- emotions: Anger, Contempt, Happiness, Surprise, Other (also "Others"), Disgust, Fear, Sadness,
  any case; the config maps "other" onto the class "others" with data.label_map.

Defect rules (ma2mi_jax/data/readers/micro_rules.py applies them and the ReadReport lists each case):
- apex outside onset..offset (`028_4_1`, `032_3_1`): the apex is kept as annotated and the range
  widened to contain it (offset moved to the apex, or onset to the clip's first frame); repaired.
- annotated past the frames on disk: offset clamped to the last frame; a missing onset or apex
  frame drops the clip.
- classes outside `class_names` (disgust, fear, sadness): dropped, "not in the 5-class protocol".
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from ma2mi_jax.data.media import frames as frames_lib
from ma2mi_jax.data.readers import micro_rules, sheets
from ma2mi_jax.data.records import MicroSample, ReadReport

NAME = "samm"
EMOTIONS = ("anger", "contempt", "happiness", "surprise", "other", "others", "disgust", "fear", "sadness")
SHEET_PATTERNS = ("SAMM_Micro_FACS_Codes*.xlsx", "SAMM_Micro_FACS_Codes*.xls", "SAMM_Micro_FACS_Codes*.csv")
COLUMNS = ("Subject", "Filename", "Onset Frame", "Apex Frame", "Offset Frame", "Estimated Emotion")


def subject_id(value: object) -> str:
    """Canonical subject: 6, "6", "006" -> "006"; ValueError otherwise."""
    number = sheets.cell_int(value)
    if number is None:
        raise ValueError(f"subject {value!r} is blank")
    return f"{number:03d}"


def frames_root(root: str) -> str:
    """The folder holding the `006/` subject folders: `<root>/SAMM` (nested or not), else the root."""
    inner = frames_lib.descend_nested(os.path.join(root, "SAMM"))
    return inner if os.path.isdir(inner) else root


def read(
    root: str,
    *,
    sheet: str = "",
    class_names: Sequence[str],
    label_map: Mapping[str, str] = {},
    strict: bool = True,
) -> tuple[list[MicroSample], ReadReport]:
    """Read SAMM under `root` into validated samples and a report of drops and repairs."""
    frames_lib.require_dir(root, "samm root")
    table = sheets.read_table(sheets.find_sheet(root, sheet, SHEET_PATTERNS, NAME), COLUMNS)
    base = frames_root(root)
    report = ReadReport(NAME)
    annotations = micro_rules.subject_folder_annotations(
        table, base, subject_id, ("Onset Frame", "Apex Frame", "Offset Frame"), report, strict
    )
    samples = micro_rules.make_samples(
        NAME, annotations, known=EMOTIONS, class_names=class_names, label_map=label_map,
        strict=strict, report=report,
    )  # fmt: skip
    micro_rules.require_some(samples, report, root)
    return samples, report
