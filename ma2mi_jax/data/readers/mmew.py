"""MMEW reader: `MMEW_Micro_Exp.xlsx` + `Micro_Expression/<emotion>/<Filename>/<n>.jpg`.

Layout accepted (docs/datasets.md#micro-expression-sets-fine-tuning):
- root: `MMEW_Final/` (a root that holds `MMEW_Final/` is followed into it), with
  `Micro_Expression/` (also nested `Micro_Expression/Micro_Expression/`).
- sheet: `data.sheet`, or the one `MMEW_Micro_Exp*.xlsx|.csv` in the root; columns by name:
  Subject, Filename, OnsetFrame, ApexFrame, OffsetFrame, Estimated Emotion.
- frames: `Micro_Expression/<emotion>/<Filename>/<n>.jpg`, `n` unpadded and equal to the sheet's
  frame numbers. The emotion folder is matched without regard to case; a clip filed under another
  emotion folder is found when its name is unique there.
- subject: as in the sheet ("S01", or a number written as text: 1 -> "1").
- clip id: the Filename, or "<emotion>/<Filename>" when the sheet repeats a Filename.

Defect rules: those of ma2mi_jax/data/readers/micro_rules.py (apex blank -> middle frame; offset past the
frames on disk -> clamped; apex outside onset..offset -> range widened; missing onset/apex frame
-> dropped), each listed in the ReadReport. "others" is dropped as not in the 6-class protocol.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Mapping, Sequence

from ma2mi_jax.data.media import frames as frames_lib
from ma2mi_jax.data.readers import micro_rules, sheets
from ma2mi_jax.data.records import DataError, MicroSample, ReadReport

NAME = "mmew"
EMOTIONS = ("happiness", "surprise", "anger", "disgust", "fear", "sadness", "others", "other")
SHEET_PATTERNS = ("MMEW_Micro_Exp*.xlsx", "MMEW_Micro_Exp*.xls", "MMEW_Micro_Exp*.csv")
COLUMNS = ("Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Estimated Emotion")


def dataset_root(root: str) -> str:
    """`root`, or `root/MMEW_Final` when the user pointed at the folder above it."""
    inner = os.path.join(root, "MMEW_Final")
    if not os.path.isdir(os.path.join(root, "Micro_Expression")) and os.path.isdir(inner):
        return inner
    return root


def clip_index(micro_dir: str) -> dict[str, list[tuple[str, str]]]:
    """Filename -> [(emotion folder name, clip folder path)] over every emotion folder."""
    index: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    for emotion in sorted(os.listdir(micro_dir)):
        edir = os.path.join(micro_dir, emotion)
        if not os.path.isdir(edir) or emotion.startswith("."):
            continue
        for clip in sorted(os.listdir(edir)):
            cdir = os.path.join(edir, clip)
            if os.path.isdir(cdir):
                index[clip].append((emotion, cdir))
    return index


def _locate(index: dict, filename: str, emotion: str) -> str | None:
    found = index.get(filename, [])
    same = [p for e, p in found if e.strip().lower() == emotion.strip().lower()]
    if len(same) == 1:
        return same[0]
    return found[0][1] if len(found) == 1 else None


def read(
    root: str,
    *,
    sheet: str = "",
    class_names: Sequence[str],
    label_map: Mapping[str, str] = {},
    strict: bool = True,
) -> tuple[list[MicroSample], ReadReport]:
    """Read MMEW under `root` into validated samples and a report of drops and repairs."""
    frames_lib.require_dir(root, "mmew root")
    root = dataset_root(root)
    micro_dir = frames_lib.descend_nested(os.path.join(root, "Micro_Expression"))
    if not os.path.isdir(micro_dir):
        raise DataError(
            f"mmew: {micro_dir} not found; data.root must be the MMEW_Final folder holding "
            "Micro_Expression/<emotion>/<clip>/<n>.jpg"
        )
    table = sheets.read_table(sheets.find_sheet(root, sheet, SHEET_PATTERNS, NAME), COLUMNS)
    index = clip_index(micro_dir)
    report = ReadReport(NAME)
    counts = collections.Counter(row.text("Filename") for row in table.rows)
    annotations = []
    for row in table.rows:
        filename, emotion = row.text("Filename"), row.text("Estimated Emotion")
        subject = row.text("Subject")
        clip_id = filename if counts[filename] == 1 else f"{emotion.strip().lower()}/{filename}"
        if not subject or not filename:
            micro_rules.bad_row(report, strict, clip_id or f"row {row.number}", table.where(row),
                          "Subject or Filename is blank")  # fmt: skip
            continue
        annotations.append(
            micro_rules.Annotation(
                where=table.where(row),
                clip_id=clip_id,
                subject=subject,
                folder=_locate(index, filename, emotion),
                expected_folder=os.path.join(micro_dir, emotion, filename),
                onset=row["OnsetFrame"],
                apex=row["ApexFrame"],
                offset=row["OffsetFrame"],
                emotion=emotion,
            )
        )
    samples = micro_rules.make_samples(
        NAME, annotations, known=EMOTIONS, class_names=class_names, label_map=label_map,
        strict=strict, report=report,
    )  # fmt: skip
    micro_rules.require_some(samples, report, root)
    return samples, report
