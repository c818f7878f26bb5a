"""The annotation files of the synthetic releases: sheets (.xlsx through openpyxl) and DFEW's split CSVs.

Each is written where docs/datasets.md says the release puts it; the .xlsx files are made
byte-reproducible (fixed timestamps). SMIC-HS has no annotation file: its clips run from onset to
offset and the emotion is the folder name.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from ma2mi_jax.data.synthetic.layouts import ClipSpec

# Fixed timestamps make the .xlsx files byte-identical from run to run.
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)
_CORE_TIME = "2020-01-01T00:00:00Z"
DFEW_LABELS = {"happy": 1, "sad": 2, "neutral": 3, "angry": 4, "surprise": 5, "disgust": 6, "fear": 7}


def write_xlsx(path: str, rows: Sequence[Sequence[Any]], title: str) -> None:
    """Write one sheet of rows (None = empty cell) as a byte-reproducible .xlsx file."""
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = title
    for row in rows:
        sheet.append(list(row))
    raw = io.BytesIO()
    book.save(raw)
    # openpyxl stamps the save time into docProps/core.xml and every zip entry: pin both.
    out = io.BytesIO()
    with zipfile.ZipFile(raw) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "docProps/core.xml":
                text = data.decode("utf-8")
                text = re.sub(r"(<dcterms:(?:created|modified)[^>]*>)[^<]*(<)", rf"\g<1>{_CORE_TIME}\2", text)
                data = text.encode("utf-8")
            info = zipfile.ZipInfo(item.filename, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o600 << 16
            dst.writestr(info, data)
    with open(path, "wb") as f:
        f.write(out.getvalue())


def _casme2_rows(specs: Sequence[ClipSpec]) -> list[list[Any]]:
    head = [
        "Subject",
        "Filename",
        None,
        "OnsetFrame",
        "ApexFrame",
        "OffsetFrame",
        None,
        "Action Units",
        "Estimated Emotion",
    ]
    rows: list[list[Any]] = [head]
    for s in specs:
        rows.append([s.subject, s.filename, None, s.onset, s.apex, s.offset, None, s.extra["aus"], s.emotion])
    return rows


def _samm_rows(specs: Sequence[ClipSpec]) -> list[list[Any]]:
    description = [
        ["SAMM Micro-Movement FACS Codes (synthetic replica of the release layout)"],
        [],
        ["Each row is one micro-movement; frame numbers refer to the image files of the clip folder."],
        ["Onset Frame: first frame of the movement"],
        ["Apex Frame: frame of highest intensity"],
        ["Offset Frame: last frame of the movement"],
        ["Duration: Offset Frame - Onset Frame + 1"],
        ["Micro: Micro or Macro"],
        ["Action Units: FACS codes, L/R = left/right side of the face"],
        ["Estimated Emotion: emotion assigned from the AUs and the inducement"],
        ["Objective Classes: I-VII after Davison et al. (2018)"],
        [],
        [],
    ]
    head = [
        "Subject",
        "Filename",
        "Inducement Code",
        "Onset Frame",
        "Apex Frame",
        "Offset Frame",
        "Duration",
        "Micro",
        "Action Units",
        "Estimated Emotion",
        "Objective Classes",
        "Notes",
    ]
    rows: list[list[Any]] = [*description, head]
    for s in specs:
        rows.append(
            [
                s.subject,
                s.filename,
                s.extra["inducement"],
                s.onset,
                s.apex,
                s.offset,
                s.offset - s.onset + 1,
                "Micro",
                s.extra["aus"],
                s.emotion,
                s.extra["objective"],
                None,
            ]
        )
    return rows


def _mmew_rows(specs: Sequence[ClipSpec]) -> list[list[Any]]:
    head = [
        "Subject",
        "Filename",
        "OnsetFrame",
        "ApexFrame",
        "OffsetFrame",
        "Action Units",
        "Estimated Emotion",
        "remarks",
    ]
    rows: list[list[Any]] = [head]
    for s in specs:
        rows.append([s.subject, s.filename, s.onset, s.apex, s.offset, s.extra["aus"], s.emotion, None])
    return rows


SHEETS = {
    "casme2": ("CASME2-coding-20190701.xlsx", "Sheet1", _casme2_rows),
    "samm": ("SAMM_Micro_FACS_Codes_v2.xlsx", "FACS_Movement_Only", _samm_rows),
    "mmew": ("MMEW_Micro_Exp.xlsx", "Sheet1", _mmew_rows),
}


def dfew_folds(num_clips: int, rng: np.random.Generator, num_folds: int = 5) -> list[list[int]]:
    """Clip numbers (1-based) of each DFEW test fold: a seeded partition into `num_folds` parts."""
    order = rng.permutation(num_clips) + 1
    return [sorted(int(v) for v in part) for part in np.array_split(order, num_folds)]


def write_annotations(
    root: str, layout: str, specs: Sequence[ClipSpec], rng: np.random.Generator
) -> list[str]:
    """Write the layout's sheet or split CSVs into `root` (SMIC-HS: none); returns the written paths."""
    if layout == "smic":
        return []
    if layout in SHEETS:
        name, title, make_rows = SHEETS[layout]
        path = os.path.join(root, name)
        write_xlsx(path, make_rows(specs), title)
        if layout == "mmew":
            os.makedirs(os.path.join(root, "Macro_Expression"), exist_ok=True)
        return [path]
    if layout != "dfew":
        raise ValueError(f"unknown layout {layout!r}")
    label = {int(s.filename): DFEW_LABELS[s.emotion] for s in specs}
    written = []
    for k, test in enumerate(dfew_folds(len(specs), rng), start=1):
        test_set = set(test)
        for part, members in (("train", [c for c in sorted(label) if c not in test_set]), ("test", test)):
            folder = os.path.join(root, "EmoLabel_DataSplit", f"{part}(single-labeled)")
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, f"set_{k}.csv")
            with open(path, "w", newline="") as f:
                f.write("video_name,label\n")
                f.writelines(f"{c},{label[c]}\n" for c in members)
            written.append(path)
    return written
