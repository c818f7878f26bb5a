"""How each release looks on disk, for the synthetic generator: counts, ids, names, paths.

One `Profile` per layout holds what the real release has (class counts, subject ids, emotion
spellings, clip naming, frame numbering); `frame_relpath` names every frame file, and
`annotation_files` writes the sheets and split CSVs where docs/datasets.md says the releases put
them.

Layouts (paths relative to the generator's `--out`, which is the reader's root):
  casme2  CASME2-coding-20190701.xlsx (Sheet1) + Cropped/sub01/EP02_01f/reg_img46.jpg
  samm    SAMM_Micro_FACS_Codes_v2.xlsx (13 description rows, header on row 14)
          + SAMM/006/006_1_2/006_05562.jpg
  mmew    MMEW_Micro_Exp.xlsx + Micro_Expression/<emotion>/<Filename>/<n>.jpg + Macro_Expression/
          (the root is the release's MMEW_Final folder)
  dfew    Clip/clip_224x224/00001/00001_00001.jpg (that folder name at every size)
          + EmoLabel_DataSplit/{train,test}(single-labeled)/set_1..5.csv
  smic    HS/s1/micro/negative/s1_ne_01/image046315.bmp, no sheet: each clip runs from onset to
          offset (the expression starts at the first frame and ends at the last) and its emotion is
          the folder name; negative is drawn from the negative prototypes (SMIC_NEGATIVE_AUS),
          positive is happiness. Frames are BMP, as in the release (lossless: the JPEG quality
          knob does not apply).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import cv2
import numpy as np

from ma2mi_jax.data.synthetic.action_units import Event

JPEG_QUALITY = 95

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
    # SMIC-HS: 164 clips of 16 subjects (s1-s20, four absent), 100 fps; no sheet.
    "smic": Profile(
        "smic",
        "micro",
        (1, 2, 3, 4, 5, 6, 8, 9, 11, 12, 13, 14, 15, 18, 19, 20),
        {"negative": 70, "positive": 51, "surprise": 43},
        (1000, 90000),
        (12, 20),
        4,
    ),
}

# SMIC-HS folder emotion -> AU table name; "negative" draws one of SMIC_NEGATIVE_AUS per clip.
SMIC_TO_AU_EMOTION = {"positive": "happiness", "surprise": "surprise"}
SMIC_NEGATIVE_AUS = ("anger", "contempt", "disgust", "fear", "sadness")
SMIC_CLIP_CODE = {"negative": "ne", "positive": "po", "surprise": "sur"}

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
    gap: tuple[str, ...] = ()  # domain-gap factors of a macro clip (domain_gap.apply sets them)

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
    if spec.layout == "smic":
        return f"HS/s{spec.subject}/micro/{spec.emotion}/{spec.filename}"
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
    if spec.layout == "smic":
        return f"{d}/image{number:06d}.bmp"
    return f"{d}/{int(spec.filename):05d}_{number:05d}.jpg"


def clip_id(spec: ClipSpec) -> str:
    """The clip's id as the readers spell it ("sub01/EP02_01f", "006_1_2", "S01_03"/…, "00001")."""
    if spec.layout == "casme2":
        return f"sub{spec.subject:02d}/{spec.filename}"
    if spec.layout == "dfew":
        return f"{int(spec.filename):05d}"
    if spec.layout == "smic":
        return f"s{spec.subject}/{spec.filename}"
    return spec.filename


def name_clip(
    layout: str, subject: int, taken: dict[str, int], rng: np.random.Generator, emotion: str = ""
) -> tuple[str, dict]:
    """A release-style Filename new for this subject, and extra sheet fields (SAMM inducement etc.).

    `taken` counts the names already given per stem (episode / inducement / emotion) for this
    subject; `emotion` names SMIC-HS clips (`s1_ne_01`).
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
    if layout == "smic":
        stem = f"s{subject}_{SMIC_CLIP_CODE[emotion]}"
        k = taken[stem] = taken.get(stem, 0) + 1
        return f"{stem}_{k:02d}", extra
    raise ValueError(f"no clip names for layout {layout!r}")


def encode_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG bytes (default quality 95) of a uint8[H,W,3] RGB frame."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV failed to encode a JPEG frame")
    return buf.tobytes()


def encode_bmp(rgb: np.ndarray) -> bytes:
    """BMP bytes of a uint8[H,W,3] RGB frame."""
    ok, buf = cv2.imencode(".bmp", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("OpenCV failed to encode a BMP frame")
    return buf.tobytes()


def write_frames(root: str, spec: ClipSpec, frames: np.ndarray, quality: int = JPEG_QUALITY) -> None:
    """Write a clip's frames uint8[T,H,W,3] at their layout paths: JPEG of `quality`, or BMP (SMIC)."""
    os.makedirs(os.path.join(root, clip_dir(spec)), exist_ok=True)
    for number, frame in zip(spec.frame_numbers, frames, strict=True):
        path = os.path.join(root, frame_relpath(spec, number))
        with open(path, "wb") as f:
            f.write(encode_bmp(frame) if path.endswith(".bmp") else encode_jpeg(frame, quality))
