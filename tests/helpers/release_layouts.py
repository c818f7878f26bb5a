"""Tiny on-disk copies of the six data sets' release layouts, written by the tests themselves.

Images are 8x8 JPEGs, videos 16x16 MJPG .avi files; sheets carry the releases' headers and quirks
(CASME II blank columns, SAMM's description rows above the header, subject `1` vs `01`, ...).
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import openpyxl

CASME2_HEADER = ("Subject", "Filename", None, "OnsetFrame", "ApexFrame", "OffsetFrame", None,
                 "Action Units", "Estimated Emotion")  # fmt: skip
SAMM_HEADER = ("Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame",
               "Duration", "Micro", "Action Units", "Estimated Emotion", "Objective Classes",
               "Notes")  # fmt: skip
MMEW_HEADER = ("Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units",
               "Estimated Emotion", "remarks")  # fmt: skip


def write_image(path: str, value: int = 128, size: int = 8) -> str:
    """Write a small grey JPEG (creating folders); returns the path."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = np.full((size, size, 3), value % 256, np.uint8)
    assert cv2.imwrite(path, img), path
    return path


def write_video(path: str, num_frames: int, size: int = 16) -> str:
    """Write a small MJPG .avi with `num_frames` frames; returns the path."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (size, size))
    assert writer.isOpened(), path
    for i in range(num_frames):
        writer.write(np.full((size, size, 3), (i * 30) % 256, np.uint8))
    writer.release()
    return path


def write_garbage(path: str, data: bytes = b"not an image at all" * 4) -> str:
    """Overwrite/create `path` with bytes no decoder accepts."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def write_xlsx(path: str, rows: Sequence[Sequence[Any]], title: str = "Sheet1") -> str:
    """Write rows (lists of cell values) to a one-sheet .xlsx file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    book = openpyxl.Workbook()
    ws = book.active
    ws.title = title
    for row in rows:
        ws.append(list(row))
    book.save(path)
    return path


def write_csv(path: str, rows: Sequence[Sequence[Any]]) -> str:
    """Write rows to a comma-separated file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["" if c is None else c for c in r] for r in rows])
    return path


def write_frames(folder: str, numbers: Sequence[int], fmt: str) -> list[str]:
    """One tiny JPEG per frame number, named by `fmt` (e.g. "reg_img{n}.jpg")."""
    return [write_image(os.path.join(folder, fmt.format(n=n)), value=n * 7) for n in numbers]


@dataclasses.dataclass
class MicroClip:
    """One annotated clip of a fixture: the sheet cells and the frames written on disk."""

    subject: Any  # the sheet cell as written (1, "01", 6, "S01", ...)
    filename: str
    onset: Any
    apex: Any
    offset: Any
    emotion: str
    disk: tuple[int, int] | None = None  # inclusive range of frames written; None: (onset, offset)
    aus: str = "AU4"
    no_folder: bool = False  # write no clip folder at all

    def numbers(self) -> list[int]:
        """The frame numbers written on disk for this clip."""
        lo, hi = self.disk if self.disk is not None else (self.onset, self.offset)
        return list(range(lo, hi + 1))


def casme2_rows(clips: Sequence[MicroClip]) -> list[tuple]:
    """The CASME II sheet: header with two blank columns, then one row per clip."""
    rows = [CASME2_HEADER]
    rows += [(c.subject, c.filename, None, c.onset, c.apex, c.offset, None, c.aus, c.emotion) for c in clips]
    return rows


def build_casme2(
    root: str,
    clips: Sequence[MicroClip],
    *,
    sheet: str | None = "CASME2-coding-20190701.xlsx",
    frames_dir: str = "Cropped",
    fmt: str = "reg_img{n}.jpg",
) -> str:
    """CASME II layout under `root`: the sheet (if named) and `<frames_dir>/subNN/<Filename>/`."""
    os.makedirs(root, exist_ok=True)
    for c in clips:
        if c.no_folder:
            continue
        sub = c.subject if str(c.subject).startswith("sub") else f"sub{int(c.subject):02d}"
        write_frames(os.path.join(root, frames_dir, sub, c.filename), c.numbers(), fmt)
    if sheet:
        write_xlsx(os.path.join(root, sheet), casme2_rows(clips))
    return root


