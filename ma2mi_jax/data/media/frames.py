"""Frame folders and video files on disk: listing frames by parsed number, and basic file checks.

Frame file names carry the frame number with varying prefixes and zero padding
(`reg_img46.jpg`, `img46.jpg`, `006_05562.jpg`, `12.jpg`, `00001_00001.jpg`): the frame number
is the run of digits that ends the file stem, and frames are ordered by that number, never by name.
Every frame of a folder has the same prefix (the stem before the number), so a stray copy such as
`reg_img151 (1).jpg` or `reg_img151_copy2.jpg` is an error naming the file, not frame 1 or 2.

A truncated JPEG or PNG decodes without an error in OpenCV (the missing part is grey), so frame
files are checked for their format's end marker: once per frame folder when a data set is listed
(`frame_file_problems` reads the last `TAIL_BYTES` of each file, no decoding), and again on the
bytes the decoder reads (`ma2mi_jax.data.media.decode`).
"""

from __future__ import annotations

import errno
import os
import re

import cv2

from ma2mi_jax.data.records import DataError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_EXTS = (".avi", ".mp4", ".mov", ".mkv", ".webm", ".mpg", ".mpeg")

_FRAME_STEM = re.compile(r"^(.*?)(\d+)$")
TAIL_BYTES = 4096  # read from the end of a frame file to find its format's end marker
_JPEG_START, _JPEG_SCAN, _JPEG_END = b"\xff\xd8", b"\xff\xda", b"\xff\xd9"
_PNG_START, _PNG_END = b"\x89PNG", b"IEND"


def split_frame_name(name: str) -> tuple[str, int] | None:
    """(prefix, frame number) of a name whose stem ends in digits ("reg_img46.jpg" -> ("reg_img", 46))."""
    stem = os.path.splitext(os.path.basename(name))[0]
    m = _FRAME_STEM.match(stem)
    return (m.group(1), int(m.group(2))) if m else None


def parse_frame_number(name: str) -> int | None:
    """Frame number of a file name: the digit run that ends its stem ("reg_img46.jpg" -> 46)."""
    parts = split_frame_name(name)
    return None if parts is None else parts[1]


def is_image(name: str) -> bool:
    """Whether a file name has an image extension (hidden files excluded)."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTS)


def is_video(name: str) -> bool:
    """Whether a file name has a video extension (hidden files excluded)."""
    return not name.startswith(".") and name.lower().endswith(VIDEO_EXTS)


def path_problem(path: str) -> str:
    """Why `path` is not a folder: "does not exist", "is a file, not a folder", a link loop, ..."""
    try:
        os.stat(path)
    except OSError as err:
        if os.path.islink(path):
            if err.errno == errno.ELOOP:
                return "is a symbolic link loop"
            if err.errno == errno.ENOENT:
                return f"is a symbolic link to {os.readlink(path)}, which does not exist"
            return f"is a symbolic link to {os.readlink(path)}, which cannot be read ({err.strerror})"
        if err.errno == errno.ENOENT:
            return "does not exist"
        return f"cannot be read ({err.strerror})"
    return "is a file, not a folder" if not os.path.isdir(path) else "is a folder"


def require_dir(path: str, what: str, key: str = "data.root") -> None:
    """Raise DataError naming `path` (and the config `key`) unless it is a directory."""
    if not os.path.isdir(path):
        problem = path_problem(path)
        if problem == "does not exist":
            raise DataError(f"{what} not found: {path} does not exist (config key {key}).")
        raise DataError(f"{what}: {path} {problem}; it must be a folder (config key {key}).")


def _image_names(folder: str) -> list[str]:
    """Sorted names of the images in `folder`; DataError naming a frame that is a broken or looping link."""
    try:
        entries = list(os.scandir(folder))
    except OSError as err:
        raise DataError(f"cannot list the frames of {folder}: {err.strerror or err}") from None
    names = []
    for entry in entries:
        if not is_image(entry.name):
            continue
        try:
            if entry.is_file():
                names.append(entry.name)
                continue
        except OSError:
            pass
        if entry.is_symlink():
            raise DataError(f"{entry.path} {path_problem(entry.path)}; replace it with a frame or remove it")
    return sorted(names)


def list_frames(folder: str) -> list[tuple[int, str]]:
    """(frame number, path) of every image in `folder`, sorted by number.

    Raises DataError naming the folder when it is unreadable, and naming the files when an image
    has no number in its name or two images share a number.
    """
    names = _image_names(folder)
    frames: dict[int, str] = {}
    prefixes: dict[str, list[str]] = {}
    for name in names:
        parts = split_frame_name(name)
        if parts is None:
            stray = " (a stray copy?)" if any(ch.isdigit() for ch in name) else ""
            raise DataError(
                f"{os.path.join(folder, name)}: no frame number at the end of the file name{stray}; "
                "remove or rename it"
            )
        prefix, number = parts
        prefixes.setdefault(prefix, []).append(name)
        if number in frames:
            raise DataError(
                f"{folder}: two images with frame number {number} ({frames[number]}, {name}); "
                "remove one of them"
            )
        frames[number] = name
    if len(prefixes) > 1:
        usual = max(prefixes, key=lambda p: len(prefixes[p]))
        odd = sorted(n for p, names_ in prefixes.items() if p != usual for n in names_)
        raise DataError(
            f"{folder}: {', '.join(odd[:3])} not named like the other frames ({prefixes[usual][0]}, ...): "
            "a stray copy? remove or rename it"
        )
    return [(n, os.path.join(folder, frames[n])) for n in sorted(frames)]


def natural_key(text: str) -> tuple:
    """Sort key that orders digit runs numerically ("2" < "10", "S2" < "S10")."""
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text))


def truncation_problem(head: bytes, tail: bytes, whole: bool = False) -> str | None:
    """Why a JPEG or PNG file is incomplete, or None (complete, another format, or no image data).

    `head` is the file's first bytes, `tail` its last TAIL_BYTES, or the whole file when `whole`.
    A JPEG must have the end-of-image marker after its last start-of-scan (neither can occur inside
    entropy-coded data), a PNG must end with its IEND chunk. A whole file without any scan is left
    to the decoder, which refuses it.
    """
    if head.startswith(_JPEG_START):
        end, scan = tail.rfind(_JPEG_END), tail.rfind(_JPEG_SCAN)
        if (scan >= 0 and end < scan) or (scan < 0 and end < 0 and not whole):
            return "truncated JPEG (it ends before its end-of-image marker)"
    elif head.startswith(_PNG_START) and _PNG_END not in tail[-TAIL_BYTES:]:
        return "truncated PNG (it ends before its IEND chunk)"
    return None


def file_problem(path: str) -> str | None:
    """Why the frame file at `path` is unusable (missing, empty, truncated), without decoding it."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_JPEG_START) + 2)
            if not head:
                return "file is empty (0 bytes)"
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - TAIL_BYTES))
            tail = f.read()
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    return truncation_problem(head, tail, whole=size <= TAIL_BYTES)


