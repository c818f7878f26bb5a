"""Frame folders and video files on disk: listing frames by parsed number, and basic file checks.

Frame file names carry the frame number with varying prefixes and zero padding
(`reg_img46.jpg`, `img46.jpg`, `006_05562.jpg`, `12.jpg`, `00001_00001.jpg`): the frame number
is the last run of digits in the file stem, and frames are ordered by that number, never by name.
"""

from __future__ import annotations

import os
import re

from ma2mi_jax.data.records import DataError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_EXTS = (".avi", ".mp4", ".mov", ".mkv", ".webm", ".mpg", ".mpeg")

_LAST_NUMBER = re.compile(r"(\d+)\D*$")


def parse_frame_number(name: str) -> int | None:
    """Frame number of a file name: the last digit run of its stem ("reg_img46.jpg" -> 46)."""
    stem = os.path.splitext(os.path.basename(name))[0]
    m = _LAST_NUMBER.search(stem)
    return int(m.group(1)) if m else None


def is_image(name: str) -> bool:
    """Whether a file name has an image extension (hidden files excluded)."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTS)


def is_video(name: str) -> bool:
    """Whether a file name has a video extension (hidden files excluded)."""
    return not name.startswith(".") and name.lower().endswith(VIDEO_EXTS)


def require_dir(path: str, what: str, key: str = "data.root") -> None:
    """Raise DataError naming `path` (and the config `key`) unless it is a directory."""
    if not os.path.isdir(path):
        raise DataError(f"{what} not found: {path} does not exist or is not a folder (config key {key}).")


def list_frames(folder: str) -> list[tuple[int, str]]:
    """(frame number, path) of every image in `folder`, sorted by number.

    Raises DataError naming the folder when it is unreadable, and naming the files when an image
    has no number in its name or two images share a number.
    """
    try:
        names = [e.name for e in os.scandir(folder) if e.is_file() and is_image(e.name)]
    except OSError as err:
        raise DataError(f"cannot list the frames of {folder}: {err}") from err
    frames: dict[int, str] = {}
    for name in names:
        number = parse_frame_number(name)
        if number is None:
            raise DataError(f"{os.path.join(folder, name)}: no frame number in the file name")
        if number in frames:
            raise DataError(
                f"{folder}: two images with frame number {number} ({frames[number]}, {name}); "
                "remove one of them"
            )
        frames[number] = name
    return [(n, os.path.join(folder, frames[n])) for n in sorted(frames)]


def natural_key(text: str) -> tuple:
    """Sort key that orders digit runs numerically ("2" < "10", "S2" < "S10")."""
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text))


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


def image_problem(path: str) -> str | None:
    """Why the image at `path` cannot be used (missing, empty, undecodable), or None if it decodes."""
    import cv2

    if not os.path.isfile(path):
        return "file missing"
    if os.path.getsize(path) == 0:
        return "file is empty (0 bytes)"
    if cv2.imread(path, cv2.IMREAD_UNCHANGED) is None:
        return "OpenCV cannot decode it (corrupt or not an image)"
    return None


def video_frame_count(path: str) -> int:
    """Frame count reported by OpenCV; DataError naming the file when OpenCV cannot open it."""
    import cv2

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