def samm_rows(clips: Sequence[MicroClip], description_rows: int = 13) -> list[tuple]:
    """SAMM v2 sheet: `description_rows` rows of prose, the header, then one row per clip."""
    rows: list[tuple] = [("SAMM Micro-Movement Database, FACS codes",)]
    rows += [(f"description line {i}", None, "notes") for i in range(1, description_rows)]
    rows = rows[:description_rows]
    rows.append(SAMM_HEADER)
    for c in clips:
        duration = c.offset - c.onset if isinstance(c.offset, int) and isinstance(c.onset, int) else None
        rows.append((c.subject, c.filename, "1_2", c.onset, c.apex, c.offset, duration, "Micro", c.aus,
                     c.emotion, "I", None))  # fmt: skip
    return rows


def build_samm(
    root: str,
    clips: Sequence[MicroClip],
    *,
    sheet: str | None = "SAMM_Micro_FACS_Codes_v2.xlsx",
    description_rows: int = 13,
    pads: dict[str, int] | None = None,
) -> str:
    """SAMM layout: `SAMM/<006>/<006_1_2>/006_05562.jpg` (padding per clip from `pads`, default 5)."""
    for c in clips:
        if c.no_folder:
            continue
        subject = f"{int(c.subject):03d}"
        pad = (pads or {}).get(c.filename, 5)
        fmt = subject + "_{n:0" + str(pad) + "d}.jpg"
        write_frames(os.path.join(root, "SAMM", subject, c.filename), c.numbers(), fmt)
    if sheet:
        write_xlsx(os.path.join(root, sheet), samm_rows(clips, description_rows))
    return root


def build_mmew(
    root: str,
    clips: Sequence[MicroClip],
    *,
    sheet: str | None = "MMEW_Micro_Exp.xlsx",
    folder_emotion: dict[str, str] | None = None,
) -> str:
    """MMEW layout: `<root>/Micro_Expression/<emotion>/<Filename>/<n>.jpg` and the label sheet."""
    for c in clips:
        if c.no_folder:
            continue
        emotion = (folder_emotion or {}).get(c.filename, c.emotion.lower())
        write_frames(os.path.join(root, "Micro_Expression", emotion, c.filename), c.numbers(), "{n}.jpg")
    os.makedirs(os.path.join(root, "Macro_Expression"), exist_ok=True)
    if sheet:
        rows = [MMEW_HEADER]
        rows += [(c.subject, c.filename, c.onset, c.apex, c.offset, c.aus, c.emotion, None) for c in clips]
        write_xlsx(os.path.join(root, sheet), rows)
    return root


def build_dfew(
    root: str,
    frame_counts: dict[int, int],
    *,
    train: dict[int, int] | None = None,
    test: dict[int, int] | None = None,
    videos: dict[int, int] | None = None,
) -> str:
    """DFEW layout: `Clip/clip_224x224/<00001>/00001_00001.jpg`, set_1 CSVs, optional avi videos."""
    for clip, count in frame_counts.items():
        name = f"{clip:05d}"
        write_frames(os.path.join(root, "Clip", "clip_224x224", name), range(1, count + 1),
                     name + "_{n:05d}.jpg")  # fmt: skip
    for split, labels in (("train", train), ("test", test)):
        if labels is not None:
            path = os.path.join(root, "EmoLabel_DataSplit", f"{split}(single-labeled)", "set_1.csv")
            write_csv(path, [("video_name", "label"), *sorted(labels.items())])
    for clip, count in (videos or {}).items():
        write_video(os.path.join(root, "Clip", "clip_224x224_avi", f"{clip:05d}.avi"), count)
    return root


def build_ferv39k(
    root: str, clips: dict[str, int], *, train: Sequence[str] = (), test: Sequence[str] = ()
) -> str:
    """FERV39K layout: `2_ClipsforFaceCrop/<Scene>/<Emotion>/<clip>/<n>.jpg` and the setup files."""
    for clip_id, count in clips.items():
        write_frames(os.path.join(root, "2_ClipsforFaceCrop", *clip_id.split("/")), range(1, count + 1),
                     "{n:04d}.jpg")  # fmt: skip
    setup = os.path.join(root, "4_setups", "All_scenes")
    os.makedirs(setup, exist_ok=True)
    for name, ids in (("train_All.csv", train), ("test_All.csv", test)):
        with open(os.path.join(setup, name), "w") as f:
            f.writelines(f"{i} {i.split('/')[1]}\n" for i in ids)
    return root


def build_afew(root: str, videos: dict[str, int]) -> str:
    """AFEW layout: `Train_AFEW/<Emotion>/<id>.avi`, `Val_AFEW/...` with the given frame counts."""
    for rel, count in videos.items():
        write_video(os.path.join(root, rel), count)
    return root
