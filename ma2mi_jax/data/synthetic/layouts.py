"""How each release looks on disk, for the synthetic generator: counts, ids, names, sheets, paths.

One `Profile` per layout holds what the real release has (class counts, subject ids, emotion
spellings, clip naming, frame numbering); the writers put annotation sheets (.xlsx through
openpyxl, made byte-reproducible) and split CSVs exactly where docs/datasets.md says the
releases put them, and `frame_relpath` names every frame file.

Layouts (paths relative to the generator's `--out`, which is the reader's root):
  casme2  CASME2-coding-20190701.xlsx (Sheet1) + Cropped/sub01/EP02_01f/reg_img46.jpg
  samm    SAMM_Micro_FACS_Codes_v2.xlsx (13 description rows, header on row 14)
          + SAMM/006/006_1_2/006_05562.jpg
  mmew    MMEW_Micro_Exp.xlsx + Micro_Expression/<emotion>/<Filename>/<n>.jpg + Macro_Expression/
          (the root is the release's MMEW_Final folder)
  dfew    Clip/clip_224x224/00001/00001_00001.jpg (that folder name at every size)
          + EmoLabel_DataSplit/{train,test}(single-labeled)/set_1..5.csv
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import zipfile
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from ma2mi_jax.data.synthetic.action_units import Event

JPEG_QUALITY = 95
# Fixed timestamps make the .xlsx files byte-identical from run to run.
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)
_CORE_TIME = "2020-01-01T00:00:00Z"

DFEW_LABELS = {"happy": 1, "sad": 2, "neutral": 3, "angry": 4, "surprise": 5, "disgust": 6, "fear": 7}
# DFEW emotion -> AU table name (action_units.EMOTION_AUS).
DFEW_TO_AU_EMOTION = {
    "happy": "happiness",
    "sad": "sadness",
    "neutral": "neutral",
    "angry": "anger",
    "surprise": "surprise",
    "disgust": "disgust",
    "fear": "fear",
}


@dataclasses.dataclass(frozen=True)
class Profile:
    """What one release holds: subjects, classes and counts, frame numbering and rate."""

    layout: str
    kind: str  # "micro" | "macro"
    subjects: tuple[int, ...]
    counts: dict[str, int]  # sheet emotion spelling -> clips in the release
    first_frame: tuple[int, int]  # range of the first frame number of a clip
    frames: tuple[int, int]  # range of frames per clip (inclusive)
    identity_space: int  # keeps every data set's people distinct from every other's


PROFILES: dict[str, Profile] = {
    # CASME II 2014/2019 sheet: 255 clips, 26 subjects; the 5-class protocol keeps 246.
    "casme2": Profile(
        "casme2",
        "micro",
        tuple(range(1, 27)),
        {
            "others": 99,
            "disgust": 63,
            "happiness": 32,
            "repression": 27,
            "surprise": 25,
            "sadness": 7,
            "fear": 2,
        },
        (1, 160),
        (12, 20),
        1,
    ),
    # SAMM v2: 159 clips; subjects 006..037; the 5-class protocol keeps 136.
    "samm": Profile(
        "samm",
        "micro",
        tuple(range(6, 38)),
        {
            "Anger": 57,
            "Contempt": 12,
            "Happiness": 26,
            "Surprise": 15,
            "Other": 26,
            "Disgust": 9,
            "Fear": 8,
            "Sadness": 6,
        },
        (1000, 9000),
        (12, 20),
        2,
    ),
    # MMEW: 300 micro clips, 30 subjects; the 6-class protocol drops "others" (234 kept).
    "mmew": Profile(
        "mmew",
        "micro",
        tuple(range(1, 31)),
        {"happiness": 36, "surprise": 89, "anger": 8, "disgust": 72, "fear": 16, "sadness": 13, "others": 66},
        (1, 1),
        (12, 20),
        3,
    ),
    # DFEW-like quick-start set: 300 single-labelled clips, ~DFEW's class balance.
    "dfew": Profile(
        "dfew",
        "macro",
        tuple(range(1, 101)),
        {"happy": 66, "sad": 48, "neutral": 66, "angry": 51, "surprise": 33, "disgust": 6, "fear": 30},
        (1, 1),
        (16, 32),
        100,
    ),
}

SAMM_OBJECTIVE_CLASS = {
    "happiness": 1,
    "surprise": 2,
    "anger": 3,
    "contempt": 4,
    "disgust": 5,
    "fear": 6,
    "sadness": 7,
}


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """Everything about one generated clip that the sheets, paths and renderer need."""

    index: int  # position in the generation order
    layout: str
    subject: int  # as written in the sheet (CASME II 1..26, SAMM 6..37, MMEW 1..30, DFEW: person)
    filename: str  # the sheet's Filename (micro) or the clip number as text (DFEW "1")
    emotion: str  # the sheet's spelling (CASME II "others", SAMM "Other", DFEW "happy")
    au_emotion: str  # the AU table's name for it
    events: tuple[Event, ...]  # the first is the annotated (dominant) expression
    first_frame: int  # number of the first frame file
    num_frames: int
    seed: tuple[int, ...]  # entropy of this clip's own random stream
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def frame_numbers(self) -> list[int]:
        """Frame numbers on disk, in time order."""
        return [self.first_frame + i for i in range(self.num_frames)]

    @property
    def onset(self) -> int:
        """Annotated onset frame number."""
        return self.first_frame + self.events[0].onset

    @property
    def apex(self) -> int:
        """Annotated apex frame number."""
        return self.first_frame + self.events[0].apex

    @property
    def offset(self) -> int:
        """Annotated offset frame number."""
        return self.first_frame + self.events[0].offset


def clip_dir(spec: ClipSpec) -> str:
    """Folder of a clip's frames relative to the root."""
    if spec.layout == "casme2":
        return f"Cropped/sub{spec.subject:02d}/{spec.filename}"
    if spec.layout == "samm":
        return f"SAMM/{spec.subject:03d}/{spec.filename}"
    if spec.layout == "mmew":
        return f"Micro_Expression/{spec.emotion}/{spec.filename}"
    if spec.layout == "dfew":
        return f"Clip/clip_224x224/{int(spec.filename):05d}"
    raise ValueError(f"unknown layout {spec.layout!r}")


