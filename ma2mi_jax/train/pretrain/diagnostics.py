"""Is the pretext task learned? Fixed held-out macro pairs, evaluated against three baselines.

Every pre-training run holds `train.eval_clips` clips out of training and draws `train.eval_pairs`
fixed (x_t, x_{t+k}) pairs from them (seeded, unaugmented, the same at every evaluation and after a
resume). Every `train.eval_every` steps and at the end, with BatchNorm in eval mode:

    rec         L1(DiT(z_t, c), z_{t+k})                        the loss as trained
    copy        L1(z_t, z_{t+k})                                predicting "nothing moves"
    shuffled_c  L1(DiT(z_t, c of another pair), z_{t+k})        c rolled by one within each batch
    static_c    L1(DiT(z_t, c(x_t, x_t)), z_{t+k})              c without motion

in the DiT's space (latent, or pixels in [-1, 1] for the pixel variant) and, in latent space, the
same four after decoding with the frozen VAE (`pixel_*`, L1 against x_{t+k} in [-1, 1]; `vae_floor`
is the VAE's own reconstruction error of x_{t+k}). The supervised (MAER) objective reports `ce` and
`accuracy` on the held-out pairs. `rec < copy` says the DiT predicts motion at all; `shuffled_c >
rec` says it uses the condition, i.e. that the action encoder carries information about the pair.
Written to `<workdir>/diagnostics.json` (latest at top level, every evaluation under "history").
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ma2mi_jax import files
from ma2mi_jax.data import pretrain_pipeline as pipeline
from ma2mi_jax.data.media import decode, facecrop
from ma2mi_jax.data.records import DataError, MacroClip
from ma2mi_jax.train.pretrain import step as pretrain_step
from ma2mi_jax.train.pretrain.state import Models, PyTree

FILENAME = "diagnostics.json"
# Streams of the evaluation set, independent of training's (seed, element) streams.
_HOLDOUT_STREAM = 7001
_PAIR_STREAM = 7002


def hold_out(
    clips: Sequence[MacroClip], num_eval: int, batch_size: int, seed: int
) -> tuple[list[MacroClip], list[MacroClip]]:
    """(training clips, evaluation clips): `num_eval` clips drawn by the seed, the rest for training."""
    if num_eval <= 0:
        return list(clips), []
    if len(clips) - num_eval < batch_size:
        raise DataError(
            f"train.eval_clips={num_eval} leaves {len(clips) - num_eval} of {len(clips)} clips for training, "
            f"fewer than train.batch_size={batch_size}; lower train.eval_clips (0 turns the diagnostics off)"
        )
    order = np.random.default_rng([seed, _HOLDOUT_STREAM]).permutation(len(clips))
    held = set(order[:num_eval].tolist())
    train = [c for i, c in enumerate(clips) if i not in held]
    return train, [clips[i] for i in sorted(held)]


def eval_pairs(
    clips: Sequence[MacroClip],
    num_pairs: int,
    batch_size: int,
    image_size: int,
    k_min: int,
    k_max: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Fixed pairs {"frame0","frame1": uint8[N,H,W,3], "label","k": int32[N]}, N = num_pairs in whole batches.

    Pair i comes from clip i mod len(clips), with k and t drawn from its own stream (seed, i), so the
    set depends only on the clips, the seed and the sizes.
    """
    n = -(-max(num_pairs, 1) // batch_size) * batch_size
    f0 = np.empty((n, image_size, image_size, 3), np.uint8)
    f1 = np.empty_like(f0)
    label, ks = np.empty(n, np.int32), np.empty(n, np.int32)
    for i in range(n):
        clip = clips[i % len(clips)]
        k, t = pipeline.sample_k_t(
            np.random.default_rng([seed, _PAIR_STREAM, i]), clip.num_frames, k_min, k_max
        )
        f0[i], f1[i] = decode.read_clip_frames(clip, [t, t + k], image_size)
        label[i], ks[i] = clip.label, k
    return {"frame0": f0, "frame1": f1, "label": label, "k": ks}


def _l1_per_sample(a: jax.Array, b: jax.Array) -> jax.Array:
    """[B,...] x2 -> f32[B] mean absolute difference per sample."""
    return jnp.mean(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)), axis=tuple(range(1, a.ndim)))


