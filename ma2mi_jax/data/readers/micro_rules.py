"""One annotation row -> one validated MicroSample: the label and frame rules shared by the micro sets.

Rules, applied in this order to each row (every repair and drop goes into the ReadReport):
1. Emotion: stripped and lower-cased, mapped with `label_map`, kept when in `class_names`
   (label = its index); a known emotion outside the protocol is dropped ("not in the N-class
   protocol"); a string the data set does not know is bad input (error naming file and row, or
   dropped and listed with `strict=False`).
2. Onset / offset must be whole numbers with onset <= offset (else bad input). Apex may be blank
   or "/" (CASME II `sub04/EP12_01f`).
3. The clip folder must exist and hold numbered images, none of them empty (else bad input).
4. Offset beyond the last frame on disk (CASME II `sub16/EP01_08`): offset clamped to the last
   frame present; repaired.
5. Apex blank or "/": apex = the frame present on disk nearest to the middle of onset..offset;
   repaired.
6. Apex after offset: offset widened to the apex; apex before onset: onset moved to the first
   frame on disk, if that precedes the apex (else dropped). Repaired: the apex is the frame the
   classifier needs most, so it is kept as annotated (SAMM `028_4_1`, `032_3_1`).
7. Onset or apex frame not on disk: dropped (no pair can be formed).
8. Onset and apex images must decode with OpenCV and be complete (a truncated JPEG, which OpenCV
   decodes into a partly grey image, is bad input naming the file).
9. Onset and apex must have the same height and width (else bad input naming both files): each is
   resized to the square input size on its own, so frames of different sizes would not line up.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ma2mi_jax.data.media import decode
from ma2mi_jax.data.media import frames as frames_lib
from ma2mi_jax.data.readers.sheets import cell_int, cell_text
from ma2mi_jax.data.records import DataError, MicroSample, ReadReport


@dataclasses.dataclass(frozen=True)
class Annotation:
    """The fields of one sheet row a micro reader extracted, before validation."""

    where: str  # "<file>, row <n>" for messages
    clip_id: str
    subject: str
    folder: str | None  # clip frame folder; None when it could not be located
    expected_folder: str  # what to name in the message when `folder` is None
    onset: Any  # raw cells
    apex: Any
    offset: Any
    emotion: str  # raw text


class _BadRowError(Exception):
    """A row that is bad input: an error under strict reading, a listed drop otherwise."""


class _DropRowError(Exception):
    """A row dropped by a documented rule whatever `strict` says."""


def normalise_label_map(label_map: Mapping[str, str]) -> dict[str, str]:
    """Keys and values stripped and lower-cased."""
    return {str(k).strip().lower(): str(v).strip().lower() for k, v in dict(label_map).items()}


def _emotion(ann: Annotation, known: Sequence[str], class_names: Sequence[str], label_map: dict) -> str:
    raw = ann.emotion.strip().lower()
    mapped = label_map.get(raw, raw)
    if raw not in known and raw not in label_map and mapped not in class_names:
        raise _BadRowError(
            f"unknown emotion {ann.emotion!r} (known: {', '.join(known)}); correct the cell or map "
            "it onto a class with data.label_map"
        )
    if mapped not in class_names:
        raise _DropRowError(f"emotion {mapped!r} not in the {len(class_names)}-class protocol")
    return mapped


def _frame_cell(value: Any, column: str) -> int | None:
    try:
        return cell_int(value)
    except ValueError as err:
        raise _BadRowError(f"{column} cell {value!r} is not a frame number ({err})") from None


def _nearest(numbers: Sequence[int], target: int, lo: int, hi: int) -> int | None:
    inside = [n for n in numbers if lo <= n <= hi]
    return min(inside, key=lambda n: (abs(n - target), n)) if inside else None


def _frames_on_disk(ann: Annotation) -> list[tuple[int, str]]:
    """The clip folder's (frame number, path) in order; _BadRowError when it is missing or unusable."""
    folder = ann.folder
    if folder is None or not os.path.isdir(folder):
        raise _BadRowError(f"clip folder {folder or ann.expected_folder} not found")
    try:
        listed = frames_lib.list_frames(folder)
    except DataError as err:
        raise _BadRowError(str(err)) from None
    if not listed:
        raise _BadRowError(f"clip folder {folder} holds no images")
    empty = frames_lib.empty_files([p for _, p in listed])
    if empty:
        raise _BadRowError(f"empty image file(s) {', '.join(empty[:3])}; replace them from the release")
    return listed


def _repaired_span(
    ann: Annotation, onset: int, apex: int | None, offset: int, numbers: list[int], repairs: list[str]
) -> tuple[int, int, int]:
    """(onset, apex, offset) after the defect rules (docs/datasets.md), each repair added to `repairs`."""
    if offset > numbers[-1] >= onset:
        repairs.append(f"offset {offset} beyond the last frame on disk {numbers[-1]}: offset clamped")
        offset = numbers[-1]
    if apex is None:
        middle = (onset + offset) // 2
        apex = _nearest(numbers, middle, onset, offset)
        cell = cell_text(ann.apex) or "blank"
        if apex is None:
            raise _DropRowError(f"apex cell {cell!r} and no frame of {onset}..{offset} on disk")
        near = "" if apex == middle else f" (nearest frame on disk to the middle {middle})"
        repairs.append(f"apex cell {cell!r} is not a frame number: set to the middle frame {apex}{near}")
    if apex > offset:
        repairs.append(f"apex {apex} after offset {offset}: offset widened to {apex}")
        offset = apex
    elif apex < onset:
        if numbers[0] >= apex:
            raise _DropRowError(f"apex {apex} before onset {onset}, and no earlier frame on disk")
        repairs.append(f"apex {apex} before onset {onset}: onset moved to the first frame {numbers[0]}")
        onset = numbers[0]
    return onset, apex, offset


