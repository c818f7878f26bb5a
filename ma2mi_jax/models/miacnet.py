"""MIACNet: position encoder on x_t, action encoder on x_{t+k} - x_t, fusion, pooled condition c.

docs/method.md: A = F_a(norm(x_{t+k}) - norm(x_t)), P = F_p(norm(x_t)), c = GAP(fuse(A, P)):
    add          A + P               GAP(A + P) = GAP(A) + GAP(P): P only adds a per-image offset
    mul          A * P               P weights the motion features place by place
    concat       1x1 conv [A, P]     linear, so it too splits into GAP(A) and GAP(P) terms
    concat_relu  ReLU(1x1 conv [A, P])   a non-linearity before pooling lets P gate A per place
    add_conv     ReLU(3x3 conv (A + P))  one spatially mixing layer before pooling
    none         A                   no position encoder ("w/o FPE")
With register_iterations > 0 the action encoder reads the pair registered first (models/register.py:
x_{t+k} aligned to x_t in head pose and lighting), the position encoder still the raw x_t. A caller
that registered its pairs once beforehand (fine-tuning's data, `register.registered_motion`) passes
the registered difference as `motion` instead, and nothing is registered in the model.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ma2mi_jax.cpu import kernels
from ma2mi_jax.models import register
from ma2mi_jax.models.resnet import ResNet18Trunk
from ma2mi_jax.precision import at_least_f32

FUSIONS = ("add", "mul", "concat", "concat_relu", "add_conv", "none")
# Fusions with a learned layer after the encoders (its parameters are "fuse_conv").
CONV_FUSIONS = {"concat": 1, "concat_relu": 1, "add_conv": 3}
# ImageNet statistics on the [0, 255] scale (torchvision's mean/std times 255).
IMAGENET_MEAN = (0.485 * 255.0, 0.456 * 255.0, 0.406 * 255.0)
IMAGENET_STD = (0.229 * 255.0, 0.224 * 255.0, 0.225 * 255.0)


def as_dtype(dtype: Any) -> Any:
    """Accept "float32" / "bfloat16" strings from configs as well as jnp dtypes."""
    return jnp.dtype(dtype) if isinstance(dtype, str) else dtype


def normalize_imagenet(frames: jnp.ndarray) -> jnp.ndarray:
    """uint8 or float frames in [0,255], [...,H,W,3] -> float32 normalised with ImageNet mean/std."""
    x = frames.astype(jnp.float32)
    return (x - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(IMAGENET_STD, jnp.float32)


def normalize_motion(motion: jnp.ndarray) -> jnp.ndarray:
    """A frame difference [...,H,W,3] on the [0,255] scale -> norm(x_{t+k}) - norm(x_t), float32."""
    return motion.astype(jnp.float32) / jnp.asarray(IMAGENET_STD, jnp.float32)


def check_fusion(fusion: str) -> str:
    """Return `fusion` if it is known, else raise naming the config key."""
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r} (config key model.fusion); valid: {list(FUSIONS)}")
    return fusion


class MIACNet(nn.Module):
    """Two ResNet18 trunks and a fusion; returns {"c": [B,C], "map": F, "position": P, "action": A}.

    F [B,h,w,C] is the fused map before pooling (c = GAP(F)).

    C = 8 * width. With `stop_position_grad`, P enters the fusion under stop_gradient so a loss on c
    (L_rec) never reaches `position_encoder`; P itself (returned) still carries gradients for L_pos.
    fusion "none" has no position encoder and returns "position": None.
    """

    width: int = 64
    fusion: str = "add"
    stop_position_grad: bool = True
    register_iterations: int = 0  # > 0: Gauss-Newton steps of the pair registration; 0 = off
    dtype: Any = jnp.float32

    def setup(self) -> None:
        check_fusion(self.fusion)
        self.action_encoder = ResNet18Trunk(self.width, self.dtype, kernels.trunk_ops())
        if self.fusion != "none":
            self.position_encoder = ResNet18Trunk(self.width, self.dtype, kernels.trunk_ops())
        if self.fusion in CONV_FUSIONS:
            k = CONV_FUSIONS[self.fusion]
            self.fuse_conv = nn.Conv(8 * self.width, (k, k), dtype=self.dtype, param_dtype=jnp.float32)

    @property
    def features(self) -> int:
        """Channels of P, A and c."""
        return 8 * self.width

    def position_map(self, frame: jnp.ndarray, train: bool) -> jnp.ndarray:
        """Frames [B,H,W,3] uint8/float in [0,255] -> P [B,h,w,C] from the position encoder alone."""
        if self.fusion == "none":
            raise ValueError("model.fusion='none' has no position encoder; disable position_loss.enabled")
        return self.position_encoder(normalize_imagenet(frame), train)

    def __call__(
        self, frame0: jnp.ndarray, frame1: jnp.ndarray, train: bool, motion: jnp.ndarray | None = None
    ) -> dict[str, Any]:
        """frame0 = x_t, frame1 = x_{t+k}: [B,H,W,3] in [0,255] -> {"c", "map", "position", "action"}
        (and "registered", the registered pair (x_t, x_{t+k}) f32[B,H,W,3] each, when registering).

        motion f32[B,H,W,3] (optional): the registered x_{t+k} - x_t, computed once by the caller
        (`register.registered_motion`); the action encoder then reads it and frame1 is unused."""
        x0 = normalize_imagenet(frame0)
        extra = {}
        if motion is not None:
            A = self.action_encoder(normalize_motion(motion), train)  # [B,h,w,C]
        elif self.register_iterations > 0:
            r0, r1 = register.register_pair(frame0, frame1, self.register_iterations)  # [B,H,W,3] each
            A = self.action_encoder(normalize_imagenet(r1) - normalize_imagenet(r0), train)  # [B,h,w,C]
            extra = {"registered": (r0, r1)}
        else:
            A = self.action_encoder(normalize_imagenet(frame1) - x0, train)  # [B,h,w,C]
        if self.fusion == "none":
            return {"c": jnp.mean(A, axis=(1, 2)), "map": A, "position": None, "action": A, **extra}
        P = self.position_encoder(x0, train)  # [B,h,w,C]
        Pf = jax.lax.stop_gradient(P) if self.stop_position_grad else P
        if self.fusion == "add":
            F = A + Pf
        elif self.fusion == "mul":
            F = A * Pf
        elif self.fusion == "add_conv":
            F = nn.relu(self.fuse_conv(A + Pf))  # [B,h,w,C], 3x3 "SAME": mixes neighbouring places
        else:  # concat, concat_relu
            F = self.fuse_conv(jnp.concatenate([A, Pf], axis=-1))  # [B,h,w,C]
            F = nn.relu(F) if self.fusion == "concat_relu" else F
        return {"c": jnp.mean(F, axis=(1, 2)), "map": F, "position": P, "action": A, **extra}  # c: [B,C]


class MIACClassifier(nn.Module):
    """MIACNet (all branches trainable) + a zero-initialised dense head -> float32 logits."""

    num_classes: int
    width: int = 64
    fusion: str = "add"
    register_iterations: int = 0
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.miacnet = MIACNet(
            self.width,
            self.fusion,
            stop_position_grad=False,
            register_iterations=self.register_iterations,
            dtype=self.dtype,
        )
        self.head = nn.Dense(
            self.num_classes,
            kernel_init=nn.initializers.zeros,
            bias_init=nn.initializers.zeros,
            dtype=self.dtype,
            param_dtype=jnp.float32,
        )

    def __call__(
        self,
        onset: jnp.ndarray,
        apex: jnp.ndarray,
        train: bool,
        return_features: bool = False,
        motion: jnp.ndarray | None = None,
    ) -> jnp.ndarray | tuple[jnp.ndarray, jnp.ndarray]:
        """onset, apex [B,H,W,3] -> logits f32[B,num_classes] (and c [B,C] if return_features).

        motion: the pair's registered difference computed beforehand (`MIACNet`), or None."""
        c = self.miacnet(onset, apex, train, motion)["c"]
        logits = at_least_f32(self.head(c))
        return (logits, c) if return_features else logits


def register_iterations(model_cfg: Any) -> int:
    """config.model.register_iterations (0 where an older config or checkpoint has no such key)."""
    return int(model_cfg.get("register_iterations", 0))


def miacnet_from_config(model_cfg: Any, dtype: Any = jnp.float32) -> MIACNet:
    """MIACNet from config.model (resnet_width, fusion, stop_position_grad, register_iterations)."""
    return MIACNet(
        width=int(model_cfg.resnet_width),
        fusion=check_fusion(str(model_cfg.fusion)),
        stop_position_grad=bool(model_cfg.stop_position_grad),
        register_iterations=register_iterations(model_cfg),
        dtype=as_dtype(dtype),
    )


def classifier_from_config(model_cfg: Any, num_classes: int, dtype: Any = jnp.float32) -> MIACClassifier:
    """MIACClassifier from config.model (resnet_width, fusion, register_iterations)."""
    return MIACClassifier(
        num_classes=int(num_classes),
        width=int(model_cfg.resnet_width),
        fusion=check_fusion(str(model_cfg.fusion)),
        register_iterations=register_iterations(model_cfg),
        dtype=as_dtype(dtype),
    )
