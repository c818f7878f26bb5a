"""The pair transform drawn on the host, warped on the device: the inverse of `augment.matrix`,
cv2's pixels for flips, shifts and quarter turns, within a grey level for other angles, the
sampled ranges, one transform per pair, and the same bits under vmap as without."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ma2mi_jax.data import augment, device_augment


def _noise(seed: int = 0, size: int = 16, channels: int = 6) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, channels), dtype=np.uint8)


def _smooth(size: int = 32) -> np.ndarray:
    """A smooth image (gradients of a few grey levels per pixel), where bilinear rounding is small."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    planes = [128 + 100 * np.sin(x / 5.0) * np.cos(y / 7.0), 4 * x + 2 * y, 255 - 3 * y]
    return np.clip(np.stack(planes, -1), 0, 255).astype(np.uint8)


def _inverse(t: augment.Transform, size: int) -> np.ndarray:
    return device_augment.inverse_matrices(
        np.asarray([t.flip]), np.asarray([t.angle_deg]), np.asarray([[t.dx, t.dy]]), size
    )  # [1,2,3]


def _device(t: augment.Transform, image: np.ndarray) -> np.ndarray:
    """`t` applied by device_augment to one uint8[H,W,C] image."""
    aug = device_augment.PairAugment(crop_pad=1, rotation_deg=1.0, flip=True)  # not the identity
    out = device_augment.augment_frames(
        jnp.asarray(image)[None], jnp.asarray(_inverse(t, image.shape[0])), aug
    )
    return np.asarray(out)[0]


@pytest.mark.parametrize(
    "t", [augment.Transform(flip=True, angle_deg=7.3, dx=-4, dy=1), augment.Transform(angle_deg=-3)]
)
def test_matrices_invert_the_cv2_forward_map(t):
    forward = np.vstack([augment.matrix(t, 32, 32), [0, 0, 1]])
    np.testing.assert_allclose(_inverse(t, 32)[0], np.linalg.inv(forward)[:2], atol=1 / 2048)


@pytest.mark.parametrize(
    "transform",
    [
        augment.Transform(flip=True),
        augment.Transform(dx=3, dy=-2),
        augment.Transform(dx=-15, dy=15),  # far outside: edge pixels repeated
        augment.Transform(angle_deg=90.0),
        augment.Transform(angle_deg=-90.0, flip=True, dx=1),
    ],
)
def test_exact_transforms_equal_cv2(transform):
    image = _noise()
    np.testing.assert_array_equal(_device(transform, image), augment.apply(transform, image))


def test_a_batch_warps_each_pair_from_its_own_frames():
    """Five images with five exact transforms in one call: each row equals cv2 on that row's image."""
    transforms = [
        augment.Transform(flip=True),
        augment.Transform(dx=3, dy=-2),
        augment.Transform(dx=-15, dy=15),
        augment.Transform(angle_deg=90.0),
        augment.Transform(angle_deg=-90.0, flip=True, dx=1),
    ]
    images = np.stack([_noise(seed) for seed in range(len(transforms))])  # [B,H,W,6]
    inverse = np.concatenate([_inverse(t, images.shape[1]) for t in transforms])  # [B,2,3]
    aug = device_augment.PairAugment(crop_pad=1, rotation_deg=1.0, flip=True)
    out = np.asarray(device_augment.augment_frames(jnp.asarray(images), jnp.asarray(inverse), aug))
    for row, (t, image) in enumerate(zip(transforms, images, strict=True)):
        np.testing.assert_array_equal(out[row], augment.apply(t, image), err_msg=f"row {row}")


@pytest.mark.parametrize("angle", [7.3, -9.9, 3.0])
def test_small_rotations_are_within_a_grey_level_of_cv2(angle):
    image = _smooth()
    t = augment.Transform(angle_deg=angle, dx=2, dy=-1, flip=angle < 0)
    diff = np.abs(_device(t, image).astype(int) - augment.apply(t, image).astype(int))
    assert diff.max() <= 1, diff.max()
    assert diff.mean() < 0.3


