"""Grain input pipeline of pre-training pairs (t, t+k) from macro-expression clips.

Pre-training batches are dicts of numpy arrays, frames uint8 NHWC RGB:
  {"frame0", "frame1": uint8[B,H,W,3], "label": int32[B], "k": int32[B]}
  (+ "latent0", "latent1": f32[B,h,w,c] with a latent cache)

Every random choice of an element comes from a generator seeded by (seed, global element index)
(Grain's `random_map`), so the stream is the same for any number of worker processes, every epoch
is reshuffled, and an iterator's `get_state()` (a small JSON-able dict, stored in the checkpoint)
restores the exact position with `set_state()`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import numpy as np
from absl import flags

from ma2mi_jax.data import augment as aug
from ma2mi_jax.data.latent_cache import LatentCache
from ma2mi_jax.data.media import decode, facecrop
from ma2mi_jax.data.records import DataError, MacroClip, ReadReport

log = logging.getLogger(__name__)

# Tries before a non-strict pre-training element gives up finding a readable clip.
_MAX_TRIES = 16


def steps_per_epoch(num_items: int, batch_size: int) -> int:
    """Full batches per epoch (the remainder is dropped)."""
    return num_items // batch_size


def _aug_params(augment: Mapping[str, Any] | Any) -> tuple[int, float, bool]:
    """(crop_pad, rotation_deg, flip) from a ConfigDict / dict `data.augment`."""
    get = augment.get if hasattr(augment, "get") else lambda k, d=None: getattr(augment, k, d)
    return int(get("crop_pad", 0)), float(get("rotation_deg", 0.0)), bool(get("flip", False))


def _iterate(ds: grain.MapDataset, workers: int, prefetch: int, threads: int) -> grain.DatasetIterator:
    """MapDataset of batches -> iterator, prefetched by threads or by worker processes."""
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=max(1, threads), prefetch_buffer_size=prefetch))
    if workers > 0:
        # Grain 0.2.x reads an absl flag in its workers and fails when no absl app parsed the
        # command line (google/grain#1355): a plain Python caller gets the flags' defaults.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        it_ds = it_ds.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=max(1, prefetch))
        )
    return iter(it_ds)


# ----------------------------------------------------------------------------- pre-training


def check_clips(
    clips: Sequence[MacroClip], *, strict: bool = True
) -> tuple[list[MacroClip], list[tuple[str, str]]]:
    """Clips usable for (t, t+k) pairs; a bad one raises (strict) or is dropped and listed."""
    kept: list[MacroClip] = []
    dropped: list[tuple[str, str]] = []
    for clip in clips:
        reason = None
        if clip.num_frames < 2:
            reason = f"has {clip.num_frames} frame(s); pre-training pairs need at least 2"
        elif clip.video_path is None and len(clip.frame_paths or ()) != clip.num_frames:
            reason = f"num_frames={clip.num_frames} but {len(clip.frame_paths or ())} frame paths"
        if reason is None:
            kept.append(clip)
            continue
        if strict:
            raise DataError(
                f"clip {clip.clip_id} ({clip.video_path or 'frames'}) {reason}; remove it from the data "
                "set or set data.strict=False to skip it"
            )
        log.warning("skipping clip %s: %s", clip.clip_id, reason)
        dropped.append((clip.clip_id, reason))
    if not kept:
        raise DataError("no usable pre-training clip (each needs at least 2 readable frames)")
    return kept, dropped


def sample_k_t(rng: np.random.Generator, num_frames: int, k_min: int, k_max: int) -> tuple[int, int]:
    """k uniform in [k_min, k_max] clipped to the clip (1 <= k <= n-1), then t uniform with t+k < n."""
    k_hi = max(1, min(k_max, num_frames - 1))
    k_lo = max(1, min(k_min, k_hi))
    k = int(rng.integers(k_lo, k_hi + 1))
    t = int(rng.integers(0, num_frames - k))
    return k, t


class ProcessRows(grain.MapDataset):
    """This process's rows of every global batch of an epoch-indexed MapDataset.

    Global batch b of an epoch holds elements [b*G, (b+1)*G) of `parent` (the incomplete last batch
    dropped); process p of P reads rows [p*L, (p+1)*L) of each, L = G / P. Every process so draws
    disjoint elements of the same global stream, and the global batch (assembled on the devices
    by `mesh.shard_batch`) is the one a single process would have read. With P = 1 this is the
    parent cut to whole batches. Indices beyond one epoch map to the parent's next epochs (Grain's
    convention, so a later shuffle and repeat still reshuffle every epoch).
    """

    def __init__(self, parent: grain.MapDataset, global_batch: int, process_index: int, process_count: int):
        super().__init__(parent)
        if global_batch % process_count:
            raise ValueError(f"global batch {global_batch} is not divisible by {process_count} processes")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process index {process_index} is not in [0, {process_count})")
        self._global, self._local = global_batch, global_batch // process_count
        self._offset = process_index * self._local
        self._parent_length = len(parent)
        self._length = (self._parent_length // global_batch) * self._local

    def __len__(self) -> int:
        return self._length

    def _parent_index(self, index: int) -> int:
        epoch, in_epoch = divmod(index, self._length)
        batch, row = divmod(in_epoch, self._local)
        return epoch * self._parent_length + batch * self._global + self._offset + row

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        return self._parent[self._parent_index(index)]

    def __str__(self) -> str:
        last = self._offset + self._local - 1
        return f"ProcessRows(global_batch={self._global}, rows {self._offset}..{last})"


@dataclasses.dataclass(frozen=True)
class _PretrainElement:
    """random_map transform: clip index -> one pair (decoded, resized, jointly augmented)."""

    clips: tuple[MacroClip, ...]
    num_frames: tuple[int, ...]
    image_size: int
    k_min: int
    k_max: int
    crop_pad: int
    rotation_deg: float
    flip: bool
    strict: bool
    latent_cache: LatentCache | None

    def __call__(self, index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        idx = int(index)
        for _ in range(_MAX_TRIES):
            clip = self.clips[idx]
            k, t = sample_k_t(rng, self.num_frames[idx], self.k_min, self.k_max)
            try:
                f0, f1 = decode.read_clip_frames(clip, [t, t + k], self.image_size)  # [H,W,3] each
                lat = None if self.latent_cache is None else self.latent_cache.read(clip.clip_id, [t, t + k])
            except DataError as e:
                if self.strict:
                    raise
                log.warning("skipping a pair of clip %s: %s", clip.clip_id, e)
                idx = int(rng.integers(len(self.clips)))
                continue
            tr = aug.pair_transform(rng, self.image_size, self.crop_pad, self.rotation_deg, self.flip)
            f0, f1 = aug.apply_pair(tr, f0, f1)
            out = {
                "frame0": f0,
                "frame1": f1,
                "label": np.int32(clip.label),
                "k": np.int32(k),
            }
            if lat is not None:
                out["latent0"], out["latent1"] = lat[0], lat[1]  # [h,w,c] each
            return out
        raise DataError(f"no readable pair after {_MAX_TRIES} tries; too many bad clips (see the warnings)")


def _check_cache_fits(
    latent_cache: LatentCache,
    image_size: int,
    face_crop_dir: str | None,
    crop_pad: int,
    rotation_deg: float,
    flip: bool,
) -> bool:
    """ValueError unless the cache matches the frames and no augmentation moves pixels; returns `flip`."""
    if crop_pad or rotation_deg:
        raise ValueError(
            "data.augment.crop_pad and data.augment.rotation_deg must be 0 with data.latent_cache=True "
            "(cached latents cannot follow pixel-moving augmentations); set them to 0 or turn the "
            "cache off"
        )
    if flip:
        log.info(
            "data.latent_cache=True: data.augment.flip is ignored (a flipped latent is not the "
            "latent of the flipped frame)"
        )
        flip = False
    if latent_cache.image_size != image_size or latent_cache.face_crop != (face_crop_dir is not None):
        raise ValueError(
            f"latent cache {latent_cache.cache_dir} was built for image_size={latent_cache.image_size}, "
            f"face_crop={latent_cache.face_crop}; the config has data.image_size={image_size}, "
            f"data.face_crop={face_crop_dir is not None}: rebuild it or point data.cache_dir elsewhere"
        )
    return flip


def _usable_clips(
    clips: Sequence[MacroClip],
    face_crop_dir: str | None,
    image_size: int,
    strict: bool,
    latent_cache: LatentCache | None,
) -> tuple[Sequence[MacroClip], tuple[int, ...], list[tuple[str, str]]]:
    """(clips, frames usable per clip, dropped (clip, reason)): face-cropped, checked, in the cache."""
    dropped: list[tuple[str, str]] = []
    if face_crop_dir is not None:
        clips, dropped = facecrop.crop_clips(clips, face_crop_dir, image_size, strict=strict)
    clips, more = check_clips(clips, strict=strict)
    dropped += more
    if latent_cache is not None:
        missing = [c.clip_id for c in clips if c.clip_id not in latent_cache]
        if missing:
            if strict:
                raise DataError(
                    f"{len(missing)} clip(s) missing from the latent cache {latent_cache.cache_dir}, e.g. "
                    f"{missing[:3]}; rebuild it (already cached clips are skipped)"
                )
            log.warning("%d clip(s) not in the latent cache are skipped: %s", len(missing), missing[:10])
            dropped += [(m, "not in the latent cache") for m in missing]
            clips = [c for c in clips if c.clip_id in latent_cache]
        num_frames = tuple(min(c.num_frames, latent_cache.num_frames(c.clip_id)) for c in clips)
    else:
        num_frames = tuple(c.num_frames for c in clips)
    return clips, num_frames, dropped


def pretrain_dataset(
    clips: Sequence[MacroClip],
    *,
    image_size: int,
    k_min: int,
    k_max: int,
    batch_size: int,
    seed: int,
    augment: Mapping[str, Any] | Any,
    face_crop_dir: str | None = None,
    strict: bool = True,
    latent_cache: LatentCache | None = None,
    report: ReadReport | None = None,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.MapDataset:
    """The endless MapDataset of pre-training batches behind `pretrain_iterator`.

    `batch_size` is the global batch; this process (`process_index` of `process_count`) gets its
    rows of every batch (`ProcessRows`), batch_size / process_count of them.
    """
    if not 1 <= k_min <= k_max:
        raise ValueError(f"data.k_min ({k_min}) and data.k_max ({k_max}) need 1 <= k_min <= k_max")
    crop_pad, rotation_deg, flip = _aug_params(augment)
    if latent_cache is not None:
        flip = _check_cache_fits(latent_cache, image_size, face_crop_dir, crop_pad, rotation_deg, flip)
    clips, num_frames, dropped = _usable_clips(clips, face_crop_dir, image_size, strict, latent_cache)
    if report is not None:
        for clip_id, reason in dropped:
            report.drop(clip_id, reason)
    if len(clips) < batch_size:
        raise ValueError(f"{len(clips)} clip(s) is fewer than train.batch_size={batch_size}")
    element = _PretrainElement(
        clips=tuple(clips),
        num_frames=num_frames,
        image_size=image_size,
        k_min=k_min,
        k_max=k_max,
        crop_pad=crop_pad,
        rotation_deg=rotation_deg,
        flip=flip,
        strict=strict,
        latent_cache=latent_cache,
    )
    elements = grain.MapDataset.range(len(clips)).seed(seed).shuffle().random_map(element)
    rows = ProcessRows(elements, batch_size, process_index, process_count)
    return rows.batch(batch_size // process_count, drop_remainder=True).repeat()


def pretrain_iterator(
    clips: Sequence[MacroClip],
    *,
    image_size: int,
    k_min: int,
    k_max: int,
    batch_size: int,
    seed: int,
    augment: Mapping[str, Any] | Any,
    workers: int = 0,
    prefetch: int = 2,
    face_crop_dir: str | None = None,
    strict: bool = True,
    latent_cache: LatentCache | None = None,
    threads: int = 2,
    report: ReadReport | None = None,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.DatasetIterator:
    """Endless, seeded, resumable iterator of pre-training batches (reshuffled every epoch).

    `batch_size` is the global batch; on several processes each gets its own rows of it
    (`ProcessRows`): the same seed on every process, disjoint elements.

    `latent_cache` (a `LatentCache` or `extras.tfds_builders.SourceLatents`) adds "latent0"/"latent1";
    clips dropped with `strict=False` are logged and, when `report` is given, listed in it.
    """
    ds = pretrain_dataset(
        clips,
        image_size=image_size,
        k_min=k_min,
        k_max=k_max,
        batch_size=batch_size,
        seed=seed,
        augment=augment,
        face_crop_dir=face_crop_dir,
        strict=strict,
        latent_cache=latent_cache,
        report=report,
        process_index=process_index,
        process_count=process_count,
    )
    return _iterate(ds, workers, prefetch, threads)


# ----------------------------------------------------------------------------- micro pairs
