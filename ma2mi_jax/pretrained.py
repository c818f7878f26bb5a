"""Weights of a pre-training workdir: finding its checkpoint, reading it, grafting it into a model.

`resolve` turns a workdir, its checkpoints folder or one step folder into (folder, step);
`load_variables` / `load_pretrained_miacnet` read the weights on the host; `graft` and
`merge_pretrained` copy the parts whose paths and shapes match into a freshly initialised tree.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from ma2mi_jax import checkpoints

PyTree = Any
_STEP_DIR = re.compile(r"^\d+$")


def resolve(path: str) -> tuple[str, int]:
    """A workdir, its checkpoints folder or one step folder -> (checkpoints folder, step to load)."""
    path = os.path.abspath(path)
    if os.path.isdir(os.path.join(path, checkpoints.CHECKPOINT_DIR)):
        path = os.path.join(path, checkpoints.CHECKPOINT_DIR)
    if _STEP_DIR.match(os.path.basename(path)) and os.path.isdir(os.path.join(path, "state")):
        return os.path.dirname(path), int(os.path.basename(path))
    if not os.path.isdir(path):
        raise checkpoints.CheckpointError(f"checkpoint path {path} does not exist")
    steps = [int(e) for e in os.listdir(path) if _STEP_DIR.match(e) and os.path.isdir(os.path.join(path, e))]
    if not steps:
        raise checkpoints.CheckpointError(
            f"{path}: no checkpoint found "
            f"(expected a pre-training workdir with {checkpoints.CHECKPOINT_DIR}/<step>/)"
        )
    return path, max(steps)


def load_variables(path: str) -> dict[str, PyTree]:
    """{"params", "batch_stats", "step"} of the newest checkpoint under `path` (as saved, on host)."""
    directory, step = resolve(path)
    state = checkpoints.restore_host(directory, step)
    return {"params": state["params"], "batch_stats": state.get("batch_stats", {}), "step": step}


def pretraining_config(path: str | os.PathLike) -> tuple[dict, str]:
    """The config (dict) a pre-training checkpoint was written with, and the file it was read from.

    Reads the checkpoint's own "config" item; falls back to config.json of its workdir.
    """
    directory, step = resolve(str(path))
    try:
        with ocp.CheckpointManager(directory, item_handlers={"config": ocp.JsonCheckpointHandler()}) as mngr:
            out = mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        return dict(out["config"]), f"{directory}/{step}/config"
    except (ValueError, KeyError, FileNotFoundError, OSError):
        fallback = os.path.join(os.path.dirname(directory), checkpoints.CONFIG_FILE)
        if os.path.exists(fallback):
            with open(fallback) as f:
                return json.load(f), fallback
    raise checkpoints.CheckpointError(
        f"{path}: neither the checkpoint {directory}/{step} nor {fallback} holds the pre-training config; "
        "finetune.aux_rec_weight > 0 needs it to rebuild the DiT's input space"
    )


def load_pretrained_miacnet(path: str) -> dict[str, PyTree]:
    """MIACNet's {"params", "batch_stats"} from a pre-training workdir / checkpoints folder / step folder."""
    v = load_variables(path)
    if "miacnet" not in v["params"]:
        raise checkpoints.CheckpointError(
            f"{path}: the checkpoint has no 'miacnet' parameters (top level: {sorted(v['params'])}); "
            "give an MA2MI or MAER pre-training workdir"
        )
    return {"params": v["params"]["miacnet"], "batch_stats": (v["batch_stats"] or {}).get("miacnet", {})}


def flat_keys(tree: Any) -> dict[str, Any]:
    """{"a/b/c": leaf} of a nested dict."""
    return {
        "/".join(str(getattr(k, "key", k)) for k in path): leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def graft(target: PyTree, source: PyTree, what: str, hint: str) -> PyTree:
    """`source`'s values in the structure and dtypes of `target`; an error lists every mismatching key."""
    t, s = flat_keys(target), flat_keys(source)
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
    leaves = [jax.numpy.asarray(s[k], dtype=t[k].dtype) for k in t]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(target), leaves)


def merge_pretrained(fresh: PyTree, loaded: PyTree, source: str) -> tuple[PyTree, list[str]]:
    """Graft the top-level parts of `fresh` (e.g. "miacnet", "dit") that `loaded` also has.

    Returns the merged tree and the names taken from `loaded`; a part present in both with other
    keys or shapes is an error listing them.
    """
    merged, taken = dict(fresh), []
    hint = "model.resnet_width / model.dit / model.fusion differ from that run's; use a matching checkpoint"
    for name, sub in fresh.items():
        if name in loaded:
            merged[name] = graft(sub, loaded[name], f"{source}: part '{name}'", hint)
            taken.append(name)
    return merged, taken
