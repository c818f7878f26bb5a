"""VAE latents of every pre-training frame, computed once and stored as one .npy file per clip.

With `data.latent_cache` a pre-training step reads latents instead of running the frozen VAE on x_t
and x_{t+k}, which is most of a paper-size step's work (docs/decisions.md#latent-cache).

Layout of a cache folder:
    index.json              {"version", "image_size", "face_crop", "latent_shape", "clips": {id: {...}}}
    latents/<clip key>.npy  float32[num_frames, h, w, c], frame i of the clip at row i

Each clip file is written under a temporary name and renamed when complete, so a killed build
leaves no half-written clip; a rebuild skips clips whose file exists (resumable). The index is
rewritten (atomically) at the end of a build. Frames are encoded exactly as the pipeline decodes
them (same resize, same face crop), so `latent[t]` belongs to `frame[t]` of the same clip.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import os
from collections.abc import Callable, Sequence

import numpy as np
import tqdm

from ma2mi_jax import files
from ma2mi_jax.data.media import decode, facecrop
from ma2mi_jax.data.records import DataError, MacroClip
from ma2mi_jax.errors import ConfigError

log = logging.getLogger(__name__)

INDEX = "index.json"
VERSION = 1

EncodeFn = Callable[[np.ndarray], np.ndarray]  # uint8[B,H,W,3] -> f32[B,h,w,c]


@dataclasses.dataclass(frozen=True)
class LatentCache:
    """Read access to a finished latent cache folder."""

    cache_dir: str
    image_size: int
    face_crop: bool
    latent_shape: tuple[int, int, int]  # (h, w, c)
    clips: dict[str, dict]  # clip_id -> {"file": relative path, "num_frames": n}

    @classmethod
    def open(cls, cache_dir: str) -> LatentCache:
        """Open a cache written by `build`; DataError naming the folder if it is missing or stale."""
        path = os.path.join(cache_dir, INDEX)
        if not os.path.isfile(path):
            raise DataError(f"{path}: no latent cache here; build it first (latent_cache.build)")
        with open(path) as f:
            meta = json.load(f)
        if meta.get("version") != VERSION:
            raise DataError(
                f"{path}: cache version {meta.get('version')} != {VERSION}; delete the folder and rebuild"
            )
        return cls(
            cache_dir=cache_dir,
            image_size=int(meta["image_size"]),
            face_crop=bool(meta["face_crop"]),
            latent_shape=tuple(meta["latent_shape"]),
            clips=meta["clips"],
        )

    def __contains__(self, clip_id: str) -> bool:
        return clip_id in self.clips

    def num_frames(self, clip_id: str) -> int:
        """Number of cached frames of a clip."""
        return int(self._entry(clip_id)["num_frames"])

    def _entry(self, clip_id: str) -> dict:
        try:
            return self.clips[clip_id]
        except KeyError:
            raise DataError(
                f"clip {clip_id} is not in the latent cache {self.cache_dir}; rebuild the cache "
                "(latent_cache.build skips clips already done)"
            ) from None

    def read(self, clip_id: str, frames: Sequence[int]) -> np.ndarray:
        """Latents of `frames` (0-based) of a clip: float32[len(frames), h, w, c]."""
        path = os.path.join(self.cache_dir, self._entry(clip_id)["file"])
        try:
            arr = np.load(path, mmap_mode="r")  # [n, h, w, c]
        except (OSError, ValueError) as e:
            raise DataError(
                f"{path}: unreadable latent file ({e}); delete it and rebuild the cache"
            ) from None
        return np.asarray(arr[np.asarray(frames)], dtype=np.float32)


def _encode_frames(frames: np.ndarray, encode_fn: EncodeFn, batch_size: int) -> np.ndarray:
    """Encode uint8[n,H,W,3] in batches of exactly `batch_size` (last one padded): f32[n,h,w,c]."""
    out = []
    for start in range(0, len(frames), batch_size):
        chunk = frames[start : start + batch_size]  # [b,H,W,3]
        real = len(chunk)
        if real < batch_size:  # fixed shapes: one compilation of a jitted encoder
            pad = np.repeat(chunk[-1:], batch_size - real, axis=0)
            chunk = np.concatenate([chunk, pad], axis=0)
        out.append(np.asarray(encode_fn(chunk), dtype=np.float32)[:real])
    return np.concatenate(out, axis=0)


def _write_atomic_npy(path: str, array: np.ndarray) -> None:
    with files.atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)


def _write_atomic_json(path: str, obj: dict) -> None:
    files.write_bytes(path, json.dumps(obj).encode())


def build(
    clips: Sequence[MacroClip],
    encode_fn: EncodeFn,
    *,
    image_size: int,
    cache_dir: str,
    batch_size: int,
    face_crop_dir: str | None = None,
    strict: bool = True,
    decode_threads: int = 4,
) -> LatentCache:
    """Encode every frame of every clip once with `encode_fn` and store the latents in `cache_dir`."""
    old = os.path.join(cache_dir, INDEX)
    if os.path.isfile(old):
        prev = LatentCache.open(cache_dir)
        if prev.image_size != image_size or prev.face_crop != (face_crop_dir is not None):
            raise ConfigError(
                f"{cache_dir} holds latents for image_size={prev.image_size}, face_crop={prev.face_crop}, "
                f"but data.image_size={image_size}, face_crop={face_crop_dir is not None}; "
                "set data.cache_dir to another folder or delete this one"
            )
    os.makedirs(os.path.join(cache_dir, "latents"), exist_ok=True)
    if face_crop_dir is not None:
        cropped, _ = facecrop.crop_clips(clips, face_crop_dir, image_size, strict=strict)
    else:
        cropped = list(clips)
    entries: dict[str, dict] = {}
    latent_shape: tuple[int, ...] | None = None
    pool = concurrent.futures.ThreadPoolExecutor(max(1, decode_threads))
    try:
        for clip in tqdm.tqdm(cropped, desc="latent cache", unit="clip", disable=len(cropped) < 2):
            rel = os.path.join("latents", facecrop.clip_key(clip.clip_id) + ".npy")
            path = os.path.join(cache_dir, rel)
            if not os.path.isfile(path):
                try:
                    frames = _decode_all(clip, image_size, pool)  # [n,H,W,3]
                except DataError as e:
                    if strict:
                        raise
                    log.warning("latent cache: skipping clip %s: %s", clip.clip_id, e)
                    continue
                _write_atomic_npy(path, _encode_frames(frames, encode_fn, batch_size))
            arr = np.load(path, mmap_mode="r")  # [n,h,w,c]
            latent_shape = tuple(int(v) for v in arr.shape[1:])
            entries[clip.clip_id] = {"file": rel, "num_frames": int(arr.shape[0])}
    finally:
        pool.shutdown()
    if latent_shape is None:
        raise DataError(f"{cache_dir}: no clip could be encoded; check the data set")
    meta = {
        "version": VERSION,
        "image_size": image_size,
        "face_crop": face_crop_dir is not None,
        "latent_shape": list(latent_shape),
        "clips": entries,
    }
    _write_atomic_json(os.path.join(cache_dir, INDEX), meta)
    return LatentCache.open(cache_dir)


def _decode_all(clip: MacroClip, size: int, pool: concurrent.futures.Executor) -> np.ndarray:
    """All frames of a clip as uint8[n,size,size,3] (image files decoded on a thread pool)."""
    if clip.video_path is not None or not clip.frame_paths:
        return np.stack(decode.read_all_clip_frames(clip, size))
    return np.stack(list(pool.map(lambda p: decode.read_image(p, size), clip.frame_paths)))