def make_eval_fn(
    models: Models, vae: Any = None
) -> Callable[[PyTree, PyTree, PyTree, dict], dict[str, jax.Array]]:
    """(params, batch_stats, vae_params, batch) -> per-sample metrics f32[B] each (eval-mode BatchNorm)."""

    def supervised(params, batch_stats, vae_params, batch):
        variables = {"params": params, "batch_stats": batch_stats}
        logits = models.classifier.apply(variables, batch["frame0"], batch["frame1"], train=False)  # [B,K]
        logp = jax.nn.log_softmax(logits, axis=-1)
        ce = -jnp.take_along_axis(logp, batch["label"][:, None], axis=-1)[:, 0]  # [B]
        acc = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
        return {"ce": ce, "accuracy": acc}

    def reconstruction(params, batch_stats, vae_params, batch):
        variables = {"params": params["miacnet"], "batch_stats": batch_stats["miacnet"]}

        def condition(a, b):  # frames [B,H,W,3] -> (c [B,C], fused map [B,h',w',C])
            out = models.miacnet.apply(variables, a, b, train=False)
            return out["c"], out["map"]

        net = models.miacnet.apply(variables, batch["frame0"], batch["frame1"], train=False)
        z0, z1 = pretrain_step.targets(models, vae, vae_params, batch, net)  # [B,h,w,ch]
        c = net["c"], net["map"]
        conditions = {
            "rec": c,
            # every pair gets its neighbour's condition (c and, with a map condition, the map)
            "shuffled_c": tuple(jnp.roll(v, 1, axis=0) for v in c),
            "static_c": condition(batch["frame0"], batch["frame0"]),
        }
        preds = {
            k: models.dit.apply({"params": params["dit"]}, z0, *v).astype(jnp.float32)
            for k, v in conditions.items()
        }
        preds["copy"] = z0
        out = {k: _l1_per_sample(p, z1) for k, p in preds.items()}
        if vae is not None:
            x1 = pretrain_step.to_unit_range(pretrain_step.target_frames(models, batch, net)[1])  # [-1,1]
            for k, p in preds.items():
                out[f"pixel_{k}"] = _l1_per_sample(vae.decode_float(vae_params, p), x1)
            out["vae_floor"] = _l1_per_sample(vae.decode_float(vae_params, z1), x1)
        return out

    return supervised if models.supervised else reconstruction


@dataclasses.dataclass
class Diagnostics:
    """The evaluation set, its jitted metric function and the history written to diagnostics.json."""

    pairs: dict[str, np.ndarray]
    batch_size: int
    eval_fn: Callable[..., dict[str, jax.Array]]
    path: str
    space: str
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)

    @property
    def num_pairs(self) -> int:
        """Pairs in the evaluation set."""
        return int(self.pairs["frame0"].shape[0])

    def evaluate(
        self, step: int, params: PyTree, batch_stats: PyTree, vae_params: PyTree
    ) -> dict[str, float]:
        """Metrics at `step`, averaged over the evaluation pairs, appended to the history and written."""
        sums: dict[str, float] = {}
        for start in range(0, self.num_pairs, self.batch_size):
            batch = {k: v[start : start + self.batch_size] for k, v in self.pairs.items()}
            per_sample = jax.device_get(self.eval_fn(params, batch_stats, vae_params, batch))
            for k, v in per_sample.items():
                sums[k] = sums.get(k, 0.0) + float(np.sum(v))
        entry = {"step": int(step), **{k: v / self.num_pairs for k, v in sums.items()}}
        entry.update(ratios(entry))
        self.history = [h for h in self.history if h["step"] < step] + [entry]
        self.write()
        return entry

    def write(self) -> None:
        """diagnostics.json: the latest evaluation at top level, all of them under "history"."""
        latest = self.history[-1] if self.history else {}
        files.write_json(
            self.path,
            {**latest, "space": self.space, "eval_pairs": self.num_pairs, "history": self.history},
        )

    def resume(self, start: int) -> None:
        """Keep the evaluations of an earlier run up to `start` (a resumed run continues its history)."""
        if start > 0:
            old = read(os.path.dirname(self.path))
            self.history = [h for h in old.get("history", []) if h["step"] <= start]


