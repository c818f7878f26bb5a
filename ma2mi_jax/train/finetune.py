"""Cross-validated fine-tuning of MIACNet on a micro-expression data set, all folds at once.

`run_cross_validation(config, workdir)`:
1. reads the data set (printing what was kept, dropped and repaired), decodes every onset/apex pair
   once, and splits the samples into the protocol's folds (LOSO or subject-independent k-fold);
2. initialises the classifier from `config.init` (MA2MI pre-training workdir, exported classifier,
   ImageNet ResNet18, or scratch) -- the same starting point for every fold;
3. trains the folds in groups of `finetune.folds_per_step`, parameters and optimiser state stacked
   on a fold axis and one jit-compiled step vmapped over it (or one fold at a time with
   `finetune.sequential`), each fold drawing batches only from its own training subjects; with
   `finetune.aux_rec_weight > 0` the loss is CE + aux_rec_weight * L1(DiT(z_onset, c), z_apex), each
   fold training its own copy of the pre-trained DiT of `config.init` (the frozen VAE outside the
   optimiser; pixels when that pre-training run used space='pixel');
4. evaluates every held-out sample with its own fold's model every `train.log_every` epochs and at
   the last epoch, and reports the pooled metrics of the LAST epoch (results.json, predictions.csv,
   confusion_matrix.png, console table). A best-epoch-per-fold figure, selected on the test subject,
   is printed only under a label saying so.

Checkpoints (workdir/checkpoints/<group>/<epoch>) hold the stacked fold state, the data iterator
positions and the evaluation history; a killed run continues from the latest one and ends with the
same results.json as an unbroken run. Finished groups leave workdir/folds/<group>.json.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from ma2mi_jax import checkpoints, metrics, preflight, report
from ma2mi_jax.data.records import DataError, MicroSample
from ma2mi_jax.errors import ConfigError, InitError, NotFoundError, WorkdirError
from ma2mi_jax.train import folds as folds_lib
from ma2mi_jax.train import observe, optim

log = logging.getLogger(__name__)

FINAL_FOLD = "all"  # name of the model trained on every subject (finetune.final_model)
BEST_EPOCH_LABEL = "best epoch per fold, selected on the test subject — optimistic, not a valid estimate"
PLAN_JSON = "plan.json"
CONFIG_JSON = "config.json"


# ----------------------------------------------------------------------------- plan


@dataclasses.dataclass(frozen=True)
class FoldSpec:
    """One fold of the run: its global index, name, held-out subjects and sample indices."""

    index: int
    name: str
    test_subjects: tuple[str, ...]
    train_indices: np.ndarray
    test_indices: np.ndarray


@dataclasses.dataclass(frozen=True)
class Group:
    """Folds trained together (one vmapped step); `steps_per_epoch` is shared by all of them."""

    name: str
    folds: tuple[FoldSpec, ...]
    steps_per_epoch: int


def make_groups(
    fold_specs: Sequence[FoldSpec], folds_per_step: int, batch_size: int, final: FoldSpec | None
) -> list[Group]:
    """Cross-validation folds in groups of `folds_per_step` (0 = all), then the final model alone.

    Every cross-validation fold gets the same number of steps per epoch (enough for the largest
    training set to be seen once), so a fold's training does not depend on how folds are grouped.
    """
    steps = math.ceil(max(len(f.train_indices) for f in fold_specs) / batch_size)
    size = len(fold_specs) if folds_per_step <= 0 else folds_per_step
    groups = [
        Group(f"group_{g:03d}", tuple(fold_specs[i : i + size]), steps)
        for g, i in enumerate(range(0, len(fold_specs), size))
    ]
    if final is not None:
        groups.append(Group(FINAL_FOLD, (final,), math.ceil(len(final.train_indices) / batch_size)))
    return groups


def _plan_dict(
    config: ml_collections.ConfigDict, groups: Sequence[Group], samples: Sequence[MicroSample]
) -> dict:
    """What must not change between a run and its resumption."""
    aux_weight = float(config.finetune.aux_rec_weight)
    # Only when on, so that the plans of runs without the auxiliary loss keep their keys.
    aux_plan = {"aux_rec_weight": aux_weight} if aux_weight > 0 else {}
    return {
        "dataset": config.data.name,
        "num_samples": len(samples),
        "class_names": list(config.data.class_names),
        "seed": int(config.seed),
        "epochs": int(config.train.epochs),
        "batch_size": int(config.train.batch_size),
        **aux_plan,
        "groups": [
            {
                "name": g.name,
                "steps_per_epoch": g.steps_per_epoch,
                "folds": [
                    {
                        "name": f.name,
                        "test_subjects": list(f.test_subjects),
                        "num_train": len(f.train_indices),
                        "num_test": len(f.test_indices),
                    }
                    for f in g.folds
                ],
            }
            for g in groups
        ],
    }


def _check_or_write_plan(workdir: Path, plan: dict) -> None:
    """Write plan.json, or check that a resumed run has the same plan."""
    path = workdir / PLAN_JSON
    if path.exists():
        old = json.loads(path.read_text())
        diff = [k for k in sorted(set(old) | set(plan)) if old.get(k) != plan.get(k)]
        if diff:
            raise WorkdirError(
                f"{workdir} holds a run with a different plan ({', '.join(diff)} differ; see {path}). "
                "Resume with the same config (seed, epochs, batch size, folds_per_step, data) or use a "
                "new --workdir."
            )
        return
    report.write_json(path, plan)


# ----------------------------------------------------------------------------- data


def read_data(config: ml_collections.ConfigDict) -> tuple[list[MicroSample], np.ndarray]:
    """Samples of the data set and their decoded onset/apex pairs uint8[N,2,H,W,3]."""
    from ma2mi_jax.data import pipeline, readers

    samples, read_report = readers.read_micro(config.data)
    log.info("%s", read_report.summary())
    pairs = pipeline.load_micro_pairs(
        samples, int(config.data.image_size), strict=bool(config.data.strict), report=read_report
    )
    if not config.data.strict and read_report.dropped:
        samples, pairs = pipeline.drop_bad_pairs(samples, pairs, read_report)
    check_classes(samples, tuple(config.data.class_names))
    return samples, pairs


def check_classes(samples: Sequence[MicroSample], class_names: Sequence[str]) -> None:
    """Every class of data.class_names must have samples, and labels must agree with the names."""
    counts = np.bincount([s.label for s in samples], minlength=len(class_names))
    if len(counts) > len(class_names):
        raise DataError(
            f"samples carry label {len(counts) - 1} but data.class_names has {len(class_names)} classes"
        )
    for s in samples:
        if class_names[s.label] != s.emotion:
            raise DataError(
                f"sample {s.clip_id}: label {s.label} is '{class_names[s.label]}' in data.class_names but "
                f"the sample's emotion is '{s.emotion}'; the class list does not match the data"
            )
    empty = [name for name, n in zip(class_names, counts, strict=True) if n == 0]
    if empty:
        raise DataError(
            f"class(es) {empty} of data.class_names have no samples in the data set "
            f"(counts: {dict(zip(class_names, counts.tolist(), strict=True))}); remove them from "
            "data.class_names or map raw emotions onto them with data.label_map"
        )


def fold_specs_from_protocol(
    config: ml_collections.ConfigDict, samples: Sequence[MicroSample]
) -> list[FoldSpec]:
    """The protocol's folds as FoldSpecs, checked for subject overlap and empty training sets."""
    from ma2mi_jax.data import protocols

    folds = protocols.make_folds(
        samples, config.protocol.name, int(config.protocol.num_folds), int(config.seed)
    )
    log.info("%s", protocols.describe(folds))
    specs = []
    subjects = np.asarray([s.subject for s in samples])
    for i, f in enumerate(folds):
        train = np.asarray(f.train_indices, np.int64)
        test = np.asarray(f.test_indices, np.int64)
        if len(train) == 0:
            raise DataError(f"fold {f.name} has no training samples")
        leak = set(subjects[train]) & set(subjects[test])
        if leak:
            raise DataError(
                f"fold {f.name}: subject(s) {sorted(leak)} are in both its training and test sets"
            )
        specs.append(FoldSpec(i, str(f.name), tuple(str(s) for s in f.test_subjects), train, test))
    return specs


