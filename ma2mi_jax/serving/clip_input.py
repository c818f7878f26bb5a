"""A user's clip as the classifier's onset/apex pair: read it, crop the face, find the apex.

A clip is a folder of numbered images (each frame is known by the number ending its file name, as
in the data sets: `reg_img46.jpg` is frame 46; `data.media.frames`) or a video file that OpenCV
reads (.mp4, .avi, ...; each frame is known by its index, counted from 0).

    pair = clip_pair("EP02_01f/", image_size=64, register_iterations=8)  # onset, apex found
    pair = clip_pair("me.mp4", 64, onset=10, apex=31, face_crop="off")   # frames given

Face crop (`face_crop`): "on" crops as the AFEW pipeline does (`data.media.facecrop`): the face
is detected on `facecrop.NUM_PROBES` evenly spaced frames, their median box grown by
`facecrop.MARGIN` and made square is the one box of the clip, and every frame used is cut to it;
a clip on which no face is found is an error (never a silent centre crop). "off" uses the whole
frames. "auto", the default, crops a video and not a frame folder: the micro-expression sets ship
their clips as folders of frames already cropped to the face (CASME II `Cropped/`, SAMM, MMEW),
the frames the models were trained on, while a recorded video shows the whole scene.

Onset: the first frame unless given. Apex: given, or found as the frame after the onset whose
motion, as the model's action encoder sees it, is largest. Every frame is prepared as the
classifier prepares its input (face crop, resize to the image size) and frame t scores
mean |normalise(x_t) - normalise(x_onset)| over pixels and channels, normalise being the ImageNet
mean/std the model applies. When the export registers its pairs (register_iterations > 0) the
difference is taken after registering x_t onto x_onset (`models.register.registered_motion`), as
the model does, so head motion and lighting drift, which the model does not see, do not choose the
apex. The earliest frame wins a tie. A blink or a head movement left after registration can
outscore a faint expression: give the apex when it is known
(docs/decisions.md#apex-of-a-users-clip).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from ma2mi_jax.data.media import decode, facecrop, frames
from ma2mi_jax.data.records import DataError
from ma2mi_jax.errors import NotFoundError
from ma2mi_jax.models import miacnet, register

FACE_CROP_MODES = ("auto", "on", "off")
REGISTER_CHUNK = 16  # frames registered per call: one compiled shape, bounded memory


@dataclasses.dataclass(frozen=True)
class ClipSource:
    """A clip on disk: a frame folder (`paths` in time order) or a video; `numbers` name its frames."""

    path: str
    is_video: bool
    numbers: tuple[int, ...]
    paths: tuple[str, ...] = ()

    @property
    def unit(self) -> str:
        """How a frame is named: "frame" (number in its file name) or "video frame index" (from 0)."""
        return "video frame index" if self.is_video else "frame"

    def describe(self) -> str:
        """The path, the kind of clip and its frames' names."""
        first, last = self.numbers[0], self.numbers[-1]
        if self.is_video:
            return f"{self.path} (a video of {len(self.numbers)} frames, indices {first}..{last})"
        return f"{self.path} (a folder of {len(self.numbers)} frames, numbered {first}..{last})"

    def index(self, number: int, what: str) -> int:
        """Position in time order of the frame named `number`; DataError naming the clip if none."""
        if number in self.numbers:
            return self.numbers.index(number)
        span = f"{self.numbers[0]}..{self.numbers[-1]}" if self.numbers else "none"
        raise DataError(
            f"{self.path}: no {self.unit} {number} for the {what} (the clip's frames: {span}, "
            f"{len(self.numbers)} in all)"
        )


def open_clip(path: str | os.PathLike) -> ClipSource:
    """The clip at `path` (frame folder or video file), its frames listed but not decoded."""
    path = os.fspath(path)
    if os.path.isdir(path):
        listed = frames.list_frames(path)
        if not listed:
            raise DataError(
                f"{path}: no numbered images (.jpg, .png, .bmp named like img46.jpg) in this folder; "
                "give a folder of frames or a video file"
            )
        return ClipSource(path, False, tuple(n for n, _ in listed), tuple(p for _, p in listed))
    if not os.path.exists(path):
        raise NotFoundError(f"{path}: no such clip (give a folder of numbered frames or a video file)")
    if frames.is_image(os.path.basename(path)):
        raise DataError(
            f"{path} is one image, not a clip; give a folder of frames or a video, "
            "or the two images with --onset and --apex"
        )
    count = frames.video_frame_count(path)
    if count <= 0:
        raise DataError(f"{path}: OpenCV decoded no frames from this video (empty or corrupt); re-encode it")
    return ClipSource(path, True, tuple(range(count)))