def _check_pair_images(folder: str, listed: list[tuple[int, str]], onset: int, apex: int) -> None:
    """_DropRowError / _BadRowError unless onset and apex are on disk, decodable and of one size."""
    numbers = [n for n, _ in listed]
    present = set(numbers)
    for name, n in (("onset", onset), ("apex", apex)):
        if n not in present:
            span = f"{numbers[0]}..{numbers[-1]}"
            raise _DropRowError(f"{name} frame {n} not on disk in {folder} (frames {span})")
    paths = dict(listed)
    sizes = {}
    for name, n in (("onset", onset), ("apex", apex)):
        image, problem = decode.decode_bgr(paths[n])
        if image is None:
            raise _BadRowError(f"{name} image {paths[n]}: {problem}; replace it from the release")
        sizes[name] = image.shape[:2]
    if sizes["onset"] != sizes["apex"]:
        (oh, ow), (ah, aw) = sizes["onset"], sizes["apex"]
        raise _BadRowError(
            f"onset image {paths[onset]} is {ow}x{oh} pixels but apex image {paths[apex]} is {aw}x{ah}: "
            "resized separately they would not line up; replace them with frames of one crop"
        )


def _validate(ann: Annotation, emotion: str, label: int, dataset: str) -> tuple[MicroSample, list[str]]:
    repairs: list[str] = []
    onset = _frame_cell(ann.onset, "onset")
    apex = _frame_cell(ann.apex, "apex")
    offset = _frame_cell(ann.offset, "offset")
    if onset is None or offset is None:
        raise _BadRowError(f"onset {ann.onset!r} / offset {ann.offset!r}: both must be frame numbers")
    if onset > offset:
        raise _BadRowError(f"onset {onset} is after offset {offset}")
    listed = _frames_on_disk(ann)
    numbers = [n for n, _ in listed]
    onset, apex, offset = _repaired_span(ann, onset, apex, offset, numbers, repairs)
    _check_pair_images(ann.folder, listed, onset, apex)
    sample = MicroSample(
        dataset=dataset,
        clip_id=ann.clip_id,
        subject=ann.subject,
        frame_numbers=tuple(numbers),
        frame_paths=tuple(p for _, p in listed),
        onset=onset,
        apex=apex,
        offset=offset,
        emotion=emotion,
        label=label,
    )
    return sample, repairs


def bad_row(report: ReadReport, strict: bool, clip_id: str, where: str, message: str) -> None:
    """Raise DataError for bad input under strict reading, else drop and list it."""
    if strict:  # from None: raised while handling the row's own exception, which says no more
        raise DataError(
            f"{where} ({clip_id}): {message}. To skip such samples instead, set data.strict=False."
        ) from None
    report.drop(clip_id, f"{message} [{where}]")


def subject_folder_annotations(
    table: Any,
    base: str,
    subject_id: Callable[[Any], str],
    frame_columns: tuple[str, str, str],
    report: ReadReport,
    strict: bool,
) -> list[Annotation]:
    """Rows of a sheet whose clips live in `<base>/<subject>/<Filename>/` (CASME II, SAMM).

    `frame_columns` names the onset, apex and offset headers; a row with a bad subject or a blank
    Filename is bad input (error, or listed with `strict=False`).
    """
    onset, apex, offset = frame_columns
    annotations = []
    for row in table.rows:
        try:
            subject = subject_id(row["Subject"])
        except ValueError as err:
            bad_row(report, strict, f"row {row.number}", table.where(row), str(err))
            continue
        filename = row.text("Filename")
        if not filename:
            bad_row(report, strict, f"{subject}/?", table.where(row), "Filename is blank")
            continue
        folder = os.path.join(base, subject, filename)
        annotations.append(
            Annotation(
                where=table.where(row),
                clip_id=f"{subject}/{filename}",
                subject=subject,
                folder=folder,
                expected_folder=folder,
                onset=row[onset],
                apex=row[apex],
                offset=row[offset],
                emotion=row.text("Estimated Emotion"),
            )
        )
    return annotations


def make_samples(
    dataset: str,
    annotations: Sequence[Annotation],
    *,
    known: Sequence[str],
    class_names: Sequence[str],
    label_map: Mapping[str, str],
    strict: bool,
    report: ReadReport,
) -> list[MicroSample]:
    """Apply the module rules to every annotation; the report gets every keep, drop and repair."""
    classes = [c.strip().lower() for c in class_names]
    lmap = normalise_label_map(label_map)
    samples: list[MicroSample] = []
    seen: set[str] = set()
    for ann in annotations:
        try:
            if ann.clip_id in seen:
                raise _BadRowError("the same clip is annotated twice")
            seen.add(ann.clip_id)
            emotion = _emotion(ann, known, classes, lmap)
            sample, repairs = _validate(ann, emotion, classes.index(emotion), dataset)
        except _BadRowError as bad:
            bad_row(report, strict, ann.clip_id, ann.where, str(bad))
            continue
        except _DropRowError as drop:
            report.drop(ann.clip_id, str(drop))
            continue
        samples.append(sample)
        report.keep(sample.subject, sample.emotion)
        for r in repairs:
            report.repair(sample.clip_id, r)
    return samples


def require_some(samples: Sequence[Any], report: ReadReport, root: str) -> None:
    """DataError when a read kept nothing, with the report saying why."""
    if not samples:
        raise DataError(f"{report.dataset}: no usable samples under {root}.\n{report.summary()}")
