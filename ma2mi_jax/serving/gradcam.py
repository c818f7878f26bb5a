"""Grad-CAM over the face (paper Fig. 6b): where the action encoder's features drive the predicted class.

The map is Grad-CAM on the action encoder's last feature map A [h,w,C]: weights = spatial mean of
d logit_k / dA, heat = ReLU(sum_c weights_c * A_c), scaled to [0, 1] and resized to the input.
The gradient w.r.t. A is taken by adding a zero perturbation to the encoder's output through a
Flax method interceptor, so the model code is untouched.
"""

from __future__ import annotations

import os

import cv2
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ma2mi_jax import files
from ma2mi_jax.data.media import decode

ACTION_ENCODER = "action_encoder"
# Weight of the heat map when blended over the frame.
OVERLAY_ALPHA = 0.45


def _feature_map_and_grad(clf, onset: np.ndarray, apex: np.ndarray, class_index: int | None):
    """A f32[h,w,C], dlogit/dA f32[h,w,C] and the class explained, for prepared frames uint8[H,W,3]."""
    model, variables = clf.model, clf.variables
    onset_b, apex_b = jnp.asarray(onset)[None], jnp.asarray(apex)[None]  # [1,H,W,3]

    def forward(eps):
        captured = {}

        def interceptor(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.method_name == "__call__" and context.module.name == ACTION_ENCODER:
                if eps is not None:
                    out = out + eps.astype(out.dtype)
                captured["A"] = out
            return out

        with nn.intercept_methods(interceptor):
            logits = model.apply(variables, onset_b, apex_b, train=False)  # [1,N]
        return logits[0], captured["A"]

    logits, A = forward(None)
    k = int(jnp.argmax(logits)) if class_index is None else int(class_index)
    if not 0 <= k < logits.shape[-1]:
        raise ValueError(f"class_index {k} outside 0..{logits.shape[-1] - 1}")
    grad = jax.grad(lambda e: forward(e)[0][k].astype(jnp.float32))(jnp.zeros(A.shape, jnp.float32))
    return np.asarray(A[0], np.float32), np.asarray(grad[0], np.float32), k


def gradcam(clf, onset, apex, class_index: int | None = None) -> tuple[np.ndarray, int]:
    """Heat map f32[image_size, image_size] in [0,1] for the predicted (or given) class, and that class.

    `clf` is an `inference.Classifier`; onset/apex are file paths or RGB arrays.
    """
    onset_img, apex_img = clf.prepare(onset), clf.prepare(apex)
    A, grad, k = _feature_map_and_grad(clf, onset_img, apex_img, class_index)
    weights = grad.mean(axis=(0, 1))  # [C]
    cam = np.maximum((A * weights).sum(axis=-1), 0.0)  # [h,w]
    peak = float(cam.max())
    cam = cam / peak if peak > 0 else cam
    size = clf.image_size
    heat = cv2.resize(cam, (size, size), interpolation=cv2.INTER_LINEAR)  # [H,W]
    return np.clip(heat, 0.0, 1.0).astype(np.float32), k


def overlay(frame: np.ndarray, heat: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """Blend a [0,1] heat map (JET colours) over an RGB frame uint8[H,W,3]."""
    colours = cv2.applyColorMap(np.uint8(np.rint(255 * heat)), cv2.COLORMAP_JET)  # BGR
    colours = cv2.cvtColor(colours, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(frame, 1.0 - alpha, colours, alpha, 0.0)


def save_gradcam(clf, onset, apex, out_path: str | os.PathLike, class_index: int | None = None) -> dict:
    """Write the Grad-CAM overlay on the apex frame as a PNG: {"path", "class_name", "class_index"}."""
    heat, k = gradcam(clf, onset, apex, class_index)
    picture = overlay(clf.prepare(apex), heat)
    out_path = os.fspath(out_path)
    if not out_path.lower().endswith(".png"):
        raise ValueError(f"--gradcam {out_path}: the heat map is written as PNG; give a .png path")
    with files.atomic_path(out_path, suffix=".png") as tmp:
        decode.write_image(tmp, picture)
    return {"path": out_path, "class_name": clf.class_names[k], "class_index": k}