class GroupBatches:
    """Fold-stacked training batches of a group: one seeded stream per fold, stacked on axis 0.

    Fold i's stream depends only on (seed, the fold's global index) and its training indices, so a
    fold sees the same batches whatever group it is in and in sequential mode.
    """

    def __init__(self, samples, pairs, group_folds: Sequence[FoldSpec], config: ml_collections.ConfigDict):
        from ma2mi_jax.data import pipeline

        self._iters = [
            pipeline.fold_train_iterator(
                samples,
                [f.train_indices],
                image_size=int(config.data.image_size),
                batch_size=int(config.train.batch_size),
                seed=_fold_seed(int(config.seed), f.index),
                augment=config.data.augment,
                workers=0,
                prefetch=int(config.data.prefetch),
                pairs=pairs,
                threads=1,
            )
            for f in group_folds
        ]

    def __next__(self) -> dict[str, np.ndarray]:
        batches = [next(it) for it in self._iters]  # each leaf [1,B,...]
        return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}  # [F,B,...]

    def __iter__(self):
        return self

    def get_state(self) -> list:
        """Positions of every fold's stream (JSON-able)."""
        return [it.get_state() for it in self._iters]

    def set_state(self, state: list) -> None:
        """Restore positions saved by `get_state`."""
        if len(state) != len(self._iters):
            raise ValueError(f"iterator state holds {len(state)} folds, the group has {len(self._iters)}")
        for it, s in zip(self._iters, state, strict=True):
            it.set_state(s)


def _fold_seed(seed: int, fold_index: int) -> int:
    """Data seed of one fold's stream, derived from the run seed and the fold's global index."""
    return int(np.random.SeedSequence([seed, fold_index]).generate_state(1)[0])


