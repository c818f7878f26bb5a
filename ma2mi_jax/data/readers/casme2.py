"""CASME II reader: `CASME2-coding-*.xlsx` + `Cropped/subNN/<Filename>/reg_imgN.jpg`.

Layout accepted (docs/datasets.md#micro-expression-sets-fine-tuning):
- sheet: `data.sheet`, or the one `CASME2-coding*.xlsx|.csv` / `CASME2_label*.xlsx|.csv` in the
  root; columns read by header name (Subject, Filename, OnsetFrame, ApexFrame, OffsetFrame,
  Estimated Emotion), blank columns ignored, header row found by content.
- frames: `Cropped/` (also nested `Cropped/Cropped/`), else `CASME2_RAW_selected/`; a clip is
  `<frames>/subNN/<Filename>/`, file names `reg_img46.jpg` / `img46.jpg`, the number being the
  annotation's frame number.
- subject: `1` or `01` or `sub01` in the sheet -> "sub01"; clip id "sub01/EP02_01f".

Defect rules (ma2mi_jax/data/readers/micro_rules.py applies them and the ReadReport lists each case):
- ApexFrame `/` or blank (`sub04/EP12_01f`): apex set to the middle frame of onset..offset; repaired.
- annotated past the frames on disk (`sub16/EP01_08`, annotated to 110, folder ends at 96):
  offset clamped to the last frame present; repaired. A missing onset or apex frame drops the clip.
- apex outside onset..offset: the apex is kept and the range widened to contain it (offset moved to
  the apex, or onset to the clip's first frame on disk); repaired.
- fear and sadness (and anything else outside `class_names`): dropped, "not in the 5-class protocol".
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from ma2mi_jax.data.media import frames as frames_lib
from ma2mi_jax.data.readers import micro_rules, sheets
from ma2mi_jax.data.records import DataError, MicroSample, ReadReport

NAME = "casme2"
EMOTIONS = ("happiness", "disgust", "repression", "surprise", "others", "other", "fear", "sadness")
SHEET_PATTERNS = ("CASME2-coding*.xlsx", "CASME2-coding*.xls", "CASME2-coding*.csv",
                  "CASME2_label*.xlsx", "CASME2_label*.xls", "CASME2_label*.csv")  # fmt: skip
COLUMNS = ("Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Estimated Emotion")
FRAME_DIRS = ("Cropped", "CASME2_RAW_selected", "CASME2_RAW")


def subject_id(value: object) -> str:
    """Canonical subject: 1, "01", "sub01" -> "sub01"; ValueError otherwise."""
    text = sheets.cell_text(value).lower()
    if text.startswith("sub"):
        text = text[3:]
    number = sheets.cell_int(text)
    if number is None:
        raise ValueError(f"subject {value!r} is blank")
    return f"sub{number:02d}"


def frames_root(root: str) -> str:
    """The folder holding `subNN/` clip folders: Cropped (nested or not), else the raw frames."""
    for name in FRAME_DIRS:
        path = frames_lib.descend_nested(os.path.join(root, name))
        if os.path.isdir(path):
            return path
    raise DataError(
        f"casme2: no frame folder in {root}: expected one of {', '.join(FRAME_DIRS)} "
        "(holding sub01/EP02_01f/reg_img46.jpg ...). Unpack the release there or fix data.root."
    )


def read(
    root: str,
    *,
    sheet: str = "",
    class_names: Sequence[str],
    label_map: Mapping[str, str] = {},
    strict: bool = True,
) -> tuple[list[MicroSample], ReadReport]:
    """Read CASME II under `root` into validated samples and a report of drops and repairs."""
    frames_lib.require_dir(root, "casme2 root")
    table = sheets.read_table(sheets.find_sheet(root, sheet, SHEET_PATTERNS, NAME), COLUMNS)
    base = frames_root(root)
    report = ReadReport(NAME)
    annotations = micro_rules.subject_folder_annotations(
        table, base, subject_id, ("OnsetFrame", "ApexFrame", "OffsetFrame"), report, strict
    )
    samples = micro_rules.make_samples(
        NAME, annotations, known=EMOTIONS, class_names=class_names, label_map=label_map,
        strict=strict, report=report,
    )  # fmt: skip
    micro_rules.require_some(samples, report, root)
    return samples, report
