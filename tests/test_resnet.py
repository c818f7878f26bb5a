"""ResNet18 trunk: parameter count, shapes, FLOPs and the torchvision weight import."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from ma2mi_jax.cpu import kernels, max_pool
from ma2mi_jax.models import flops, resnet, resnet_import

# torchvision.models.resnet18(): 11,689,512 parameters; fc (512*1000 + 1000) = 513,000 of them.
TORCHVISION_RESNET18 = 11_689_512
TORCHVISION_FC = 512 * 1000 + 1000
EPS = resnet.BN_EPSILON


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_param_count_matches_torchvision_without_fc():
    variables = resnet_import.expected_variables(width=64)  # eval_shape: no memory
    assert _count(variables["params"]) == TORCHVISION_RESNET18 - TORCHVISION_FC == 11_176_512


def test_output_shapes_224_and_tiny():
    model = resnet.ResNet18Trunk(width=64, ops=kernels.trunk_ops())
    x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
    out = jax.eval_shape(lambda x: model.init_with_output(jax.random.PRNGKey(0), x, train=False)[0], x)
    assert out.shape == (2, 7, 7, 512)
    assert resnet.feature_grid(224) == 7
    tiny = resnet.ResNet18Trunk(width=8, ops=kernels.trunk_ops())
    x = jnp.ones((2, 64, 64, 3))
    y, variables = jax.jit(lambda x: tiny.init_with_output(jax.random.key(0, impl="rbg"), x, train=False))(x)
    assert y.shape == (2, 2, 2, 64) and resnet.feature_grid(64) == 2
    assert set(variables) == {"params", "batch_stats"}
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))


def test_bf16_compute_keeps_float32_params():
    model = resnet.ResNet18Trunk(width=8, dtype=jnp.bfloat16, ops=kernels.trunk_ops())
    y, variables = jax.eval_shape(
        lambda x: model.init_with_output(jax.random.PRNGKey(0), x, train=False), jnp.ones((1, 32, 32, 3))
    )
    assert y.dtype == jnp.bfloat16
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables["params"]))


def test_flops_resnet18_matches_published_and_xla():
    # torchvision lists resnet18 at 1.81 G multiply-adds for 224x224.
    assert abs(flops.resnet18_flops(224) / 2 - 1.814e9) / 1.814e9 < 0.01
    model = resnet.ResNet18Trunk(width=8, ops=kernels.trunk_ops())
    x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
    measured = flops.xla_flops(lambda v, x: model.apply(v, x, train=False), variables, x)
    analytic = flops.resnet18_flops(224, width=8)
    # XLA skips the multiply-adds on zero padding (the published convention counts them) and adds
    # BN/ReLU/residual element-wise work: it lands a few percent below the analytic count.
    assert 0.9 * analytic < measured < analytic


# ---- torchvision layout, built with numpy -------------------------------------------------------


def torchvision_state(width: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A random state dict with torchvision resnet18's keys and shapes (base width `width`)."""
    rng = np.random.default_rng(seed)
    state: dict[str, np.ndarray] = {}

    def conv(name, cout, cin, k):
        state[f"{name}.weight"] = rng.normal(0, (2.0 / (cin * k * k)) ** 0.5, (cout, cin, k, k)).astype(
            np.float32
        )

    def bn(name, c):
        state[f"{name}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        state[f"{name}.bias"] = rng.normal(0, 0.1, c).astype(np.float32)
        state[f"{name}.running_mean"] = rng.normal(0, 0.1, c).astype(np.float32)
        state[f"{name}.running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
        state[f"{name}.num_batches_tracked"] = np.array(7, dtype=np.int64)

    conv("conv1", width, 3, 7)
    bn("bn1", width)
    cin = width
    for stage in range(4):
        cout = width * 2**stage
        for b in range(2):
            pre = f"layer{stage + 1}.{b}"
            conv(f"{pre}.conv1", cout, cin if b == 0 else cout, 3)
            bn(f"{pre}.bn1", cout)
            conv(f"{pre}.conv2", cout, cout, 3)
            bn(f"{pre}.bn2", cout)
            if b == 0 and stage > 0:
                conv(f"{pre}.downsample.0", cout, cin, 1)
                bn(f"{pre}.downsample.1", cout)
        cin = cout
    state["fc.weight"] = rng.normal(0, 0.01, (1000, 8 * width)).astype(np.float32)
    state["fc.bias"] = np.zeros(1000, np.float32)
    return state


def np_conv(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """torch.nn.functional.conv2d in numpy: x [B,C,H,W], w [O,C,k,k] -> [B,O,H',W']."""
    B, _, H, W = x.shape
    n_out, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    Ho, Wo = (H + 2 * pad - k) // stride + 1, (W + 2 * pad - k) // stride + 1
    out = np.zeros((B, n_out, Ho, Wo), np.float64)
    for i in range(k):
        for j in range(k):
            patch = xp[:, :, i : i + stride * Ho : stride, j : j + stride * Wo : stride]  # [B,C,Ho,Wo]
            out += np.einsum("bchw,oc->bohw", patch, w[:, :, i, j])
    return out


def np_bn(x: np.ndarray, state: dict, name: str) -> np.ndarray:
    s = lambda k: state[f"{name}.{k}"][None, :, None, None]
    return (x - s("running_mean")) / np.sqrt(s("running_var") + EPS) * s("weight") + s("bias")


def np_maxpool(x: np.ndarray) -> np.ndarray:
    """max_pool2d(kernel 3, stride 2, padding 1)."""
    B, C, H, W = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    Ho, Wo = (H - 1) // 2 + 1, (W - 1) // 2 + 1
    out = np.full((B, C, Ho, Wo), -np.inf)
    for i in range(3):
        for j in range(3):
            out = np.maximum(out, xp[:, :, i : i + 2 * Ho : 2, j : j + 2 * Wo : 2])
    return out


def np_resnet18(x_nhwc: np.ndarray, state: dict) -> tuple[np.ndarray, np.ndarray]:
    """torchvision resnet18 trunk by hand (eval mode) -> (stem output after max-pool, layer4 output), NHWC."""
    relu = lambda a: np.maximum(a, 0)
    x = np.transpose(x_nhwc, (0, 3, 1, 2)).astype(np.float64)
    x = relu(np_bn(np_conv(x, state["conv1.weight"], 2, 3), state, "bn1"))
    stem = np_maxpool(x)
    x = stem
    for stage in range(4):
        for b in range(2):
            pre = f"layer{stage + 1}.{b}"
            stride = 2 if (b == 0 and stage > 0) else 1
            y = relu(np_bn(np_conv(x, state[f"{pre}.conv1.weight"], stride, 1), state, f"{pre}.bn1"))
            y = np_bn(np_conv(y, state[f"{pre}.conv2.weight"], 1, 1), state, f"{pre}.bn2")
            if f"{pre}.downsample.0.weight" in state:
                x = np_bn(
                    np_conv(x, state[f"{pre}.downsample.0.weight"], stride, 0), state, f"{pre}.downsample.1"
                )
            x = relu(y + x)
    return np.transpose(stem, (0, 2, 3, 1)), np.transpose(x, (0, 2, 3, 1))


def test_torchvision_round_trip_matches_hand_computation():
    width = 8
    state = torchvision_state(width)
    variables = resnet_import.torchvision_to_flax(state, width=width)
    # Layout: conv kernels [kh,kw,I,O], BN scale/bias in params, running stats in batch_stats.
    np.testing.assert_array_equal(
        variables["params"]["conv1"]["kernel"], np.transpose(state["conv1.weight"], (2, 3, 1, 0))
    )
    np.testing.assert_array_equal(
        variables["batch_stats"]["layer2_0"]["downsample_bn"]["var"],
        state["layer2.0.downsample.1.running_var"],
    )
    x = np.random.default_rng(1).normal(size=(2, 40, 40, 3)).astype(np.float32)
    model = resnet.ResNet18Trunk(width=width, ops=kernels.trunk_ops())
    y, inter = model.apply(variables, jnp.asarray(x), train=False, capture_intermediates=True)
    stem_ref, out_ref = np_resnet18(x, state)
    # First layers: conv1 -> bn1 (running stats) -> relu -> max-pool, computed by hand.
    conv1_ref = np.transpose(
        np_conv(np.transpose(x, (0, 3, 1, 2)), state["conv1.weight"], 2, 3), (0, 2, 3, 1)
    )
    np.testing.assert_allclose(
        inter["intermediates"]["conv1"]["__call__"][0], conv1_ref, rtol=1e-4, atol=1e-4
    )
    stem = jax.lax.reduce_window(
        jax.nn.relu(inter["intermediates"]["bn1"]["__call__"][0]),
        -jnp.inf,
        jax.lax.max,
        (1, 3, 3, 1),
        (1, 2, 2, 1),
        ((0, 0), (1, 1), (1, 1), (0, 0)),
    )
    np.testing.assert_allclose(stem, stem_ref, rtol=1e-4, atol=1e-4)
    # Whole trunk.
    assert y.shape == out_ref.shape == (2, 2, 2, 64)
    np.testing.assert_allclose(y, out_ref, rtol=1e-3, atol=1e-3)


def test_import_errors_name_every_bad_key():
    state = torchvision_state(8)
    del state["layer3.1.bn2.running_mean"]
    state["layer5.0.conv1.weight"] = np.zeros((1, 1, 3, 3), np.float32)
    state["layer1.0.conv2.weight"] = np.zeros((8, 8, 5, 5), np.float32)
    with pytest.raises(ValueError) as err:
        resnet_import.torchvision_to_flax(state, width=8, source="weights.npz")
    msg = str(err.value)
    assert "weights.npz" in msg
    assert "batch_stats/layer3_1/bn2/mean" in msg  # missing
    assert "layer5.0.conv1.weight" in msg  # unexpected
    assert "layer1.0.conv2.weight" in msg and "(8, 8, 5, 5)" in msg  # wrong shape


def test_fc_and_wrapper_prefix_ignored(caplog):
    state = {f"module.{k}": v for k, v in torchvision_state(8).items()}
    with caplog.at_level("INFO"):
        variables = resnet_import.torchvision_to_flax(state, width=8)
    assert "fc.weight" in caplog.text and "fc.bias" in caplog.text
    flat = traverse_util.flatten_dict(variables["params"])
    assert not any("fc" in k for k in flat)


def _check_loaded(loaded: dict, state: dict) -> None:
    ref = resnet_import.torchvision_to_flax(state, width=64)
    for col in ("params", "batch_stats"):
        a, b = traverse_util.flatten_dict(loaded[col]), traverse_util.flatten_dict(ref[col])
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


@pytest.fixture(scope="module")
def full_state() -> dict[str, np.ndarray]:
    return torchvision_state(64, seed=3)


def test_load_npz_and_safetensors(tmp_path, full_state):
    from safetensors.numpy import save_file

    npz = os.path.join(tmp_path, "r18.npz")
    np.savez(npz, **full_state)
    _check_loaded(resnet_import.load_torchvision_resnet18(npz), full_state)
    st = os.path.join(tmp_path, "r18.safetensors")
    save_file(full_state, st)
    _check_loaded(resnet_import.load_torchvision_resnet18(st), full_state)


def test_load_pth_with_torch(tmp_path, full_state):
    torch = pytest.importorskip("torch")
    pth = os.path.join(tmp_path, "r18.pth")
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in full_state.items()}, pth)
    _check_loaded(resnet_import.load_torchvision_resnet18(pth), full_state)


def test_missing_file_and_bad_extension(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.safetensors"):
        resnet_import.load_torchvision_resnet18(os.path.join(tmp_path, "nowhere.safetensors"))
    bad = os.path.join(tmp_path, "w.bin")
    open(bad, "wb").close()
    with pytest.raises(ValueError, match="unsupported"):
        resnet_import.load_torchvision_resnet18(bad)


@pytest.mark.parametrize("side", [16, 15])
def test_max_pool_by_slices_equals_reduce_window_values_and_gradients_with_ties(side):
    # Post-ReLU maps: many zeros, plus a constant positive patch where whole windows tie.
    x = jax.nn.relu(jax.random.normal(jax.random.PRNGKey(0), (2, side, side, 3)))
    x = x.at[:, 2:9, 3:10].set(0.75)
    g = jax.random.normal(jax.random.PRNGKey(1), resnet.max_pool_reduce_window(x).shape)

    def value_and_grad(pool):
        return jax.jit(jax.value_and_grad(lambda x: jnp.sum(pool(x) * g)))(x)

    v_ref, g_ref = value_and_grad(resnet.max_pool_reduce_window)
    v, grad = value_and_grad(max_pool.max_pool_by_slices)
    out, out_ref = max_pool.max_pool_by_slices(x), resnet.max_pool_reduce_window(x)
    assert out.shape == out_ref.shape == (2, (side - 1) // 2 + 1, (side - 1) // 2 + 1, 3)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(out_ref))
    np.testing.assert_array_equal(np.asarray(v), np.asarray(v_ref))
    np.testing.assert_array_equal(np.asarray(grad), np.asarray(g_ref))  # the first maximum of a tie gets it
    assert float(jnp.max(jnp.abs(grad))) > 0
    # Even sides take the phase-wise gradient, odd ones autodiff of the slices.
    assert ("custom_vjp" in str(jax.make_jaxpr(max_pool.max_pool_by_slices)(x))) == (side % 2 == 0)
