"""MIACNet and the classifier: normalisation, fusions, shapes, zero head, gradient routing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ma2mi_jax import configlib, losses
from ma2mi_jax.cpu import kernels
from ma2mi_jax.models import flops, miacnet, resnet

W = 8  # tiny base width: maps have 64 channels


def _key(seed: int) -> jax.Array:
    """An "rbg" key: same seed, same parameters, and XLA compiles its init ~4x faster on CPU."""
    return jax.random.key(seed, impl="rbg")


@pytest.fixture(scope="module")
def add_vars():
    """Variables of MIACNet(width=8, fusion="add"), initialised once for the module."""
    f = jnp.zeros((1, 32, 32, 3), jnp.uint8)
    return jax.jit(lambda f: miacnet.MIACNet(width=W).init(_key(0), f, f, train=False))(f)


def _frames(seed: int, size: int = 32, batch: int = 2) -> jnp.ndarray:
    return jax.random.randint(jax.random.PRNGKey(seed), (batch, size, size, 3), 0, 256).astype(jnp.uint8)


def _abs_sum(tree) -> float:
    return float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(tree)))


def test_normalize_imagenet_uint8_and_float():
    frames = jnp.array([[[[255, 0, 128]]]], jnp.uint8)
    out = miacnet.normalize_imagenet(frames)
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    np.testing.assert_allclose(out[0, 0, 0], expected, rtol=1e-5)
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(out, miacnet.normalize_imagenet(frames.astype(jnp.float32)))


@pytest.mark.parametrize("fusion", ["add", "mul", "concat", "concat_relu", "add_conv", "none"])
def test_outputs_and_fusions_tiny(fusion, add_vars):
    model = miacnet.MIACNet(width=W, fusion=fusion)
    f0, f1 = _frames(0), _frames(1)
    shapes = jax.eval_shape(lambda a, b: model.init(_key(0), a, b, train=False), f0, f1)
    params = dict(add_vars["params"])
    if fusion == "none":
        assert "position_encoder" not in shapes["params"]
        params.pop("position_encoder")
    if fusion in miacnet.CONV_FUSIONS:
        shape = (3, 3, 8 * W, 8 * W) if fusion == "add_conv" else (1, 1, 16 * W, 8 * W)
        assert shapes["params"]["fuse_conv"]["kernel"].shape == shape
        k = np.random.default_rng(0).normal(0, 0.1, shape).astype(np.float32)
        params["fuse_conv"] = {"kernel": jnp.asarray(k), "bias": jnp.full(8 * W, -0.05)}
    stats = {k: v for k, v in add_vars["batch_stats"].items() if k in params}
    assert jax.tree.map(lambda x: x.shape, shapes["params"]) == jax.tree.map(lambda x: x.shape, params)
    out = model.apply({"params": params, "batch_stats": stats}, f0, f1, train=False)
    A = out["action"]
    assert out["c"].shape == (2, 8 * W) and A.shape == (2, 1, 1, 8 * W)
    if fusion == "none":
        assert out["position"] is None
        np.testing.assert_allclose(out["c"], A.mean((1, 2)), rtol=1e-6)
        return
    P = out["position"]
    assert P.shape == A.shape
    if fusion == "add":
        np.testing.assert_allclose(out["c"], (A + P).mean((1, 2)), rtol=1e-5, atol=1e-6)
    elif fusion == "mul":
        np.testing.assert_allclose(out["c"], (A * P).mean((1, 2)), rtol=1e-5, atol=1e-6)
    elif fusion == "add_conv":  # a 1x1 map: only the 3x3 kernel's centre tap sees a value
        F = jax.nn.relu((A + P) @ params["fuse_conv"]["kernel"][1, 1] - 0.05)
        np.testing.assert_allclose(out["c"], F.mean((1, 2)), rtol=1e-4, atol=1e-5)
    else:
        F = jnp.concatenate([A, P], -1) @ params["fuse_conv"]["kernel"][0, 0] - 0.05
        F = jax.nn.relu(F) if fusion == "concat_relu" else F
        np.testing.assert_allclose(out["c"], F.mean((1, 2)), rtol=1e-4, atol=1e-5)


def test_encoders_see_normalised_frame_and_difference(add_vars):
    model = miacnet.MIACNet(width=W)
    f0, f1 = _frames(2, 64), _frames(3, 64)
    variables = add_vars
    out = model.apply(variables, f0, f1, train=False)
    trunk = resnet.ResNet18Trunk(W, ops=kernels.trunk_ops())
    sub = lambda name: {col: variables[col][name] for col in ("params", "batch_stats")}
    x0, x1 = miacnet.normalize_imagenet(f0), miacnet.normalize_imagenet(f1)
    np.testing.assert_allclose(
        out["action"], trunk.apply(sub("action_encoder"), x1 - x0, train=False), atol=1e-4
    )
    np.testing.assert_allclose(
        out["position"], trunk.apply(sub("position_encoder"), x0, train=False), atol=1e-4
    )
    P = model.apply(variables, f0, train=False, method=miacnet.MIACNet.position_map)
    np.testing.assert_allclose(P, out["position"], atol=1e-6)


def test_paper_size_shapes_224():
    model = miacnet.MIACNet(width=64)
    f = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.uint8)
    out = jax.eval_shape(lambda a, b: model.init_with_output(_key(0), a, b, train=False)[0], f, f)
    assert out["c"].shape == (2, 512) and out["position"].shape == out["action"].shape == (2, 7, 7, 512)


def test_unknown_fusion_names_config_key():
    with pytest.raises(ValueError, match=r"model\.fusion"):
        miacnet.MIACNet(width=W, fusion="sum").init(_key(0), _frames(0), _frames(1), train=False)


def test_from_config_and_bf16():
    cfg = configlib.pretrain_base().model
    cfg.resnet_width, cfg.fusion = W, "mul"
    model = miacnet.miacnet_from_config(cfg, "bfloat16")
    assert (model.width, model.fusion, model.stop_position_grad, model.dtype) == (
        W,
        "mul",
        True,
        jnp.bfloat16,
    )
    out, variables = jax.eval_shape(
        lambda a, b: model.init_with_output(_key(0), a, b, train=False), _frames(0), _frames(1)
    )
    assert out["c"].dtype == jnp.bfloat16
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
    clf = miacnet.classifier_from_config(cfg, num_classes=5, dtype=jnp.float32)
    assert (clf.num_classes, clf.width, clf.fusion) == (5, W, "mul")


def test_classifier_zero_head_uniform_logits():
    clf = miacnet.MIACClassifier(num_classes=5, width=W)
    f0, f1 = _frames(4), _frames(5)
    variables = jax.jit(lambda a, b: clf.init(_key(0), a, b, train=False))(f0, f1)
    assert set(variables["params"]) == {"miacnet", "head"}
    assert not np.any(variables["params"]["head"]["kernel"]) and not np.any(
        variables["params"]["head"]["bias"]
    )
    (logits, c), _ = clf.apply(variables, f0, f1, train=True, return_features=True, mutable=["batch_stats"])
    assert logits.shape == (2, 5) and logits.dtype == jnp.float32 and c.shape == (2, 8 * W)
    np.testing.assert_allclose(jax.nn.softmax(logits), np.full((2, 5), 0.2), rtol=1e-6)
    assert float(jnp.abs(c).sum()) > 0
    labels = jnp.array([0, 3])
    assert losses.cross_entropy(logits, labels) == pytest.approx(np.log(5), rel=1e-6)
    # Fine-tuning: once the head is non-zero, CE reaches both encoders (no stop-gradient).
    params = dict(variables["params"])
    params["head"] = {"kernel": jnp.full((8 * W, 5), 0.1).at[:, 0].set(-0.1), "bias": jnp.zeros(5)}

    def ce(params):
        v = {"params": params, "batch_stats": variables["batch_stats"]}
        out, _ = clf.apply(v, f0, f1, train=True, mutable=["batch_stats"])
        return losses.cross_entropy(out, labels)

    grads = jax.jit(jax.grad(ce))(params)["miacnet"]
    assert _abs_sum(grads["position_encoder"]) > 0 and _abs_sum(grads["action_encoder"]) > 0


# ---- gradient routing (method.md: L_rec -> F_a and DiT; L_pos -> F_p only) ---------------------


def test_flops_two_trunks_and_fusion():
    trunk = flops.resnet18_flops(224, 64)
    assert flops.miacnet_flops(224, 64) == flops.miacnet_flops(224, 64, "mul") == 2 * trunk
    assert flops.miacnet_flops(224, 64, "none") == trunk
    assert flops.miacnet_flops(224, 64, "concat") == 2 * trunk + 2 * (1024 * 512) * 7 * 7
    assert flops.miacnet_flops(224, 64, "concat_relu") == flops.miacnet_flops(224, 64, "concat")
    assert flops.miacnet_flops(224, 64, "add_conv") == 2 * trunk + 2 * (512 * 512 * 9) * 7 * 7
