"""Where a fine-tuning run starts: scratch, a pre-training workdir, an exported classifier, ImageNet."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ma2mi_jax import checkpoints, pretrained
from ma2mi_jax.errors import ConfigError, InitError
from ma2mi_jax.models import miacnet, resnet_import
from ma2mi_jax.serving import classifier
from ma2mi_jax.train import folder_checks

log = logging.getLogger(__name__)


def build_classifier(config: ml_collections.ConfigDict):
    """The MIACClassifier of `config.model` with one output per class."""
    return miacnet.classifier_from_config(config.model, len(config.data.class_names), config.dtype)


@functools.partial(jax.jit, static_argnums=(0, 1))
def random_variables(model, size: int, key: jax.Array) -> dict:
    """`model.init` on one size x size pair, compiled once per model and size, not once per seed.

    Compiling it costs far more than running it; the probe initialises four encoders and the quick
    start's cross-validation a fifth, all with one program
    (docs/decisions.md#classifier-initialisation-compiled-once).
    """
    dummy = jnp.zeros((1, size, size, 3), jnp.uint8)  # [1,H,W,3]
    return model.init(key, dummy, dummy, train=False)


def starts_pretrained(config: ml_collections.ConfigDict) -> bool:
    """Whether `config.init` brings trained encoders (a pre-training, an export, ImageNet)."""
    return str(config.init).strip() not in ("", "scratch")


def batchnorm_line(config: ml_collections.ConfigDict) -> str:
    """How the encoders' BatchNorm fine-tunes (finetune.freeze_bn against the start), for the log."""
    if not bool(config.finetune.freeze_bn):
        return "trained, batch statistics (finetune.freeze_bn=False: the paper's plain fine-tuning)"
    if not starts_pretrained(config):
        return "trained, batch statistics: a random start has no statistics to keep (finetune.freeze_bn)"
    return (
        "frozen at the start's running statistics, scale and bias trained (finetune.freeze_bn=True; "
        "False: the paper's plain fine-tuning)"
    )


def initial_variables(config: ml_collections.ConfigDict, model) -> tuple[dict, str]:
    """Classifier variables {"params","batch_stats"} from `config.init`, and a line saying where from.

    "" / "scratch": random (seeded by config.seed); "imagenet:<file>": torchvision ResNet18 weights in
    both encoders; otherwise a MA2MI pre-training workdir (or an exported classifier) whose MIACNet
    goes into `miacnet`. The head always starts at zero.
    """
    variables = random_variables(model, int(config.data.image_size), jax.random.key(int(config.seed)))
    variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    init = str(config.init).strip()
    if not starts_pretrained(config):
        return variables, "random initialisation (config.init='scratch'), head zero-initialised"
    if init.startswith("imagenet:"):
        return _init_imagenet(config, variables, init.removeprefix("imagenet:"))
    path = Path(init)
    folder_checks.check_init(init)
    if classifier.is_exported_classifier(path):
        source = classifier.load_exported_variables(path)
        source = {"params": source["params"]["miacnet"], "batch_stats": source["batch_stats"]["miacnet"]}
        what = f"MIACNet of the exported classifier {path}"
    else:
        source = pretrained.load_pretrained_miacnet(str(path))
        what = f"MA2MI pre-trained MIACNet from {path}" + registration_note(config, str(path))
        warn_random_vae(str(path))
    for col in ("params", "batch_stats"):
        tree = source.get(col, {})
        if isinstance(tree, dict) and "miacnet" in tree:  # a full pre-training layout
            tree = tree["miacnet"]
        variables[col] = dict(variables[col])
        variables[col]["miacnet"] = pretrained.graft(
            variables[col]["miacnet"], tree, f"{col} of {path}", architecture_hint(tree, config)
        )
    return variables, what + "; head zero-initialised"


def registration_note(config: ml_collections.ConfigDict, path: str) -> str:
    """ "" or a clause saying that the pre-training run at `path` registered its pairs otherwise."""
    try:
        pre, _ = pretrained.pretraining_config(path)
    except checkpoints.CheckpointError:
        return ""
    theirs = int(pre.get("model", {}).get("register_iterations", 0))
    ours = miacnet.register_iterations(config.model)
    if theirs == ours:
        return ""
    return f" (pre-trained with model.register_iterations={theirs}; this run uses {ours})"


def warn_random_vae(path: str) -> bool:
    """Warn (and return True) when the pre-training run at `path` predicted latents of a random VAE."""
    try:
        pre, _ = pretrained.pretraining_config(path)
    except (checkpoints.CheckpointError, ValueError):  # no pre-training, or an unreadable config
        return False
    latent = pre.get("objective") == "reconstruction" and pre.get("space") == "latent"
    if not latent or str((pre.get("vae") or {}).get("path", "")).strip():
        return False
    log.warning(
        "config.init=%s was pre-trained with a RANDOMLY INITIALISED VAE (its vae.path was empty): its "
        "latents meant nothing, so its encoder learnt little that transfers. Pre-train with "
        "--config.vae.path set to a diffusers-format VAE folder (see third_party/README.md)",
        path,
    )
    return True


def _init_imagenet(config: ml_collections.ConfigDict, variables: dict, path: str) -> tuple[dict, str]:
    """torchvision ResNet18 weights into every encoder of MIACNet."""
    if int(config.model.resnet_width) != 64:
        raise ConfigError(
            f"config.init='imagenet:...' needs model.resnet_width=64 (torchvision ResNet18), "
            f"got {config.model.resnet_width}"
        )
    try:
        trunk = resnet_import.load_torchvision_resnet18(path)  # {"params","batch_stats"} of one trunk
    except (ValueError, OSError, ImportError) as err:  # the loader's messages name the file and the fix
        raise InitError(f"config.init='imagenet:{path}': {err}") from None
    encoders = [e for e in ("position_encoder", "action_encoder") if e in variables["params"]["miacnet"]]
    for col in ("params", "batch_stats"):
        net = dict(variables[col]["miacnet"])
        for e in encoders:
            net[e] = pretrained.graft(
                net[e], trunk[col], f"{col} of {path}", "the file must be a torchvision ResNet18"
            )
        variables[col] = {**variables[col], "miacnet": net}
    return (
        variables,
        f"ImageNet ResNet18 weights from {path} in {' and '.join(encoders)}; head zero-initialised",
    )


def architecture_hint(source: Any, config: ml_collections.ConfigDict) -> str:
    """What config keys to change so the model matches a checkpoint."""
    flat = pretrained.flat_keys(source)
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
