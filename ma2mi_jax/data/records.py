"""Validated records every reader returns, and the report of what a read kept, dropped or repaired.

These types are the contract between the data set readers (one module per data set) and the
input pipelines / trainers: a reader turns a root folder into a list of records plus a
`ReadReport`; nothing downstream looks at the on-disk layout again.
"""

from __future__ import annotations

import collections
import dataclasses

from ma2mi_jax.errors import UserError


class DataError(UserError, ValueError):
    """A data set on disk is missing, malformed or inconsistent; the message names file/row/clip."""


@dataclasses.dataclass(frozen=True)
class MicroSample:
    """One annotated micro-expression clip (CASME II, SAMM, MMEW).

    Frame numbers are the annotation's numbers; `frame_paths[i]` holds frame `frame_numbers[i]`.
    """

    dataset: str  # "casme2" | "samm" | "mmew" | ...
    clip_id: str  # unique within the data set, e.g. "sub01/EP02_01f"
    subject: str  # canonical subject id, e.g. "sub01", "006", "1"
    frame_numbers: tuple[int, ...]  # sorted ascending
    frame_paths: tuple[str, ...]  # same length and order as frame_numbers
    onset: int  # frame number
    apex: int  # frame number
    offset: int  # frame number
    emotion: str  # canonical lower-case emotion name
    label: int  # index into the protocol's class list

    def path_of(self, frame_number: int) -> str:
        """Path of the frame with this annotation number."""
        try:
            return self.frame_paths[self.frame_numbers.index(frame_number)]
        except ValueError:
            raise DataError(f"{self.clip_id}: no frame numbered {frame_number}") from None

    @property
    def onset_path(self) -> str:
        """Path of the onset frame."""
        return self.path_of(self.onset)

    @property
    def apex_path(self) -> str:
        """Path of the apex frame."""
        return self.path_of(self.apex)


@dataclasses.dataclass(frozen=True)
class MacroClip:
    """One macro-expression clip for pre-training: a frame folder or a video file."""

    dataset: str  # "dfew" | "ferv39k" | "afew" | "frames" | "videos"
    clip_id: str
    frame_paths: tuple[str, ...] | None  # sorted in time order; None for a video clip
    video_path: str | None  # set for a video clip
    num_frames: int
    label: int = -1  # class index for the supervised (MAER) baseline, -1 when unknown
    emotion: str | None = None


@dataclasses.dataclass
class ReadReport:
    """What a reader kept, dropped and repaired; `summary()` is printed by every run."""

    dataset: str
    kept: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (subject, emotion)
    dropped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (clip_id, reason)
    repaired: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (clip_id, reason)
    # Problems of the annotation / split files that are not one kept sample's drop or repair, e.g.
    # a listed clip missing on disk: (kind, clip_id, reason).
    problems: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)

    def keep(self, subject: str, emotion: str) -> None:
        """Record one kept sample."""
        self.kept.append((subject, emotion))

    def drop(self, clip_id: str, reason: str) -> None:
        """Record one dropped sample and why."""
        self.dropped.append((clip_id, reason))

    def repair(self, clip_id: str, reason: str) -> None:
        """Record one repaired sample and what was changed."""
        self.repaired.append((clip_id, reason))

    def problem(self, kind: str, clip_id: str, reason: str) -> None:
        """Record one problem of the annotation files (kind: e.g. "missing on disk")."""
        self.problems.append((kind, clip_id, reason))

    def problem_counts(self) -> dict[str, int]:
        """Number of annotation-file problems of each kind."""
        return dict(collections.Counter(kind for kind, _, _ in self.problems))

    def summary(self) -> str:
        """Human-readable counts per class and subject, then every drop, repair and problem with reasons."""
        head = (
            f"{self.dataset}: kept {len(self.kept)} samples, dropped {len(self.dropped)}, "
            f"repaired {len(self.repaired)}"
        )
        lines = [head + (f", annotation problems {len(self.problems)}" if self.problems else "")]
        per_class = collections.Counter(emotion for _, emotion in self.kept)
        lines.append("  per class:   " + ", ".join(f"{k} {v}" for k, v in sorted(per_class.items())))
        per_subject = collections.Counter(subject for subject, _ in self.kept)
        lines.append("  per subject: " + ", ".join(f"{k} {v}" for k, v in sorted(per_subject.items())))
        lines += [f"  dropped  {clip}: {reason}" for clip, reason in self.dropped]
        lines += [f"  repaired {clip}: {reason}" for clip, reason in self.repaired]
        if self.problems:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(self.problem_counts().items()))
            lines.append(f"  annotation problems: {counts}")
            lines += [f"  problem  {clip} ({kind}): {reason}" for kind, clip, reason in self.problems]
        return "\n".join(lines)
