"""Latent cache: one encode per frame, atomic resumable files, and pairs consistent with their frames."""

import os

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ma2mi_jax.data import latent_cache
from ma2mi_jax.data import pretrain_pipeline as pipeline
from ma2mi_jax.data.media import decode
from ma2mi_jax.data.records import DataError, MacroClip

SIZE = 16


class CountingEncoder:
    """A jitted stand-in for the VAE encoder: 4x4 mean pool plus a fourth channel; counts traces."""

    def __init__(self):
        self.traces = 0
        self.frames = 0
        self._fn = jax.jit(self._encode)

    def _encode(self, x):  # uint8[B,H,W,3] -> f32[B,H/4,W/4,4]
        self.traces += 1
        x = x.astype(jnp.float32) / 127.5 - 1.0
        b, h, w, c = x.shape
        pooled = x.reshape(b, h // 4, 4, w // 4, 4, c).mean(axis=(2, 4))
        return jnp.concatenate([pooled, pooled.mean(-1, keepdims=True) ** 2], axis=-1)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        self.frames += len(frames)
        return np.asarray(self._fn(frames))


def _clips(root, lengths) -> list[MacroClip]:
    rng = np.random.default_rng(0)
    clips = []
    for c, n in enumerate(lengths):
        paths = []
        for j in range(n):
            p = root / f"c{c}_{j}.png"
            cv2.imwrite(str(p), rng.integers(0, 256, (20, 20, 3), dtype=np.uint8))
            paths.append(str(p))
        clips.append(MacroClip("frames", f"set/clip{c}", tuple(paths), None, n, label=c))
    return clips


def test_build_writes_every_frame_once_and_reads_back(tmp_path):
    clips = _clips(tmp_path, [3, 5, 2])
    enc = CountingEncoder()
    cache = latent_cache.build(clips, enc, image_size=SIZE, cache_dir=str(tmp_path / "lat"), batch_size=4)
    assert enc.traces == 1  # fixed batch shape: one compilation, last batches padded
    assert cache.latent_shape == (4, 4, 4) and cache.image_size == SIZE and not cache.face_crop
    for clip in clips:
        assert cache.num_frames(clip.clip_id) == clip.num_frames
        frames = np.stack(decode.read_all_clip_frames(clip, SIZE))
        np.testing.assert_allclose(cache.read(clip.clip_id, range(clip.num_frames)), enc(frames), atol=1e-6)
    reopened = latent_cache.LatentCache.open(str(tmp_path / "lat"))
    np.testing.assert_array_equal(reopened.read("set/clip1", [4, 0]), cache.read("set/clip1", [4, 0]))
    assert not [n for n in os.listdir(tmp_path / "lat" / "latents") if ".tmp" in n]


def test_build_resumes_and_skips_cached_clips(tmp_path):
    clips = _clips(tmp_path, [3, 4])
    cache_dir = str(tmp_path / "lat")
    latent_cache.build(clips[:1], CountingEncoder(), image_size=SIZE, cache_dir=cache_dir, batch_size=2)
    enc = CountingEncoder()
    cache = latent_cache.build(clips, enc, image_size=SIZE, cache_dir=cache_dir, batch_size=2)
    assert enc.frames == 4  # only the new clip was encoded (two batches of two)
    assert set(cache.clips) == {"set/clip0", "set/clip1"}
    with pytest.raises(ValueError, match=r"image_size=16.*data\.cache_dir"):
        latent_cache.build(clips, enc, image_size=8, cache_dir=cache_dir, batch_size=2)


def test_unreadable_clip_strict_and_lenient(tmp_path):
    clips = _clips(tmp_path, [2, 3])
    (tmp_path / "c1_1.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"c1_1\.png"):
        latent_cache.build(
            clips, CountingEncoder(), image_size=SIZE, cache_dir=str(tmp_path / "a"), batch_size=2
        )
    cache = latent_cache.build(
        clips, CountingEncoder(), image_size=SIZE, cache_dir=str(tmp_path / "b"), batch_size=2, strict=False
    )
    assert set(cache.clips) == {"set/clip0"}
    with pytest.raises(DataError, match=r"set/clip1 is not in the latent cache"):
        cache.read("set/clip1", [0])
    with pytest.raises(DataError, match="no latent cache here"):
        latent_cache.LatentCache.open(str(tmp_path / "nothing"))


def test_pretrain_pairs_read_latents_of_their_frames(tmp_path):
    clips = _clips(tmp_path, [4, 6, 3, 5])
    enc = CountingEncoder()
    cache = latent_cache.build(clips, enc, image_size=SIZE, cache_dir=str(tmp_path / "lat"), batch_size=4)
    aug = {"crop_pad": 0, "rotation_deg": 0.0, "flip": True}  # flip is turned off with a cache
    kw = dict(image_size=SIZE, k_min=1, k_max=3, batch_size=2, seed=0, augment=aug, latent_cache=cache)
    it = pipeline.pretrain_iterator(clips, **kw)
    for batch in [next(it) for _ in range(6)]:
        assert batch["latent0"].shape == (2, 4, 4, 4) and batch["latent0"].dtype == np.float32
        np.testing.assert_allclose(batch["latent0"], enc(batch["frame0"]), atol=1e-6)
        np.testing.assert_allclose(batch["latent1"], enc(batch["frame1"]), atol=1e-6)
        assert not np.allclose(batch["latent0"], batch["latent1"])
    for key, value in (("crop_pad", 2), ("rotation_deg", 5.0)):
        with pytest.raises(ValueError, match=r"data\.augment\.crop_pad and data\.augment\.rotation_deg"):
            pipeline.pretrain_iterator(clips, **{**kw, "augment": {**aug, key: value}})
    with pytest.raises(ValueError, match=r"image_size=16"):
        pipeline.pretrain_iterator(clips, **{**kw, "image_size": 8})
    with pytest.raises(DataError, match="missing from the latent cache"):
        pipeline.pretrain_iterator([*clips, MacroClip("frames", "new", clips[0].frame_paths, None, 4)], **kw)