def frame_file_problems(paths: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """(path, problem) of every frame file among `paths` that is missing, empty or truncated."""
    out = []
    for p in paths:
        problem = file_problem(p)
        if problem:
            out.append((p, problem))
    return out


def describe_file_problems(problems: list[tuple[str, str]], shown: int = 3) -> str:
    """One clause per kind: "empty image file(s) a, b; truncated image file(s) c (truncated JPEG ...)"."""
    kinds: dict[str, list[str]] = {}
    for path, problem in problems:
        kind = problem.split()[0] if problem.startswith(("truncated", "cannot")) else "empty"
        kinds.setdefault(kind, []).append(path)
    label = {"empty": "empty image file(s)", "truncated": "truncated image file(s)",
             "cannot": "unreadable image file(s)"}  # fmt: skip
    parts = []
    for kind, paths in kinds.items():
        more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
        why = "" if kind == "empty" else f" ({next(p for q, p in problems if q == paths[0])})"
        parts.append(f"{label[kind]} {', '.join(paths[:shown])}{more}{why}")
    return "; ".join(parts)


def empty_files(paths: list[str] | tuple[str, ...]) -> list[str]:
    """The paths among `paths` that are missing or zero bytes long."""
    bad = []
    for p in paths:
        try:
            if os.path.getsize(p) == 0:
                bad.append(p)
        except OSError:
            bad.append(p)
    return bad


def video_frame_count(path: str) -> int:
    """Frame count reported by OpenCV; DataError naming the file when OpenCV cannot open it."""
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        raise DataError(f"video {path} is missing or empty; replace it or remove it from the data set")
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise DataError(
                f"OpenCV cannot open the video {path} (corrupt file or unsupported codec); "
                "re-encode it (e.g. ffmpeg -i in.avi out.mp4) or remove it"
            )
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if count <= 0:  # some containers do not store a count: read through
            count = 0
            while cap.grab():
                count += 1
        return count
    finally:
        cap.release()


def descend_nested(path: str) -> str:
    """Follow a release's doubled folder (`Cropped/Cropped`) down to the innermost copy."""
    base = os.path.basename(os.path.normpath(path))
    while os.path.isdir(os.path.join(path, base)):
        others = [e for e in os.listdir(path) if e != base and not e.startswith(".")]
        if any(os.path.isdir(os.path.join(path, e)) for e in others):
            break
        path = os.path.join(path, base)
    return path