def frame_relpath(spec: ClipSpec, number: int) -> str:
    """Path of frame `number` of a clip relative to the root."""
    d = clip_dir(spec)
    if spec.layout == "casme2":
        return f"{d}/reg_img{number}.jpg"
    if spec.layout == "samm":
        width = spec.extra.get("pad", 5)
        return f"{d}/{spec.subject:03d}_{number:0{width}d}.jpg"
    if spec.layout == "mmew":
        return f"{d}/{number}.jpg"
    return f"{d}/{int(spec.filename):05d}_{number:05d}.jpg"


def clip_id(spec: ClipSpec) -> str:
    """The clip's id as the readers spell it ("sub01/EP02_01f", "006_1_2", "S01_03"/…, "00001")."""
    if spec.layout == "casme2":
        return f"sub{spec.subject:02d}/{spec.filename}"
    if spec.layout == "dfew":
        return f"{int(spec.filename):05d}"
    return spec.filename


def name_clip(layout: str, subject: int, taken: dict[str, int], rng: np.random.Generator) -> tuple[str, dict]:
    """A release-style Filename new for this subject, and extra sheet fields (SAMM inducement etc.).

    `taken` counts the names already given per stem (episode / inducement) for this subject.
    """
    extra: dict[str, Any] = {}
    if layout == "casme2":
        stem = f"EP{int(rng.integers(1, 20)):02d}"
        k = taken[stem] = taken.get(stem, 0) + 1
        return f"{stem}_{k:02d}" + ("f" if rng.random() < 0.4 else ""), extra
    if layout == "samm":
        code = int(rng.integers(1, 8))
        stem = f"{subject:03d}_{code}"
        k = taken[stem] = taken.get(stem, 0) + 1
        return f"{stem}_{k}", {"inducement": code, "pad": 5 if rng.random() < 0.8 else 4}
    if layout == "mmew":
        k = taken["S"] = taken.get("S", 0) + 1
        return f"S{subject:02d}_{k:02d}", extra
    raise ValueError(f"no clip names for layout {layout!r}")


def encode_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG bytes (default quality 95) of a uint8[H,W,3] RGB frame."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV failed to encode a JPEG frame")
    return buf.tobytes()


def write_frames(root: str, spec: ClipSpec, frames: np.ndarray, quality: int = JPEG_QUALITY) -> None:
    """Write a clip's frames uint8[T,H,W,3] as JPEG files (of `quality`) at their layout paths."""
    os.makedirs(os.path.join(root, clip_dir(spec)), exist_ok=True)
    for number, frame in zip(spec.frame_numbers, frames, strict=True):
        with open(os.path.join(root, frame_relpath(spec, number)), "wb") as f:
            f.write(encode_jpeg(frame, quality))


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
    """Write the layout's sheet or split CSVs into `root`; returns the written paths."""
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
