"""The pair transform: exact flip / shift / rotation, sampled ranges, same transform for both frames."""

import numpy as np
import pytest

from ma2mi_jax.data import augment


def _image(seed: int = 0, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_flip_only_mirrors_width():
    img = _image()
    out = augment.apply(augment.Transform(flip=True), img)
    np.testing.assert_array_equal(out, img[:, ::-1])


@pytest.mark.parametrize("dx,dy", [(2, 0), (0, -3), (-1, 2)])
def test_shift_equals_edge_pad_then_crop(dx, dy):
    img = _image(1)
    pad = 3
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    # Content moves by (dx, dy): the window starts at (pad - dy, pad - dx) in the padded image.
    expected = padded[pad - dy : pad - dy + 16, pad - dx : pad - dx + 16]
    out = augment.apply(augment.Transform(dx=dx, dy=dy), img)
    np.testing.assert_array_equal(out, expected)


def test_rotation_90_about_centre_is_rot90():
    img = _image(2)
    out = augment.apply(augment.Transform(angle_deg=90.0), img)
    np.testing.assert_array_equal(out, np.rot90(img, k=1))


def test_flip_then_shift_composes_in_one_warp():
    img = _image(3)
    out = augment.apply(augment.Transform(flip=True, dx=1), img)
    flipped = img[:, ::-1]
    expected = np.concatenate([flipped[:, :1], flipped[:, :-1]], axis=1)  # edge repeated on the left
    np.testing.assert_array_equal(out, expected)


def test_identity_returns_the_frame():
    img = _image(4)
    assert augment.apply(augment.IDENTITY, img) is img


def test_sampled_transforms_stay_in_range_and_use_every_option():
    rng = np.random.default_rng(0)
    ts = [augment.pair_transform(rng, 32, crop_pad=4, rotation_deg=10.0, flip=True) for _ in range(300)]
    assert all(-4 <= t.dx <= 4 and -4 <= t.dy <= 4 for t in ts)
    assert all(-10.0 <= t.angle_deg <= 10.0 for t in ts)
    assert {t.flip for t in ts} == {True, False}
    assert {t.dx for t in ts} == set(range(-4, 5))
    assert max(abs(t.angle_deg) for t in ts) > 9.0


def test_disabled_options_give_identity():
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert augment.pair_transform(rng, 32, crop_pad=0, rotation_deg=0.0, flip=False).is_identity


def test_same_seed_same_transform():
    a = augment.pair_transform(np.random.default_rng(7), 32, 4, 10.0, True)
    b = augment.pair_transform(np.random.default_rng(7), 32, 4, 10.0, True)
    c = augment.pair_transform(np.random.default_rng(8), 32, 4, 10.0, True)
    assert a == b and a != c


def test_one_transform_moves_both_frames_alike():
    """Frame1 = frame0 + a constant offset; after one shared transform the offset is unchanged."""
    f0 = _image(5).astype(np.int32) // 2
    f1 = f0 + 100
    t = augment.Transform(flip=True, angle_deg=0.0, dx=2, dy=-1)
    out0 = augment.apply(t, f0.astype(np.uint8)).astype(np.int32)
    out1 = augment.apply(t, f1.astype(np.uint8)).astype(np.int32)
    np.testing.assert_array_equal(out1 - out0, 100)
    assert not np.array_equal(out0, f0)


def test_bad_parameters_name_the_config_key():
    with pytest.raises(ValueError, match=r"data.augment.crop_pad"):
        augment.pair_transform(np.random.default_rng(0), 16, crop_pad=16, rotation_deg=0.0, flip=False)


def test_apply_pair_equals_apply_on_each_frame():
    """The single 6-channel warp gives exactly the per-frame result."""
    rng = np.random.default_rng(3)
    f0 = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    f1 = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    for tr in (
        augment.Transform(flip=True),
        augment.Transform(angle_deg=7.0, dx=2, dy=-1),
        augment.Transform(flip=True, angle_deg=-4.0),
        augment.IDENTITY,
    ):
        a0, a1 = augment.apply_pair(tr, f0, f1)
        np.testing.assert_array_equal(a0, augment.apply(tr, f0))
        np.testing.assert_array_equal(a1, augment.apply(tr, f1))