def ratios(entry: dict[str, float]) -> dict[str, float]:
    """rec / copy and shuffled_c / rec (and static_c / rec) where those terms exist."""
    if "rec" not in entry:
        return {}
    rec = max(entry["rec"], 1e-12)
    return {
        "rec_over_copy": entry["rec"] / max(entry["copy"], 1e-12),
        "shuffled_over_rec": entry["shuffled_c"] / rec,
        "static_over_rec": entry["static_c"] / rec,
    }


def _condition_clause(rec: float, shuffled: float, static: float) -> str:
    """What the condition c does to L_rec, against a shuffled and a motionless c."""
    gain = 1.0 - rec / max(shuffled, 1e-12)
    static_gain = 100 * (1.0 - rec / max(static, 1e-12))
    if abs(gain) < 5e-4:
        said = "c makes no difference to L_rec against a shuffled c"
    elif gain > 0:
        said = f"c lowers L_rec by {100 * gain:.1f} % against a shuffled c"
    else:
        said = f"c raises L_rec by {100 * (rec / max(shuffled, 1e-12) - 1):.1f} % against a shuffled c"
    return f"{said} ({static_gain:+.1f} % against a motionless c)"


def _copy_clause(rec: float, copy: float) -> str:
    """How the prediction compares with copying z_t."""
    ratio = rec / max(copy, 1e-12)
    if ratio < 1.0:
        return f"the prediction beats copying z_t by {100 * (1 - ratio):.1f} %"
    if ratio < 2.0:
        return f"the prediction is {100 * (ratio - 1):.1f} % worse than copying z_t"
    return f"the prediction's L_rec is {ratio:.1f} times that of copying z_t"


def summary_line(entry: dict[str, float]) -> str:
    """One sentence: does the prediction beat copying z_t, and does it use the condition c?"""
    if "accuracy" in entry:
        return f"held-out macro pairs: accuracy {entry['accuracy']:.3f}, cross-entropy {entry['ce']:.4f}"
    if "rec" not in entry:
        return "no diagnostics"
    rec = entry["rec"]
    condition = _condition_clause(rec, entry["shuffled_c"], entry["static_c"])
    return (
        f"{condition}; {_copy_clause(rec, entry['copy'])} "
        f"(L_rec {rec:.4f}, copy {entry['copy']:.4f}, step {entry['step']}, held-out pairs)"
    )


def build(
    config: ml_collections.ConfigDict, models: Models, vae: Any, eval_clips: Sequence[MacroClip], workdir: str
) -> Diagnostics | None:
    """The run's Diagnostics (None when train.eval_clips is 0)."""
    if not eval_clips:
        return None
    c = config
    if c.data.face_crop:
        eval_clips, _ = facecrop.crop_clips(
            eval_clips, os.path.join(workdir, "faces"), int(c.data.image_size), strict=bool(c.data.strict)
        )
    pairs = eval_pairs(
        eval_clips,
        int(c.train.eval_pairs),
        int(c.train.batch_size),
        int(c.data.image_size),
        int(c.data.k_min),
        int(c.data.k_max),
        int(c.seed),
    )
    return Diagnostics(
        pairs=pairs,
        batch_size=int(c.train.batch_size),
        eval_fn=jax.jit(make_eval_fn(models, vae)),
        path=os.path.join(workdir, FILENAME),
        space="classification" if models.supervised else str(c.space),
    )


def read(workdir: str) -> dict:
    """The latest evaluation of a pre-training workdir's diagnostics.json ({} when there is none)."""
    path = os.path.join(workdir, FILENAME)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def tensorboard_values(entry: dict[str, float]) -> dict[str, float]:
    """diagnostics entry -> TensorBoard scalar names ("eval/rec", "eval/pixel_copy", ...)."""
    return {f"eval/{k}": v for k, v in entry.items() if k != "step"}
