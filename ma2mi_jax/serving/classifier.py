"""Exported classifiers: write one, load it in one call, predict from an onset/apex pair or a clip.

An export is a folder:
    classifier.json   format tag, class names, input size and normalisation, model architecture,
                      the fold (held-out subjects) it was trained without, and the run's config
    variables/        Orbax checkpoint of {"params", "batch_stats"} of MIACClassifier
It is written under a temporary name and renamed into place, so a crash leaves no half export.

    clf = ma2mi_jax.load_classifier("exports/sub01")
    clf.predict_pair("onset.jpg", "apex.jpg")          # {"class_name", "class_index", "probabilities"}
    clf.predict_clip("CASME2/Cropped/sub01/EP02_01f", onset=46, apex=59)
    clf.predict_clip("me.mp4")    # the face cropped, onset = the first frame, apex found

`predict_clip` takes a folder of numbered frames or a video file, and returns besides the prediction
the frames it used ("onset_frame", "apex_frame": numbers in the file names, or a video's frame
indices from 0; "unit" says which), "apex_rule" (how the apex was chosen) and "pair"
(`clip_input.ClipPair`: the prepared frames and every choice). The face crop, the onset and the
apex are chosen as `serving.clip_input` says: the apex, unless given, is the frame after the onset
whose normalise(frame) - normalise(onset), registered when the model registers its pairs, has the
largest mean absolute value.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ma2mi_jax import checkpoints, files, pretrained
from ma2mi_jax.checkpoints import CheckpointError
from ma2mi_jax.data.media import decode, frames
from ma2mi_jax.data.records import DataError
from ma2mi_jax.errors import ExistsError, NotFoundError
from ma2mi_jax.models import miacnet
from ma2mi_jax.serving import clip_input, model_card

FORMAT = "ma2mi_jax.classifier"
FORMAT_VERSION = 1
META_FILE = "classifier.json"
VARIABLES_DIR = "variables"

Image = str | os.PathLike | np.ndarray


def is_exported_classifier(path: str | os.PathLike) -> bool:
    """True when `path` is a folder written by `export_classifier`."""
    return (Path(path) / META_FILE).is_file() and (Path(path) / VARIABLES_DIR).is_dir()


def _normalisation() -> dict:
    return {
        "input": "RGB uint8 in [0, 255], NHWC, resized to image_size x image_size with OpenCV "
        "(INTER_AREA when shrinking, INTER_LINEAR when growing); the model normalises internally",
        "mean": list(miacnet.IMAGENET_MEAN),
        "std": list(miacnet.IMAGENET_STD),
        "action_input": "normalise(apex) - normalise(onset)",
    }


def export_classifier(
    out_dir: str | os.PathLike,
    variables: dict,
    config: ml_collections.ConfigDict,
    *,
    fold: str,
    test_subjects: Sequence[str] = (),
    source: str = "",
    overwrite: bool = False,
    run_results: dict | None = None,
    run_plan: dict | None = None,
) -> Path:
    """Write an exported classifier folder (atomically) with its model card; returns its path.

    variables: {"params", "batch_stats"} of ONE MIACClassifier (no fold axis). `run_results` and
    `run_plan` (the cross-validation's results.json and plan.json) fill the card's figures and folds.
    """
    out = Path(out_dir).absolute()
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExistsError(f"{out} exists and is not empty; choose another --out or pass --overwrite")
    class_names = [str(c) for c in config.data.class_names]
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "class_names": class_names,
        "image_size": int(config.data.image_size),
        "normalisation": _normalisation(),
        "model": {
            "resnet_width": int(config.model.resnet_width),
            "fusion": str(config.model.fusion),
            "register_iterations": miacnet.register_iterations(config.model),
            "num_classes": len(class_names),
            "dtype": str(config.dtype),
        },
        "fold": fold,
        "test_subjects": list(test_subjects),
        "source": source,
        "config": checkpoints.config_to_dict(config),
    }
    model = _model(meta)
    _check_variables(model, meta["image_size"], variables, f"variables for {out}")
    with files.atomic_dir(out) as tmp:
        tree = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
        checkpoints.save_tree(Path(tmp) / VARIABLES_DIR, tree)
        (Path(tmp) / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        card = model_card.render(meta, META_FILE, run_results, run_plan)
        (Path(tmp) / model_card.CARD_FILE).write_text(card, encoding="utf-8")
    return out


def _model(meta: dict):
    m = meta["model"]
    cfg = ml_collections.ConfigDict(
        {
            "resnet_width": m["resnet_width"],
            "fusion": m["fusion"],
            "register_iterations": m.get("register_iterations", 0),
        }
    )
    return miacnet.classifier_from_config(cfg, int(m["num_classes"]), m.get("dtype", "float32"))


def _abstract_variables(model, image_size: int) -> dict:
    """Shapes of the model's {"params", "batch_stats"}."""
    dummy = jnp.zeros((1, image_size, image_size, 3), jnp.uint8)
    v = jax.eval_shape(lambda: model.init(jax.random.key(0), dummy, dummy, train=False))
    return {"params": v["params"], "batch_stats": v.get("batch_stats", {})}


def _check_variables(model, image_size: int, variables: dict, what: str) -> dict:
    """`variables` in the model's structure; an error lists mismatching keys and shapes."""
    target = _abstract_variables(model, image_size)
    return {
        col: pretrained.graft(
            target[col],
            variables.get(col, {}),
            f"{col} of {what}",
            "The export's classifier.json 'model' entry (resnet_width, fusion, num_classes) does not "
            "describe these weights; re-export them from their training workdir.",
        )
        for col in ("params", "batch_stats")
    }


def read_meta(path: str | os.PathLike) -> dict:
    """classifier.json of an export, checked for its format tag."""
    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise NotFoundError(
            f"{path} is not an exported classifier (no {META_FILE}); write one with scripts/export.py"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path}: format {meta.get('format')!r} is not {FORMAT!r}")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{meta_path}: format version {meta['format_version']} is newer than this ma2mi_jax reads "
            f"({FORMAT_VERSION}); update ma2mi_jax"
        )
    return meta