def _iter_video(path: str, wanted: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
    """(index, uint8[H,W,3] RGB) of the frames `wanted` (sorted), read in order from the start."""
    cap = decode.open_video(path)
    try:
        pos, todo = 0, list(wanted)
        while todo:
            if pos < todo[0]:
                ok = cap.grab()
            else:
                ok, bgr = cap.read()
                ok = ok and bgr is not None
                if ok:
                    yield pos, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                    todo.pop(0)
            if not ok:
                raise DataError(
                    f"{path}: the video ends after {pos} frames, before frame index {todo[0]} "
                    "(its header promised more: truncated or corrupt); re-encode it"
                )
            pos += 1
    finally:
        cap.release()


def read_frames(source: ClipSource, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
    """(index, uint8[H,W,3] RGB at full size) of the clip's frames at positions `indices`, in order."""
    wanted = sorted(set(int(i) for i in indices))
    if source.is_video:
        yield from _iter_video(source.path, wanted)
        return
    for i in wanted:
        yield i, decode.read_image(source.paths[i])


def use_face_crop(mode: str, source: ClipSource) -> bool:
    """Whether to crop the face: "on", "off", or "auto" (a video yes, a frame folder no)."""
    if mode not in FACE_CROP_MODES:
        raise ValueError(f"face_crop must be one of {', '.join(FACE_CROP_MODES)}, got {mode!r}")
    return source.is_video if mode == "auto" else mode == "on"


def face_box(source: ClipSource) -> tuple[facecrop.Box, tuple[int, int], int]:
    """The clip's one square face box, the frame size (h, w) and on how many probed frames a face was."""
    probes = facecrop.probe_indices(len(source.numbers))
    images = dict(read_frames(source, probes))  # index -> uint8[H,W,3]
    h, w = images[probes[0]].shape[:2]
    faces = [f for f in (facecrop.detect_face(images[i]) for i in probes) if f is not None]
    if not faces:
        named = ", ".join(str(source.numbers[i]) for i in probes)
        raise DataError(
            f"{source.path}: no face found on the {source.unit}s {named} (face crop on); give a clip "
            "showing a frontal face, or pass --face_crop=off if the frames are already cropped to it"
        )
    return facecrop.square_box(faces, h, w), (h, w), len(faces)


def prepare(
    source: ClipSource, indices: Sequence[int], size: int, box: facecrop.Box | None
) -> dict[int, np.ndarray]:
    """index -> uint8[size,size,3]: each frame cut to `box` (or whole), resized: the classifier input."""
    out = {}
    for i, rgb in read_frames(source, indices):
        out[i] = decode.resize_square(rgb, size) if box is None else facecrop.crop(rgb, box, size)
    return out


def _registered_scores(onset: jax.Array, clip: jax.Array, iterations: int) -> jax.Array:
    """onset [H,W,3], frames [B,H,W,3] in [0,255] -> mean |registered motion / std| f32[B]."""
    motion = register.registered_motion(jnp.broadcast_to(onset, clip.shape), clip, iterations)  # [B,H,W,3]
    return jnp.mean(jnp.abs(motion / jnp.asarray(miacnet.IMAGENET_STD, jnp.float32)), axis=(1, 2, 3))


_registered_scores_jit = jax.jit(_registered_scores, static_argnums=2)


def motion_scores(onset: np.ndarray, clip: np.ndarray, register_iterations: int = 0) -> np.ndarray:
    """mean |normalise(x_t) - normalise(onset)| f32[T] of prepared frames uint8[T,H,W,3] against uint8[H,W,3].

    With register_iterations > 0 each frame is registered onto the onset first, as the model does.
    """
    std = np.asarray(miacnet.IMAGENET_STD, np.float32)
    if register_iterations <= 0:
        diff = (clip.astype(np.float32) - onset.astype(np.float32)[None]) / std  # [T,H,W,3]
        return np.abs(diff).mean(axis=(1, 2, 3))
    scores = []
    for start in range(0, len(clip), REGISTER_CHUNK):
        chunk = clip[start : start + REGISTER_CHUNK]  # [b,H,W,3]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], REGISTER_CHUNK - len(chunk), axis=0)])
        got = _registered_scores_jit(jnp.asarray(onset), jnp.asarray(padded), int(register_iterations))
        scores.append(np.asarray(got)[: len(chunk)])  # [b]
    return np.concatenate(scores).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class ClipPair:
    """The onset/apex pair taken from a clip, the frames' names and how each choice was made."""

    onset: np.ndarray  # uint8[S,S,3], prepared as the classifier's input
    apex: np.ndarray  # uint8[S,S,3]
    onset_frame: int  # the frame's number in its file name, or its index in a video
    apex_frame: int
    unit: str  # "frame" or "video frame index"
    clip: str  # the clip: its path, kind and frames
    onset_rule: str  # "the first frame" or "given"
    apex_rule: str  # "given" or how it was found
    face_crop: str  # whether and where the face was cropped
    scores: dict[int, float] = dataclasses.field(default_factory=dict)  # frame -> motion score (found apex)

    def lines(self) -> list[str]:
        """What a user is told: the face crop and the frames used, and how each was chosen."""
        return [
            f"clip: {self.clip}",
            f"face crop: {self.face_crop}",
            f"onset: {self.unit} {self.onset_frame} ({self.onset_rule})",
            f"apex: {self.unit} {self.apex_frame} ({self.apex_rule})",
        ]


def _crop_choice(source: ClipSource, mode: str) -> tuple[facecrop.Box | None, str]:
    """The face box (None: whole frames) and its one-line description."""
    crop = use_face_crop(mode, source)
    why = f"face_crop={mode}" + (
        (", a video is cropped" if source.is_video else ", a frame folder is taken as cropped")
        if mode == "auto"
        else ""
    )
    if not crop:
        return None, f"off ({why}; whole frames resized)"
    box, (h, w), found = face_box(source)
    x0, y0, side = box
    probed = len(facecrop.probe_indices(len(source.numbers)))
    return box, (
        f"on ({why}): a {side}x{side} px square at x={x0}, y={y0} of the {w}x{h} frames, "
        f"from the face found on {found} of {probed} probed frames"
    )


def _find_apex(
    source: ClipSource, prepared: dict[int, np.ndarray], onset: int, register_iterations: int
) -> tuple[int, str, dict[int, float]]:
    """Position of the frame after `onset` with the largest motion score, the rule, every score."""
    later = sorted(i for i in prepared if i > onset)
    clip = np.stack([prepared[i] for i in later])  # [T,S,S,3]
    scores = motion_scores(prepared[onset], clip, register_iterations)  # [T]
    best = later[int(np.argmax(scores))]
    after = f" after registering each frame onto the onset ({register_iterations} steps)"
    rule = (
        f"found: the largest mean |normalise(frame) - normalise(onset)| of {source.unit}s "
        f"{source.numbers[later[0]]}..{source.numbers[later[-1]]}"
        f"{after if register_iterations > 0 else ''}, score {float(scores.max()):.4f}"
    )
    return best, rule, {source.numbers[i]: float(s) for i, s in zip(later, scores, strict=True)}


def clip_pair(
    path: str | os.PathLike,
    image_size: int,
    register_iterations: int = 0,
    *,
    onset: int | None = None,
    apex: int | None = None,
    face_crop: str = "auto",
) -> ClipPair:
    """The onset/apex pair of a clip (folder or video) prepared at `image_size`; see the module docstring.

    `onset`/`apex` are frame numbers (a folder) or frame indices (a video); None: the first frame /
    the apex found. `register_iterations` is the export's: the apex is measured as the model sees it.
    """
    source = open_clip(path)
    n = len(source.numbers)
    if n < 2:
        raise DataError(f"{source.path}: the clip has one frame; the model needs an onset and a later apex")
    onset_i = 0 if onset is None else source.index(onset, "onset")
    apex_i = None if apex is None else source.index(apex, "apex")
    if apex_i is not None and apex_i <= onset_i:
        raise DataError(
            f"{source.path}: the apex ({source.unit} {apex}) must come after the onset "
            f"({source.unit} {source.numbers[onset_i]})"
        )
    if apex_i is None and onset_i == n - 1:
        raise DataError(
            f"{source.path}: the onset ({source.unit} {source.numbers[onset_i]}) is the clip's last frame; "
            "no later frame can be the apex"
        )
    box, crop_text = _crop_choice(source, face_crop)
    used = [onset_i, apex_i] if apex_i is not None else list(range(onset_i, n))
    prepared = prepare(source, used, image_size, box)
    if apex_i is None:
        apex_i, apex_rule, scores = _find_apex(source, prepared, onset_i, register_iterations)
    else:
        apex_rule, scores = "given", {}
    return ClipPair(
        onset=prepared[onset_i],
        apex=prepared[apex_i],
        onset_frame=source.numbers[onset_i],
        apex_frame=source.numbers[apex_i],
        unit=source.unit,
        clip=source.describe(),
        onset_rule="the first frame" if onset is None else "given",
        apex_rule=apex_rule,
        face_crop=crop_text,
        scores=scores,
    )


def default_gradcam_path(path: str | os.PathLike) -> str:
    """`<clip name>_gradcam.png` in the current folder (a video's name without its extension)."""
    name = os.path.basename(os.path.normpath(os.fspath(path)))
    if os.path.isfile(path):
        name = os.path.splitext(name)[0]
    return f"{name or 'clip'}_gradcam.png"
