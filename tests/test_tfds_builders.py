"""TFDS builders write ArrayRecord and read back through tfds.data_source and Grain, without TensorFlow."""

import sys

import cv2
import grain
import numpy as np
import pytest

from extras import tfds_builders
from ma2mi_jax.data import latent_cache, micro_pairs
from ma2mi_jax.data import pretrain_pipeline as pipeline
from ma2mi_jax.data.records import DataError, MacroClip, MicroSample


def _samples(root, n=5) -> list[MicroSample]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        paths = []
        for j in range(3):
            p = root / f"s{i}_{j}.png"
            cv2.imwrite(str(p), rng.integers(0, 256, (14, 18, 3), dtype=np.uint8))
            paths.append(str(p))
        out.append(
            MicroSample(
                "casme2",
                f"sub0{i % 2}/EP0{i}",
                f"sub0{i % 2}",
                (1, 2, 3),
                tuple(paths),
                1,
                2,
                3,
                "happiness",
                i % 3,
            )
        )
    return out


def test_micro_pairs_round_trip_through_grain(tmp_path):
    samples = _samples(tmp_path)
    name = tfds_builders.build_micro_pairs(samples, image_size=8, data_dir=str(tmp_path / "tfds"))
    assert name == "micro_pairs/casme2_8"
    assert list((tmp_path / "tfds" / "micro_pairs" / "casme2_8" / "1.0.0").glob("*.array_record-*"))
    src = tfds_builders.micro_pairs_source(str(tmp_path / "tfds"), name)
    assert len(src) == 5
    expected = micro_pairs.load_micro_pairs(samples, 8)
    # Grain reads the source with random access; record i is sample i.
    ds = grain.MapDataset.source(src).map(
        lambda r: {"pair": np.stack([r["onset"], r["apex"]]), "i": r["index"]}
    )
    got = list(ds.batch(2))
    np.testing.assert_array_equal(np.concatenate([b["i"] for b in got]), np.arange(5))
    np.testing.assert_array_equal(np.concatenate([b["pair"] for b in got]), expected)
    table = tfds_builders.read_micro_pairs(src)
    np.testing.assert_array_equal(table["pairs"], expected)
    np.testing.assert_array_equal(table["label"], [s.label for s in samples])
    assert table["subject"].tolist() == [s.subject for s in samples]
    assert table["clip_id"].tolist() == [s.clip_id for s in samples]
    assert "tensorflow" not in sys.modules  # built and read without TensorFlow


def test_macro_latents_feed_the_pretraining_pipeline(tmp_path):
    rng = np.random.default_rng(1)
    clips = []
    for c, n in enumerate([3, 5, 4]):
        paths = []
        for j in range(n):
            p = tmp_path / f"c{c}_{j}.png"
            cv2.imwrite(str(p), rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
            paths.append(str(p))
        clips.append(MacroClip("dfew", f"{c:05d}", tuple(paths), None, n, label=c))

    def encode(x):  # uint8[B,8,8,3] -> f32[B,2,2,4]
        x = x.astype(np.float32).reshape(len(x), 2, 4, 2, 4, 3).mean(axis=(2, 4))
        return np.concatenate([x, x[..., :1] * 2], axis=-1)

    cache = latent_cache.build(clips, encode, image_size=8, cache_dir=str(tmp_path / "lat"), batch_size=2)
    name = tfds_builders.build_macro_latents(
        cache, data_dir=str(tmp_path / "tfds"), dataset="dfew", labels={c.clip_id: c.label for c in clips}
    )
    assert name == "macro_latents/dfew_8"
    packed = tfds_builders.SourceLatents.open(str(tmp_path / "tfds"), name)
    assert packed.image_size == 8 and packed.latent_shape == (2, 2, 4) and "00001" in packed
    for c in clips:
        assert packed.num_frames(c.clip_id) == c.num_frames
        np.testing.assert_array_equal(packed.read(c.clip_id, [2, 0]), cache.read(c.clip_id, [2, 0]))
    labels = [
        int(r["label"]) for r in grain.MapDataset.source(tfds_builders.source(str(tmp_path / "tfds"), name))
    ]
    assert labels == [0, 1, 2]
    it = pipeline.pretrain_iterator(
        clips,
        image_size=8,
        k_min=1,
        k_max=2,
        batch_size=3,
        seed=0,
        augment={"crop_pad": 0, "rotation_deg": 0.0, "flip": False},
        latent_cache=packed,
    )
    for _ in range(2):
        batch = next(it)
        np.testing.assert_allclose(batch["latent0"], encode(batch["frame0"]), rtol=1e-6)
        np.testing.assert_allclose(batch["latent1"], encode(batch["frame1"]), rtol=1e-6)
    assert "tensorflow" not in sys.modules


def test_missing_package_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="build it first"):
        tfds_builders.source(str(tmp_path), "micro_pairs/samm_8")