def test_sampled_ranges_and_options():
    aug = device_augment.PairAugment(crop_pad=4, rotation_deg=10.0, flip=True)
    m = device_augment.sample_matrices(np.random.default_rng(0), 2000, aug, 32)  # [n,2,3]
    assert m.shape == (2000, 2, 3) and m.dtype == np.float32
    np.testing.assert_array_equal(m * 1024, np.round(m * 1024))  # on the 2^-10 grid
    angle = np.rad2deg(np.arctan2(m[:, 1, 0], m[:, 1, 1]))
    assert np.abs(angle).max() <= 10.05 and np.abs(angle).max() > 9.5
    flipped = m[:, 0, 0] < 0
    assert 0.4 < flipped.mean() < 0.6
    off = device_augment.sample_matrices(np.random.default_rng(0), 5, device_augment.PairAugment(), 32)
    np.testing.assert_array_equal(off, device_augment.identity_matrices(5))


def test_one_transform_per_pair_and_the_same_bits_under_vmap():
    onset = np.stack([_noise(s, size=24, channels=3) for s in range(8)])  # [B,H,W,3]
    frames = jnp.asarray(np.concatenate([onset, onset], -1))  # onset == apex, [B,H,W,6]
    aug = device_augment.PairAugment(crop_pad=3, rotation_deg=8.0, flip=True)
    inverse = jnp.asarray(device_augment.sample_matrices(np.random.default_rng(1), 8, aug, 24))
    out = np.asarray(jax.jit(lambda f, m: device_augment.augment_frames(f, m, aug))(frames, inverse))
    np.testing.assert_array_equal(out[..., :3], out[..., 3:])  # the pair moved together
    assert (out[..., :3] != onset).any(axis=(1, 2, 3)).sum() >= 7
    # Two "folds" of 4 pairs through vmap: bit-identical to the un-vmapped warp.
    vmapped = jax.jit(jax.vmap(lambda f, m: device_augment.augment_frames(f, m, aug)))(
        frames.reshape(2, 4, 24, 24, 6), inverse.reshape(2, 4, 2, 3)
    )
    np.testing.assert_array_equal(np.asarray(vmapped).reshape(out.shape), out)
    same = device_augment.augment_frames(frames, inverse, device_augment.PairAugment())
    assert same is frames


def test_config_ranges_are_checked_with_the_keys_named():
    from ma2mi_jax.errors import ConfigError
    from ma2mi_jax.train.finetune.checks import validate_finetune_config
    from tests.helpers.configs import tiny_finetune_config

    config = tiny_finetune_config("unused", "unused")
    config.data.augment.crop_pad = config.data.image_size
    config.data.augment.rotation_deg = -1.0
    both = r"invalid config:\n.*rotation_deg.*\n.*smaller than data\.image_size"
    with pytest.raises(ConfigError, match=both):
        validate_finetune_config(config)


def test_a_registered_difference_moves_with_its_pair_exactly():
    """`augment_motion` warps a fixed-point difference by the pair's transform: a flip mirrors it bit
    for bit, any transform agrees with the difference of the warped frames to their grey-level rounding,
    and vmapped folds give the same bits."""
    onset = np.stack([_smooth(24)[..., ::-1], _smooth(24)])  # [2,H,W,3]
    apex = np.clip(onset.astype(np.int16) + 3, 0, 255).astype(np.uint8)
    motion = (apex.astype(np.int16) - onset) * 64  # fixed point, [2,H,W,3]
    frames = jnp.asarray(np.concatenate([onset, apex], -1))  # [2,H,W,6]
    aug = device_augment.PairAugment(crop_pad=2, rotation_deg=6.0, flip=True)
    flip = device_augment.inverse_matrices(np.asarray([True, True]), np.zeros(2), np.zeros((2, 2)), 24)
    mirrored = device_augment.augment_motion(jnp.asarray(motion), jnp.asarray(flip), aug)
    assert mirrored.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(mirrored), motion[:, :, ::-1])
    inverse = jnp.asarray(device_augment.sample_matrices(np.random.default_rng(2), 2, aug, 24))
    moved = np.asarray(jax.jit(lambda d, m: device_augment.augment_motion(d, m, aug))(motion, inverse))
    warped = np.asarray(device_augment.augment_frames(frames, inverse, aug)).astype(np.float32)
    assert np.abs(moved / 64 - (warped[..., 3:] - warped[..., :3])).max() <= 1.0
    assert not np.array_equal(moved, motion)  # the transform moved something
    vmapped = jax.jit(jax.vmap(lambda d, m: device_augment.augment_motion(d, m, aug)))(
        motion[:, None], inverse[:, None]
    )
    np.testing.assert_array_equal(np.asarray(vmapped)[:, 0], moved)
    identity = device_augment.augment_motion(jnp.asarray(motion), inverse, device_augment.PairAugment())
    np.testing.assert_array_equal(np.asarray(identity), motion)