def load_exported_variables(path: str | os.PathLike) -> dict:
    """{"params", "batch_stats"} of an export as numpy arrays, checked against its classifier.json."""
    path = Path(path).absolute()
    meta = read_meta(path)
    raw = checkpoints.restore_tree(path / VARIABLES_DIR)
    variables = _check_variables(_model(meta), int(meta["image_size"]), raw, str(path))
    return jax.tree.map(np.asarray, variables)


@dataclasses.dataclass
class Classifier:
    """A loaded classifier: model, variables and what its inputs must look like."""

    model: Any
    variables: dict
    class_names: tuple[str, ...]
    image_size: int
    meta: dict
    card: str = ""  # MODEL_CARD.md of the export ("" for exports written before cards)

    def __post_init__(self) -> None:
        def probs(variables, onset, apex):  # uint8[B,H,W,3] x2 -> f32[B,N]
            logits = self.model.apply(variables, onset, apex, train=False)
            return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

        self._probs = jax.jit(probs)

    def prepare(self, image: Image) -> np.ndarray:
        """A path or an RGB array -> uint8[image_size, image_size, 3], as in training."""
        if isinstance(image, str | os.PathLike):
            return decode.read_image(os.fspath(image), self.image_size)
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise ValueError(f"expected an RGB image [H,W,3], got shape {arr.shape}")
        if arr.dtype != np.uint8:
            arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return decode.resize_square(arr, self.image_size)

    def predict_batch(self, onset: np.ndarray, apex: np.ndarray) -> np.ndarray:
        """Prepared frames uint8[B,H,W,3] x2 -> probabilities f32[B,N]."""
        return np.asarray(self._probs(self.variables, jnp.asarray(onset), jnp.asarray(apex)))

    def predict_pair(self, onset: Image, apex: Image) -> dict:
        """Class probabilities of one onset/apex pair (file paths or RGB arrays)."""
        p = self.predict_batch(self.prepare(onset)[None], self.prepare(apex)[None])[0]  # [N]
        i = int(np.argmax(p))
        return {"class_name": self.class_names[i], "class_index": i, "probabilities": p}

    def predict_clip(
        self,
        path: str | os.PathLike,
        onset: int | None = None,
        apex: int | None = None,
        *,
        face_crop: str = "auto",
    ) -> dict:
        """Prediction for a clip (frame folder or video): the first frame or `onset`, the found or given apex.

        Returns predict_pair's keys and "onset_frame", "apex_frame", "unit", "apex_rule", "pair".
        """
        iterations = int(self.meta["model"].get("register_iterations", 0))
        pair = clip_input.clip_pair(
            path, self.image_size, iterations, onset=onset, apex=apex, face_crop=face_crop
        )
        result = self.predict_pair(pair.onset, pair.apex)
        return {
            **result,
            "onset_frame": pair.onset_frame,
            "apex_frame": pair.apex_frame,
            "unit": pair.unit,
            "apex_rule": pair.apex_rule,
            "pair": pair,
        }


def clip_frame_paths(folder: str | os.PathLike, onset: int, apex: int) -> tuple[str, str]:
    """Paths of the frames numbered `onset` and `apex` in a clip folder."""
    listed = dict(frames.list_frames(os.fspath(folder)))
    if not listed:
        raise NotFoundError(f"{folder}: no numbered image frames")
    missing = [n for n in (onset, apex) if n not in listed]
    if missing:
        raise DataError(
            f"{folder}: no frame numbered {missing} "
            f"(frames {min(listed)}..{max(listed)}, {len(listed)} files)"
        )
    return listed[onset], listed[apex]


def load_classifier(path: str | os.PathLike) -> Classifier:
    """Load an exported classifier folder in one call."""
    meta = read_meta(path)
    model = _model(meta)
    variables = jax.tree.map(jnp.asarray, load_exported_variables(path))
    card = Path(path) / model_card.CARD_FILE
    return Classifier(
        model=model,
        variables=variables,
        class_names=tuple(meta["class_names"]),
        image_size=int(meta["image_size"]),
        meta=meta,
        card=card.read_text(encoding="utf-8") if card.is_file() else "",
    )