def eval_index_batches(test_indices: Sequence[np.ndarray], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-fold test indices padded to a common grid: idx int64[nb,F,B] and mask bool[nb,F,B]."""
    longest = max((len(t) for t in test_indices), default=0)
    nb = max(1, math.ceil(longest / batch_size))
    idx = np.zeros((len(test_indices), nb * batch_size), np.int64)
    mask = np.zeros_like(idx, dtype=bool)
    for f, t in enumerate(test_indices):
        idx[f, : len(t)] = t
        mask[f, : len(t)] = True
    shape = (len(test_indices), nb, batch_size)
    return idx.reshape(shape).transpose(1, 0, 2), mask.reshape(shape).transpose(1, 0, 2)


# ----------------------------------------------------------------------------- model and init


def build_classifier(config: ml_collections.ConfigDict):
    """The MIACClassifier of `config.model` with one output per class."""
    from ma2mi_jax.models import miacnet

    return miacnet.classifier_from_config(config.model, len(config.data.class_names), config.dtype)


def initial_variables(config: ml_collections.ConfigDict, model) -> tuple[dict, str]:
    """Classifier variables {"params","batch_stats"} from `config.init`, and a line saying where from.

    "" / "scratch": random (seeded by config.seed); "imagenet:<file>": torchvision ResNet18 weights in
    both encoders; otherwise a MA2MI pre-training workdir (or an exported classifier) whose MIACNet
    goes into `miacnet`. The head always starts at zero.
    """
    size = int(config.data.image_size)
    dummy = jnp.zeros((1, size, size, 3), jnp.uint8)
    variables = jax.jit(lambda k: model.init(k, dummy, dummy, train=False))(jax.random.key(int(config.seed)))
    variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    init = str(config.init).strip()
    if init in ("", "scratch"):
        return variables, "random initialisation (config.init='scratch'), head zero-initialised"
    if init.startswith("imagenet:"):
        return _init_imagenet(config, variables, init.removeprefix("imagenet:"))
    path = Path(init)
    preflight.check_init(init)
    from ma2mi_jax import inference

    if inference.is_exported_classifier(path):
        source = inference.load_variables(path)
        source = {"params": source["params"]["miacnet"], "batch_stats": source["batch_stats"]["miacnet"]}
        what = f"MIACNet of the exported classifier {path}"
    else:
        source = checkpoints.load_pretrained_miacnet(str(path))
        what = f"MA2MI pre-trained MIACNet from {path}"
    for col in ("params", "batch_stats"):
        tree = source.get(col, {})
        if isinstance(tree, dict) and "miacnet" in tree:  # a full pre-training layout
            tree = tree["miacnet"]
        variables[col] = dict(variables[col])
        variables[col]["miacnet"] = graft(
            variables[col]["miacnet"], tree, f"{col} of {path}", _architecture_hint(tree, config)
        )
    return variables, what + "; head zero-initialised"


def _init_imagenet(config: ml_collections.ConfigDict, variables: dict, path: str) -> tuple[dict, str]:
    """torchvision ResNet18 weights into every encoder of MIACNet."""
    if int(config.model.resnet_width) != 64:
        raise ConfigError(
            f"config.init='imagenet:...' needs model.resnet_width=64 (torchvision ResNet18), "
            f"got {config.model.resnet_width}"
        )
    from ma2mi_jax.models import resnet_import

    try:
        trunk = resnet_import.load_torchvision_resnet18(path)  # {"params","batch_stats"} of one trunk
    except (ValueError, OSError, ImportError) as err:  # the loader's messages name the file and the fix
        raise InitError(f"config.init='imagenet:{path}': {err}") from None
    encoders = [e for e in ("position_encoder", "action_encoder") if e in variables["params"]["miacnet"]]
    for col in ("params", "batch_stats"):
        net = dict(variables[col]["miacnet"])
        for e in encoders:
            net[e] = graft(net[e], trunk[col], f"{col} of {path}", "the file must be a torchvision ResNet18")
        variables[col] = {**variables[col], "miacnet": net}
    return (
        variables,
        f"ImageNet ResNet18 weights from {path} in {' and '.join(encoders)}; head zero-initialised",
    )


def _flat(tree: Any) -> dict[str, Any]:
    """{"a/b/c": leaf} of a nested dict."""
    return {
        "/".join(str(getattr(k, "key", k)) for k in path): leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def graft(target: Any, source: Any, what: str, hint: str) -> Any:
    """`source` in the structure of `target`; an error lists every missing, extra or mis-shaped key."""
    t, s = _flat(target), _flat(source)
    problems = [f"  missing in checkpoint: {k} {tuple(np.shape(t[k]))}" for k in t if k not in s]
    problems += [f"  not in the model: {k} {tuple(np.shape(s[k]))}" for k in s if k not in t]
    problems += [
        f"  shape {k}: model {tuple(np.shape(t[k]))}, checkpoint {tuple(np.shape(s[k]))}"
        for k in t
        if k in s and np.shape(t[k]) != np.shape(s[k])
    ]
    if problems:
        shown = problems[:12] + ([f"  ... and {len(problems) - 12} more"] if len(problems) > 12 else [])
        raise checkpoints.CheckpointError(
            f"{what} does not fit the model ({len(problems)} mismatching key(s)):\n"
            + "\n".join(shown)
            + f"\n{hint}"
        )
    leaves = [jnp.asarray(s[k], dtype=t[k].dtype) for k in t]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(target), leaves)


def _architecture_hint(source: Any, config: ml_collections.ConfigDict) -> str:
    """What config keys to change so the model matches a checkpoint."""
    flat = _flat(source)
    widths = {int(np.shape(v)[-1]) // 8 for k, v in flat.items() if k.endswith("layer4_1/bn2/scale")}
    has_position = any(k.startswith("position_encoder/") for k in flat)
    has_fuse = any(k.startswith("fuse_conv/") for k in flat)
    found = []
    if widths:
        found.append(f"model.resnet_width={sorted(widths)[0]}")
    if not has_position:
        found.append("model.fusion='none'")
    elif has_fuse:
        found.append("model.fusion='concat', 'concat_relu' or 'add_conv'")
    else:
        found.append("model.fusion='add' or 'mul'")
    return (
        f"The config has model.resnet_width={config.model.resnet_width}, "
        f"model.fusion={config.model.fusion!r}; "
        f"the checkpoint looks like {', '.join(found)}. Set those keys to match (or change config.init)."
    )


# ----------------------------------------------------------------------------- auxiliary L_rec


@dataclasses.dataclass(frozen=True)
class AuxReconstruction:
    """L_rec kept as an auxiliary fine-tuning loss: the pre-trained DiT and its input space.

    c is the classifier's MIACNet condition, which has no stop-gradient on P, so during fine-tuning
    L_rec reaches both encoders (all of MIACNet is fine-tuned by default, method.md).
    `dit_params` (one fold's, float32) join every fold's trainable params under "dit"; the frozen
    VAE (`vae`, None in pixel space) encodes onset and apex, and its parameters reach the step as
    the runner's frozen inputs, outside the optimiser.
    """

    dit: Any  # models.dit.DiT
    dit_params: dict
    vae: Any  # models.vae.FrozenVAE, or None in pixel space (MA2MI-dagger pre-training)
    space: str  # "latent" | "pixel", the pre-training run's config.space
    source: str  # one line saying where the DiT (and VAE) come from

    def frozen_inputs(self) -> dict:
        """The VAE's parameters ({} in pixel space)."""
        return {} if self.vae is None else self.vae.params

    def targets(self, frozen_inputs: dict, batch: dict) -> tuple[jax.Array, jax.Array]:
        """(DiT input from the onset, target from the apex): VAE latents f32[B,h,w,4] or pixels in [-1,1]."""
        from ma2mi_jax.train import steps

        if self.vae is None:
            return steps.to_unit_range(batch["frame0"]), steps.to_unit_range(batch["frame1"])
        z0 = self.vae.encode(frozen_inputs, batch["frame0"])  # [B,h,w,C]
        z1 = self.vae.encode(frozen_inputs, batch["frame1"])
        return jax.lax.stop_gradient(z0), jax.lax.stop_gradient(z1)

    def loss(self, params: dict, c: jax.Array, batch: dict, key: jax.Array, frozen_inputs: dict) -> jax.Array:
        """L1(DiT(z_onset, c), z_apex): `folds.AuxLoss`, differentiable in params["dit"] and c [B,C]."""
        from ma2mi_jax import losses

        del key  # L_rec is deterministic
        z0, z1 = self.targets(frozen_inputs, batch)
        pred = self.dit.apply({"params": params["dit"]}, z0, c)  # f32[B,h,w,C]
        return losses.l1_loss(pred, z1)


def pretraining_config(path: str | Path) -> tuple[dict, str]:
    """The config (dict) a pre-training checkpoint was written with, and the file it was read from.

    Reads the checkpoint's own "config" item; falls back to config.json of its workdir.
    """
    directory, step = checkpoints.resolve(str(path))
    try:
        with ocp.CheckpointManager(directory, item_handlers={"config": ocp.JsonCheckpointHandler()}) as mngr:
            out = mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        return dict(out["config"]), f"{directory}/{step}/config"
    except (ValueError, KeyError, FileNotFoundError, OSError):
        fallback = Path(directory).parent / checkpoints.CONFIG_FILE
        if fallback.exists():
            return json.loads(fallback.read_text()), str(fallback)
    raise checkpoints.CheckpointError(
        f"{path}: neither the checkpoint {directory}/{step} nor {fallback} holds the pre-training config; "
        "finetune.aux_rec_weight > 0 needs it to rebuild the DiT's input space"
    )


def aux_reconstruction(config: ml_collections.ConfigDict) -> AuxReconstruction | None:
    """The pre-trained DiT and frozen VAE of `config.init` for finetune.aux_rec_weight > 0 (else None).

    The DiT is `model.dit` of this config with the pre-trained weights of `config.init` (a MA2MI
    pre-training workdir). Latent space: the VAE is `vae_from_config(config.vae, data.image_size,
    seed)` with the pre-training run's seed (so a random test VAE is the one the DiT learnt with);
    pixel space (a pre-training run with space='pixel'): the DiT works on pixels in [-1,1], no VAE.
    """
    if float(config.finetune.aux_rec_weight) <= 0:
        return None
    from ma2mi_jax import inference
    from ma2mi_jax.models import dit as dit_lib
    from ma2mi_jax.models import miacnet as miacnet_lib
    from ma2mi_jax.models import vae as vae_lib

    init = str(config.init).strip()
    key_line = f"finetune.aux_rec_weight={config.finetune.aux_rec_weight} needs config.init"
    if inference.is_exported_classifier(Path(init)):
        raise InitError(
            f"{key_line} to be a MA2MI pre-training workdir (it holds the DiT), but config.init={init!r} is "
            "an exported classifier without a DiT; set config.init to the pre-training workdir or "
            "finetune.aux_rec_weight=0"
        )
    pre, pre_file = pretraining_config(init)
    if pre.get("objective", "reconstruction") != "reconstruction":
        raise InitError(
            f"{key_line} to be a reconstruction (MA2MI) pre-training run, but {pre_file} has "
            f"objective={pre.get('objective')!r} (no DiT); use another config.init or "
            "finetune.aux_rec_weight=0"
        )
    loaded = checkpoints.load_variables(init)
    if "dit" not in loaded["params"]:
        raise checkpoints.CheckpointError(
            f"{init}: the checkpoint has no 'dit' parameters (top level: {sorted(loaded['params'])}); "
            f"{key_line} to be a MA2MI pre-training workdir"
        )
    space = str(pre.get("space", "latent"))
    size = int(config.data.image_size)
    vae = None
    if space == "latent":
        _warn_vae_mismatch(config.vae, pre.get("vae", {}), pre_file)
        vae = vae_lib.vae_from_config(config.vae, size, seed=int(pre.get("seed", config.seed)))
        grid, channels = vae.latent_grid(size), vae.latent_channels
    elif space == "pixel":
        grid, channels = size, 3
    else:
        raise checkpoints.CheckpointError(
            f"{pre_file}: unknown space={space!r} (expected 'latent' or 'pixel')"
        )
    residual = bool(pre.get("model", {}).get("dit_residual", False))  # as the DiT was pre-trained
    dit = dit_lib.DiT(
        variant=str(config.model.dit), out_channels=channels, dtype=jnp.dtype(config.dtype), residual=residual
    )
    z = jnp.zeros((1, grid, grid, channels), jnp.float32)  # [1,h,w,ch]
    c = jnp.zeros((1, miacnet_lib.miacnet_from_config(config.model).features), jnp.float32)  # [1,C]
    # Shapes only (no initialisation is computed): every value comes from the checkpoint.
    fresh = jax.eval_shape(dit.init, jax.random.key(int(config.seed)), z, c)["params"]
    hint = (
        f"The pre-training run ({pre_file}) used model.dit={pre.get('model', {}).get('dit')!r}, "
        f"space={space!r}, vae.latent_channels={pre.get('vae', {}).get('latent_channels')}; this config "
        f"has model.dit={config.model.dit!r}, vae.latent_channels={config.vae.latent_channels}. "
        "Set them to match."
    )
    dit_params = graft(fresh, loaded["params"]["dit"], f"DiT params of {init}", hint)
    what = "frozen VAE latents" if vae is not None else "pixels (pre-training space='pixel', no VAE)"
    source = (
        f"L_rec kept with weight {config.finetune.aux_rec_weight}: DiT {config.model.dit} from {init} "
        f"(step {loaded['step']}) on {what}, trained per fold"
    )
    return AuxReconstruction(dit, dit_params, vae, space, source)


def _warn_vae_mismatch(vae_cfg: ml_collections.ConfigDict, pre_vae: dict, pre_file: str) -> None:
    """Warn when config.vae differs from the VAE the DiT was pre-trained with (its latents differ)."""
    differ = []
    for key in ("path", "scaling_factor", "block_out_channels", "layers_per_block", "latent_channels"):
        if key not in pre_vae:
            continue
        ours, theirs = vae_cfg.get(key), pre_vae[key]
        if isinstance(ours, list | tuple):
            ours, theirs = list(ours), list(theirs)
        if ours != theirs:
            differ.append(f"vae.{key}: {ours!r} here, {theirs!r} in pre-training")
    if differ:
        log.warning(
            "finetune.aux_rec_weight > 0: config.vae differs from the VAE of %s (%s); the DiT was trained "
            "on that VAE's latents",
            pre_file,
            "; ".join(differ),
        )


# ----------------------------------------------------------------------------- training


def _keys(seed: int, group_folds: Sequence[FoldSpec]) -> jax.Array:
    """Random keys of the group's folds, key[F]."""
    return jnp.stack([folds_lib.fold_key(seed, f.index) for f in group_folds])


def _loss_fn(logits: jax.Array, labels: jax.Array) -> jax.Array:
    from ma2mi_jax import losses

    return losses.cross_entropy(logits, labels)


class _Checkpoints:
    """Orbax CheckpointManager of one group: stacked fold state + JSON meta, step = epoch."""

    def __init__(self, directory: Path, keep: int):
        self.directory = directory.absolute()
        self.mngr = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max(1, keep), create=True, enable_async_checkpointing=False
            ),
        )

    def latest(self) -> int | None:
        return self.mngr.latest_step()

    def save(self, epoch: int, state: folds_lib.FoldState, meta: dict) -> None:
        self.mngr.save(
            epoch,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=True,
        )
        self.mngr.wait_until_finished()

    def restore(self, epoch: int, target: folds_lib.FoldState) -> tuple[folds_lib.FoldState, dict]:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        out = self.mngr.restore(
            epoch,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()),
        )
        return out["state"], out["meta"]

    def restore_host(self, epoch: int) -> dict:
        """The saved state as nested dicts of numpy arrays, independent of devices and mesh.

        A manager that knows each item's handler reads the metadata (one without them warns that
        every item "could not be restored").
        """
        handlers = {"state": ocp.PyTreeCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
        with ocp.CheckpointManager(self.directory, item_handlers=handlers) as reader:
            meta = reader.item_metadata(epoch)["state"]
            restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
            with warnings.catch_warnings():  # host numpy arrays need no sharding: Orbax's note is moot
                warnings.filterwarnings("ignore", message="Sharding info not provided")
                out = reader.restore(
                    epoch,
                    args=ocp.args.Composite(
                        state=ocp.args.PyTreeRestore(item=None, restore_args=restore_args)
                    ),
                )
        return out["state"]

    def close(self) -> None:
        self.mngr.close()


def _evaluate(
    runner, state, pairs: np.ndarray, group_folds: Sequence[FoldSpec], batch_size: int
) -> list[np.ndarray]:
    """Probabilities f32[n_test_f, N] of every fold's held-out samples through that fold's model."""
    idx, mask = eval_index_batches([f.test_indices for f in group_folds], batch_size)
    out: list[list[np.ndarray]] = [[] for _ in group_folds]
    for b in range(idx.shape[0]):
        onset = pairs[idx[b], 0]  # [F,B,H,W,3]
        apex = pairs[idx[b], 1]
        probs = runner.predict(state, onset, apex)  # [F,B,N]
        for f in range(len(group_folds)):
            out[f].append(probs[f][mask[b, f]])
    return [np.concatenate(p) for p in out]


def train_group(
    group: Group,
    *,
    config: ml_collections.ConfigDict,
    workdir: Path,
    model,
    variables: dict,
    samples: Sequence[MicroSample],
    pairs: np.ndarray,
    writer=None,
    aux: AuxReconstruction | None = None,
) -> dict:
    """Train (or resume) one group of folds to the last epoch; returns its evaluation history.

    With `aux` (finetune.aux_rec_weight > 0) every fold also trains its copy of the pre-trained DiT
    on CE + aux_rec_weight * L_rec.

    history = {"epochs": [e...], "predictions": {fold: [[pred per test sample] per eval epoch]},
               "probabilities": {fold: f32[n_test, N] at the last epoch}, "train": [...]}.
    """
    epochs = int(config.train.epochs)
    batch_size = int(config.train.batch_size)
    seed = int(config.seed)
    ft = config.finetune
    frozen = folds_lib.frozen_modules(ft)
    tx = optim.make_optimizer(
        config.train, epochs * group.steps_per_epoch, folds_lib.trainable_fn(frozen) if frozen else None
    )
    sequential = folds_lib.runs_sequentially(ft)
    mesh = None if sequential else folds_lib.fold_mesh()
    real = list(group.folds)
    padded = real + [real[0]] * (folds_lib.padded_group_size(len(real), mesh) - len(real))
    runner = folds_lib.FoldGroupRunner(
        folds_lib.make_train_step(
            model,
            tx,
            _loss_fn,
            frozen,
            aux_loss=None if aux is None else aux.loss,
            aux_weight=float(ft.aux_rec_weight),
        ),
        folds_lib.make_predict(model),
        sequential=sequential,
        mesh=mesh,
        frozen_inputs=None if aux is None else aux.frozen_inputs(),
    )
    extra = None if aux is None else {"dit": aux.dit_params}
    state = runner.place(folds_lib.init_fold_state(variables, tx, len(padded), extra))
    keys = runner.place(_keys(seed, padded))
    batches = GroupBatches(samples, pairs, padded, config)
    ckpt = _Checkpoints(workdir / "checkpoints" / group.name, int(config.train.keep_checkpoints))
    history: dict[str, Any] = {"epochs": [], "predictions": {f.name: [] for f in real}, "train": []}
    start = ckpt.latest() or 0
    if start:
        state, meta = ckpt.restore(start, state)
        state = runner.place(state)
        batches.set_state(meta["iterator"])
        history = meta["history"]
        log.info("%s: resumed at epoch %d of %d", group.name, start, epochs)
    evaluate_at = _eval_epochs(epochs, int(config.train.log_every))
    save_at = _eval_epochs(epochs, int(config.train.checkpoint_every))
    names = ", ".join(f.name for f in real)
    log.info(
        "%s: %d fold(s) [%s], %d steps/epoch, %s",
        group.name,
        len(real),
        names,
        group.steps_per_epoch,
        "sequential"
        if sequential
        else f"vmapped{' over ' + str(mesh.devices.size) + ' devices' if mesh else ''}",
    )
    probabilities = None
    progress = observe.Progress(
        epochs * group.steps_per_epoch, start * group.steps_per_epoch, desc=group.name, unit="step"
    )
    for epoch in range(start + 1, epochs + 1):
        t0 = time.perf_counter()
        # Each step's metrics are read one step late, so that preparing the next batch on the host
        # overlaps the device's work on the current step.
        step_metrics: list[dict] = []
        for _ in range(group.steps_per_epoch):
            batch = next(batches)
            batch = {"frame0": batch["frame0"], "frame1": batch["frame1"], "label": batch["label"]}
            state, m = runner.train_step(state, batch, keys)
            if step_metrics:
                progress.update(1, epoch=epoch, loss=_mean_loss(step_metrics[-1], len(real)))
            step_metrics.append(m)
        progress.update(1, epoch=epoch, loss=_mean_loss(step_metrics[-1], len(real)))
        sums = {
            k: np.sum([np.asarray(m[k])[: len(real)] for m in step_metrics], axis=0) for k in step_metrics[0]
        }
        train_stats = {k: float(np.mean(v) / group.steps_per_epoch) for k, v in sums.items()}
        _check_finite(train_stats, group.name, epoch)
        history["train"].append({"epoch": epoch, **train_stats})
        line = (
            f"{group.name} epoch {epoch}/{epochs}: loss {train_stats['loss']:.4f} "
            f"acc {train_stats['accuracy']:.3f}"
            + (f" (ce {train_stats['ce']:.4f}, rec {train_stats['rec']:.4f})" if "rec" in train_stats else "")
        )
        if epoch in evaluate_at and any(len(f.test_indices) for f in real):
            probabilities = _evaluate(runner, state, pairs, padded, batch_size)[: len(real)]
            history["epochs"].append(epoch)
            correct = total = 0
            for f, p in zip(real, probabilities, strict=True):
                pred = p.argmax(-1)
                history["predictions"][f.name].append(pred.tolist())
                correct += int((pred == np.asarray([samples[i].label for i in f.test_indices])).sum())
                total += len(pred)
            line += f" | held-out acc {correct / max(total, 1):.3f} ({total} samples)"
            if writer is not None:
                writer.add_scalar(f"{group.name}/test_accuracy", correct / max(total, 1), epoch)
        if writer is not None:
            for k, v in train_stats.items():
                writer.add_scalar(f"{group.name}/train_{k}", v, epoch)
        log.info("%s (%.1fs)", line, time.perf_counter() - t0)
        if epoch in save_at:
            meta = {"epoch": epoch, "iterator": batches.get_state(), "history": history}
            if epoch == epochs and probabilities is not None:
                meta["probabilities"] = {f.name: p.tolist() for f, p in zip(real, probabilities, strict=True)}
            ckpt.save(epoch, state, meta)
    progress.close()
    if start == epochs:  # finished before: the last checkpoint holds everything
        _, meta = ckpt.restore(epochs, state)
        history = meta["history"]
        probabilities = (
            [np.asarray(meta["probabilities"][f.name]) for f in real] if "probabilities" in meta else None
        )
    ckpt.close()
    history["probabilities"] = (
        {f.name: np.asarray(p).tolist() for f, p in zip(real, probabilities, strict=True)}
        if probabilities
        else {}
    )
    return history


def _mean_loss(metrics: dict, num_real: int) -> float:
    """Mean training loss over the real (not padding) folds of one step."""
    return float(np.mean(np.asarray(metrics["loss"])[:num_real]))


def _eval_epochs(epochs: int, every: int) -> set[int]:
    """Epochs (1-based) at multiples of `every`, plus always the last."""
    every = max(1, every)
    return {e for e in range(1, epochs + 1) if e % every == 0} | {epochs}


def _check_finite(stats: dict, group: str, epoch: int) -> None:
    """Stop with a clear message on a NaN/inf loss (checkpoints already written stay valid)."""
    bad = {k: v for k, v in stats.items() if not math.isfinite(v)}
    if bad:
        raise FloatingPointError(
            f"{group}, epoch {epoch}: non-finite training statistics {bad}; lower train.lr, set "
            "train.grad_clip, or check the data. Earlier checkpoints are kept."
        )


# ----------------------------------------------------------------------------- results


def assemble_results(
    config: ml_collections.ConfigDict,
    samples: Sequence[MicroSample],
    fold_specs: Sequence[FoldSpec],
    histories: dict[str, dict],
    init_line: str,
) -> tuple[dict, list[dict]]:
    """Pooled last-epoch metrics, per-fold figures, the test-selected bound, and prediction rows."""
    class_names = list(config.data.class_names)
    n_cls = len(class_names)
    rows, y_true, y_pred, fold_of = [], [], [], []
    best_true, best_pred, best_per_fold = [], [], []
    for f in fold_specs:
        hist = histories[f.name]
        if len(f.test_indices) == 0:
            continue
        probs = np.asarray(hist["probabilities"][f.name])
        for i, p in zip(f.test_indices, probs, strict=True):
            s = samples[int(i)]
            pred = int(np.argmax(p))
            rows.append(
                {
                    "clip_id": s.clip_id,
                    "subject": s.subject,
                    "fold": f.name,
                    "label": s.label,
                    "prediction": pred,
                    "probabilities": p,
                }
            )
            y_true.append(s.label)
            y_pred.append(pred)
            fold_of.append(f.name)
        truth = np.asarray([samples[int(i)].label for i in f.test_indices])
        per_epoch = [np.asarray(p) for p in hist["predictions"][f.name]]
        accs = [float((p == truth).mean()) for p in per_epoch]
        b = int(np.argmax(accs))
        best_per_fold.append({"fold": f.name, "epoch": hist["epochs"][b], "accuracy": accs[b]})
        best_true.extend(truth.tolist())
        best_pred.extend(per_epoch[b].tolist())
    evaluated = [f for f in fold_specs if len(f.test_indices)]
    pooled, per_fold = metrics.pooled_and_per_fold(
        np.asarray(y_true, np.int64),
        np.asarray(y_pred, np.int64),
        fold_of,
        [f.name for f in evaluated],
        n_cls,
    )
    for entry, f in zip(per_fold, evaluated, strict=True):
        entry["test_subjects"] = list(f.test_subjects)
    cm = np.asarray(pooled["confusion_matrix"])
    results = {
        "dataset": config.data.name,
        "class_names": class_names,
        "protocol": {
            "name": config.protocol.name,
            "num_folds": len(evaluated),
            "folds": [{"name": f.name, "test_subjects": list(f.test_subjects)} for f in evaluated],
        },
        "reported_epoch": "last",
        "epochs": int(config.train.epochs),
        "n": pooled["n"],
        "accuracy": pooled["accuracy"],
        "uf1": pooled["uf1"],
        "uar": pooled["uar"],
        "confusion_matrix": pooled["confusion_matrix"],
        "per_class": {
            "f1": dict(zip(class_names, metrics.per_class_f1(cm).tolist(), strict=True)),
            "recall": dict(zip(class_names, metrics.per_class_recall(cm).tolist(), strict=True)),
            "support": dict(zip(class_names, cm.sum(axis=1).tolist(), strict=True)),
        },
        "per_fold": per_fold,
        "init": init_line,
    }
    if any(len(histories[f.name]["epochs"]) > 1 for f in evaluated):
        best = metrics.summarize(np.asarray(best_true, np.int64), np.asarray(best_pred, np.int64), n_cls)
        results["best_epoch_per_fold_test_selected"] = {
            "label": BEST_EPOCH_LABEL,
            "accuracy": best["accuracy"],
            "uf1": best["uf1"],
            "uar": best["uar"],
            "per_fold": best_per_fold,
        }
    results["config"] = checkpoints.config_to_dict(config)
    return results, rows


def run_cross_validation(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Fine-tune and evaluate every fold of the protocol; write and return the results.

    The workdir, config and `config.init` are checked before the data set is read, and the
    initial weights loaded before anything is written.
    """
    preflight.check_finetune(config, workdir)
    _validate_config(config)
    samples, pairs = read_data(config)
    specs = fold_specs_from_protocol(config, samples)
    final = None
    if config.finetune.final_model:
        final = FoldSpec(len(specs), FINAL_FOLD, (), np.arange(len(samples)), np.zeros(0, np.int64))
    groups = make_groups(specs, int(config.finetune.folds_per_step), int(config.train.batch_size), final)
    model = build_classifier(config)
    variables, init_line = initial_variables(config, model)
    aux = aux_reconstruction(config)
    if aux is not None:
        init_line += f"; {aux.source}"
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    _check_or_write_plan(workdir, _plan_dict(config, groups, samples))
    checkpoints.save_config(str(workdir), config)
    log.info("init: %s", init_line)
    writer = _writer(workdir)
    histories: dict[str, dict] = {}
    try:
        for group in groups:
            done = workdir / "folds" / f"{group.name}.json"
            if done.exists():
                history = json.loads(done.read_text())
                log.info("%s: already finished (%s)", group.name, done)
            else:
                history = train_group(
                    group,
                    config=config,
                    workdir=workdir,
                    model=model,
                    variables=variables,
                    samples=samples,
                    pairs=pairs,
                    writer=writer,
                    aux=aux,
                )
                report.write_json(done, history)
            for f in group.folds:
                histories[f.name] = history
    finally:
        if writer is not None:
            writer.close()
    results, rows = assemble_results(config, samples, specs, histories, init_line)
    paths = {
        "results": workdir / report.RESULTS_JSON,
        "predictions": workdir / report.PREDICTIONS_CSV,
        "confusion matrix": workdir / report.CONFUSION_PNG,
    }
    results["files"] = {k: str(v) for k, v in paths.items()}
    report.write_predictions_csv(paths["predictions"], rows, results["class_names"])
    report.plot_confusion_matrix(
        paths["confusion matrix"],
        np.asarray(results["confusion_matrix"]),
        results["class_names"],
        title=f"{config.data.name} {config.protocol.name}, last epoch: acc {100 * results['accuracy']:.2f}%, "
        f"UF1 {results['uf1']:.4f}",
    )
    report.write_json(paths["results"], results)
    print(report.console_table(results, paths), flush=True)
    return results


def _validate_config(config: ml_collections.ConfigDict) -> None:
    """Reject settings that cannot work, naming the key."""
    if int(config.train.epochs) < 1:
        raise ConfigError(f"train.epochs must be >= 1, got {config.train.epochs}")
    if int(config.train.batch_size) < 1:
        raise ConfigError(f"train.batch_size must be >= 1, got {config.train.batch_size}")
    if int(config.finetune.folds_per_step) < 0:
        raise ConfigError(
            f"finetune.folds_per_step must be >= 0 (0 = all), got {config.finetune.folds_per_step}"
        )
    aux_weight = float(config.finetune.aux_rec_weight)
    if not (math.isfinite(aux_weight) and aux_weight >= 0):
        raise ConfigError(f"finetune.aux_rec_weight must be a finite number >= 0, got {aux_weight}")
    init = str(config.init).strip()
    if aux_weight > 0 and (init in ("", "scratch") or init.startswith("imagenet:")):
        raise ConfigError(
            f"finetune.aux_rec_weight={aux_weight} keeps L_rec as an auxiliary loss, which needs the "
            f"pre-trained DiT: config.init must be a MA2MI pre-training workdir, not {init!r}. Set "
            "--config.init=<pre-training workdir> or finetune.aux_rec_weight=0"
        )
    if config.model.fusion == "none" and config.finetune.freeze_position:
        log.warning("finetune.freeze_position has no effect with model.fusion='none' (no position encoder)")


def _writer(workdir: Path):
    """TensorBoard writer in workdir/tb (None if tensorboardX is missing)."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:  # pragma: no cover - tensorboardX is a dependency
        return None
    return SummaryWriter(str(workdir / "tb"))


def trained_fold_names(workdir: str | Path) -> list[str]:
    """Names of the folds of a workdir whose training has finished."""
    workdir = Path(workdir)
    plan_path = workdir / PLAN_JSON
    if not plan_path.exists():
        raise NotFoundError(
            f"{workdir} is not a cross-validation workdir (no {PLAN_JSON}); give the --workdir of a "
            "scripts/loso.py run"
        )
    plan = json.loads(plan_path.read_text())
    return [
        f["name"]
        for g in plan["groups"]
        if (workdir / "folds" / f"{g['name']}.json").exists()
        for f in g["folds"]
    ]


def load_fold_variables(workdir: str | Path, fold: str) -> tuple[dict, ml_collections.ConfigDict, FoldSpec]:
    """One fold's classifier {"params","batch_stats"} at its last epoch, the run's config, the fold.

    Reads the group checkpoint on the host (numpy), whatever mesh the run used.
    """
    workdir = Path(workdir)
    config_path = workdir / checkpoints.CONFIG_FILE
    plan_path = workdir / PLAN_JSON
    if not config_path.exists() or not plan_path.exists():
        raise NotFoundError(
            f"{workdir} is not a cross-validation workdir (no {config_path.name} / {PLAN_JSON}); "
            "give the --workdir of a scripts/loso.py run"
        )
    config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
    plan = json.loads(plan_path.read_text())
    names = [f["name"] for g in plan["groups"] for f in g["folds"]]
    group = next((g for g in plan["groups"] if fold in [f["name"] for f in g["folds"]]), None)
    if group is None:
        hint = " (train it with --config.finetune.final_model=True)" if fold == FINAL_FOLD else ""
        raise WorkdirError(f"no fold named {fold!r} in {workdir}{hint}; folds: {', '.join(names)}")
    if not (workdir / "folds" / f"{group['name']}.json").exists():
        raise NotFoundError(
            f"fold {fold} ({group['name']}) has not finished training in {workdir}; resume the run first"
        )
    ckpt = _Checkpoints(workdir / "checkpoints" / group["name"], int(config.train.keep_checkpoints))
    try:
        raw = ckpt.restore_host(int(config.train.epochs))
    finally:
        ckpt.close()
    i = [f["name"] for f in group["folds"]].index(fold)
    out = {
        "params": folds_lib.take_fold(raw["params"]["classifier"], i),
        "batch_stats": folds_lib.take_fold(raw["batch_stats"], i),
    }
    entry = group["folds"][i]
    spec = FoldSpec(-1, fold, tuple(entry["test_subjects"]), np.zeros(0, np.int64), np.zeros(0, np.int64))
    return jax.tree.map(np.asarray, out), config, spec


__all__ = ["BEST_EPOCH_LABEL", "FINAL_FOLD", "load_fold_variables", "run_cross_validation"]
