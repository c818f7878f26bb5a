"""Shared defaults of every config file, the `tiny` shrink, and the config-argument parser.

Each `configs/<name>.py` starts from `pretrain_base()` or `finetune_base()`, sets what is
particular to its data set, and ends with `finalize(config, arg)`, which applies `:tiny` (a CPU
smoke-test size, big_vision's "runlocal" idea) and locks the config so that an override of a key
that does not exist fails with the key's name.
"""

from __future__ import annotations

import ml_collections

# The paper's classes per micro-expression protocol (docs/method.md).
CASME2_CLASSES = ("happiness", "disgust", "repression", "surprise", "others")
SAMM_CLASSES = ("happiness", "anger", "contempt", "surprise", "others")
MMEW_CLASSES = ("happiness", "surprise", "anger", "disgust", "fear", "sadness")
DFEW_CLASSES = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
# MEGC 2019 composite (CASME II + SAMM + SMIC-HS), in the order of the challenge's ground-truth file
# (See et al., "MEGC 2019 - The Second Facial Micro-Expressions Grand Challenge", FG 2019), and the
# raw emotions each class gathers; "others" maps to none of them and is dropped.
MEGC2019_CLASSES = ("negative", "positive", "surprise")
MEGC2019_LABEL_MAP = {
    "repression": "negative",
    "anger": "negative",
    "contempt": "negative",
    "disgust": "negative",
    "fear": "negative",
    "sadness": "negative",
    "happiness": "positive",
}

KNOWN_ARGS = ("tiny",)


def parse_arg(arg: str | None) -> set[str]:
    """Split a config argument such as "tiny" into its words; unknown words are an error."""
    words = {w.strip() for w in (arg or "").split(",") if w.strip()}
    unknown = words - set(KNOWN_ARGS)
    if unknown:
        raise ValueError(
            f"unknown config argument(s) {sorted(unknown)}; known: {list(KNOWN_ARGS)} "
            "(use it as --config configs/NAME.py:tiny)"
        )
    return words


def _model() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "resnet_width": 64,  # ResNet18 base width (64 = torchvision); the trunk ends at 8x this.
            "fusion": "add",  # add | mul | concat | concat_relu | add_conv | none (= "w/o FPE", Table 4)
            "dit": "B/2",  # DiT variant/patch: S, B, L, XL (and T, tiny) with patch 2, 4, 8, ...
            # Pre-training: True keeps L_rec away from the position encoder (independent branches).
            "stop_position_grad": True,
            # True: the DiT predicts z_{t+k} - z_t (added to z_t), starting exactly at "copy z_t".
            "dit_residual": False,
            # True: the fused map before pooling also enters the DiT as tokens (zero-initialised),
            # beyond the paper's global c through adaLN (docs/method.md).
            "dit_condition_map": False,
            # > 0: the action encoder reads x_{t+k} registered onto x_t (similarity + lighting,
            # this many Gauss-Newton steps; models/register.py); 0 = the paper's raw difference.
            "register_iterations": 0,
            # Pre-training only, with register_iterations > 0: the DiT reads and predicts the latents of
            # the registered pair, so that head pose and lighting leave its target too (no latent cache).
            "register_target": False,
        }
    )


def _vae() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "path": "",  # local diffusers-format sd-vae-ft-ema folder; "" = random init (warns)
            # 0 = the VAE folder's own config.json value (SD's 0.18215 for the random VAE)
            "scaling_factor": 0.0,
            # Architecture used only when no folder is given (random init): SD's by default.
            "block_out_channels": (128, 256, 512, 512),
            "layers_per_block": 2,
            "latent_channels": 4,
        }
    )


def _augment(crop_pad: int, rotation_deg: float, flip: bool) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"crop_pad": crop_pad, "rotation_deg": rotation_deg, "flip": flip})


def _position_loss() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "enabled": True,
            "w_dis": 1.0,
            "w_con": 1.0,
            "w_equ": 1.0,
            "con_form": "ce",  # ce (softmax over places, docs/method.md) | cos (1 - cos)
            "tau": 0.1,
            "max_rotation_deg": 10.0,
            "max_shift": 0.08,  # fraction of the image side
        }
    )


def pretrain_base() -> ml_collections.ConfigDict:
    """Defaults for MA2MI pre-training (docs/method.md); data set fields left generic."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.workdir = "workdirs/pretrain"
    c.dtype = "float32"  # compute dtype: float32 | bfloat16 (parameters stay float32)
    c.device_memory_gb = 0.0  # check the step's memory against this many GiB; 0 = the device's own
    c.init = ""  # optional checkpoint to start from when the workdir has none
    c.objective = "reconstruction"  # reconstruction (MA2MI) | supervised (MAER baseline)
    c.space = "latent"  # latent (VAE) | pixel (MA2MI-dagger)
    c.model = _model()
    c.vae = _vae()
    c.position_loss = _position_loss()
    c.data = ml_collections.ConfigDict(
        {
            "name": "dfew",  # dfew | ferv39k | afew | frames | videos
            "root": "",
            "source": "frames",  # frames | video (DFEW ships both)
            "image_size": 224,
            "k_min": 1,
            "k_max": 4,
            "face_crop": False,  # detect and crop faces (uncropped video such as AFEW)
            "strict": True,  # False: skip and list bad clips instead of stopping
            "workers": 4,  # Grain worker processes (0 = in the main process)
            "prefetch": 2,  # batches buffered per worker
            "latent_cache": False,  # encode every frame once with the VAE and read latents
            "cache_dir": "",  # "" = <workdir>/latents
            "class_names": DFEW_CLASSES,  # used only by the supervised (MAER) objective
            "augment": _augment(crop_pad=0, rotation_deg=0.0, flip=True),
        }
    )
    c.train = ml_collections.ConfigDict(
        {
            "epochs": 80,
            "steps": 0,  # > 0 overrides epochs with a fixed number of steps
            "batch_size": 32,
            "lr": 4e-4,
            "weight_decay": 0.05,
            "final_lr_ratio": 0.01,  # exponential decay to lr * final_lr_ratio at the last step
            "grad_clip": 0.0,  # global-norm clip; 0 = off
            "log_every": 50,
            "checkpoint_every": 1000,
            "keep_checkpoints": 3,
            "picture_every": 1000,
            # Diagnostics (train/pretrain/diagnostics.py): clips held out of training, fixed pairs drawn from
            # them, evaluated every eval_every steps (0 = only at the end) and at the end.
            "eval_clips": 256,
            "eval_pairs": 512,
            "eval_every": 1000,
        }
    )
    return c


def _micro_data() -> ml_collections.ConfigDict:
    """The fine-tuning data defaults: a micro-expression set (`data.name`) and its pairs' augmentation."""
    return ml_collections.ConfigDict(
        {
            "name": "casme2",  # casme2 | samm | mmew | smic | megc2019 (CASME II + SAMM + SMIC-HS)
            "root": "",
            # megc2019 only: a database's folder elsewhere than <root>/CASME2, <root>/SAMM, <root>/SMIC
            "roots": {"casme2": "", "samm": "", "smic": ""},
            "sheet": "",  # annotation file; "" = find the data set's default in the root
            # SMIC-HS (smic, megc2019) annotates no apex: "middle" = the frame nearest to the middle
            # of the clip, "motion" = the frame differing most from the onset, compared as grayscale
            # images resized to smic_motion_size x smic_motion_size pixels.
            "smic_apex": "middle",
            "smic_motion_size": 64,
            "image_size": 224,
            "class_names": CASME2_CLASSES,
            # Raw (lower-cased) emotion strings mapped onto class names; others are dropped.
            "label_map": {},
            "strict": True,
            "workers": 2,
            "prefetch": 2,
            "augment": _augment(crop_pad=16, rotation_deg=10.0, flip=True),
        }
    )


def _finetune_switches() -> ml_collections.ConfigDict:
    """How the folds train: grouping, sequential folds, frozen parts, head start, domain-gap remedies."""
    return ml_collections.ConfigDict(
        {
            # Folds trained together, each group to its last epoch before the next starts. 0 = automatic:
            # all of them (one vmapped step) on GPU/TPU; fold_threads at a time when sequential (the CPU
            # default), so that only their states are in memory (docs/decisions.md#fold-groups-on-a-cpu).
            "folds_per_step": 0,
            # Folds one at a time instead of one vmapped step. Unset (None) = automatic: vmapped on
            # GPU/TPU; sequential on CPU, where XLA's grouped convolutions make the vmapped step slower
            # (docs/decisions.md#sequential-folds-on-a-cpu).
            "sequential": ml_collections.config_dict.placeholder(bool),
            # Sequential mode: host threads that step different folds at once, since XLA's own
            # threads leave a small CPU's cores partly idle at batch 16 (docs/decisions.md#two-fold-threads);
            # 1 = one fold after the other.
            "fold_threads": 2,
            "freeze_position": False,
            "freeze_action": False,
            # Epochs at the start in which both encoders stay as initialised and only the rest (the
            # classifier head) trains: a linear probe before fine-tuning (LP-FT); 0 = off.
            "head_only_epochs": 0,
            # "zero" (the paper's zero-initialised head) | "probe": each fold's head starts at a
            # linear probe of its training subjects' frozen c (train/finetune/head_init.py).
            "head_init": "zero",
            # Fine-tuning across a domain gap (train/finetune/__init__.py); off by default but for
            # freeze_bn (below). Re-estimate the encoders' BatchNorm statistics on each fold's
            # own training pairs before its first step (unaugmented, labels unused; the probe's procedure).
            "bn_reestimate": False,
            # Multiplier of both encoders' updates (learning rate and its weight decay); the head at 1.
            "encoder_lr_scale": 1.0,
            # Epochs over which the encoders' rate rises linearly from 0 once they train; 0 = off.
            "encoder_warmup_epochs": 0,
            # L2-SP: adds (weight / 2) * ||w - w_start||^2 over both encoders' parameters to the loss.
            "l2sp_weight": 0.0,
            # The encoders' BatchNorm in inference mode when they start from a pre-training: its
            # running statistics kept, scale and bias trained (docs/decisions.md, "Fine-tuning across a
            # domain gap"). A random start (init="scratch") trains its BatchNorm whatever this says.
            # False: the paper's plain fine-tuning.
            "freeze_bn": True,
            # Every N epochs (and at the start) a linear probe of each fold's current encoder, scored on
            # its held-out subjects, in results.json's "transfer_per_epoch"; 0 = off.
            "probe_every": 0,
            "aux_rec_weight": 0.0,  # > 0 keeps L_rec as an auxiliary loss (needs the DiT)
            "final_model": False,  # also train one model on all subjects for export
            # Training subjects of each fold held out to choose its epoch (docs/results.md#model-selection);
            # 0 = off, the paper's protocol: train on every training subject, report the last epoch.
            "validation_subjects": 0,
            # With validation subjects: train each fold again on all its training subjects for the
            # epochs they chose, and report that model's test figures too (train/finetune/retrain.py).
            "retrain_selected": False,
        }
    )


def _probe() -> ml_collections.ConfigDict:
    """The linear probe of scripts/probe.py (and of `finetune.head_init="probe"`)."""
    return ml_collections.ConfigDict(
        {
            "features": "c",  # c | c+action (c with the global average of the action map) | map (flattened)
            "C": 1.0,  # inverse L2 strength of the balanced logistic regression
            "max_iter": 2000,
            "bn_batch": 256,  # pairs per chunk for the BatchNorm re-estimation and the features
        }
    )


def finetune_base() -> ml_collections.ConfigDict:
    """Defaults for cross-validated fine-tuning (docs/method.md)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.workdir = "workdirs/loso"
    c.dtype = "float32"
    c.device_memory_gb = 0.0  # check the step's memory against this many GiB; 0 = the device's own
    # MA2MI pre-training workdir or exported checkpoint | "imagenet:<resnet18 file>" | "scratch"
    c.init = "scratch"
    c.model = _model()
    c.vae = _vae()  # only used when finetune.aux_rec_weight > 0
    c.data = _micro_data()
    c.protocol = ml_collections.ConfigDict(
        {
            "name": "loso",  # loso | kfold (subject-independent)
            "num_folds": 5,  # kfold only
        }
    )
    c.train = ml_collections.ConfigDict(
        {
            "epochs": 80,
            "batch_size": 16,
            "lr": 4e-4,
            "weight_decay": 0.1,
            "final_lr_ratio": 1.0,  # 1.0 = constant learning rate
            "grad_clip": 0.0,
            "log_every": 1,  # epochs
            "checkpoint_every": 10,  # epochs
            "keep_checkpoints": 2,
        }
    )
    c.finetune = _finetune_switches()
    c.probe = _probe()  # scripts/probe.py: linear probe of the frozen MIACNet of config.init
    return c


def autoencoder_base() -> ml_collections.ConfigDict:
    """Defaults for training a domain VAE on macro frames (train/autoencoder.py)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.workdir = "workdirs/autoencoder"  # the diffusers-format output folder (use it as vae.path)
    c.vae = _vae()
    c.data = ml_collections.ConfigDict(
        {
            "name": "dfew",
            "root": "",
            "source": "frames",
            "image_size": 224,
            "face_crop": False,
            "strict": True,
        }
    )
    c.train = ml_collections.ConfigDict(
        {
            "steps": 20000,
            "batch_size": 32,
            "lr": 1e-3,
            "weight_decay": 0.0,
            "final_lr_ratio": 0.1,
            "grad_clip": 1.0,
            "kl_weight": 1e-6,  # SD's KL weight (per summed pixel error)
            "frames_per_clip": 4,  # evenly spaced frames decoded once per clip
            "eval_clips": 256,  # held out for PSNR (the same draw as pre-training's diagnostics)
            "log_every": 50,
        }
    )
    return c


def _shrink_autoencoder(c: ml_collections.ConfigDict) -> None:
    c.vae.block_out_channels = (8, 16, 16)
    c.vae.layers_per_block = 1
    c.data.image_size = 32
    c.train.steps = 4
    c.train.batch_size = 4
    c.train.frames_per_clip = 2
    c.train.eval_clips = 2
    c.train.log_every = 2
    c.workdir = c.workdir.rstrip("/") + "_tiny"


def shrink_to_tiny(c: ml_collections.ConfigDict) -> None:
    """Shrink sizes and schedules in place so the config runs as a quick smoke test on a CPU."""
    if "model" not in c:  # the autoencoder config
        _shrink_autoencoder(c)
        return
    c.model.resnet_width = 8
    c.model.dit = "T/2" if c.get("space", "latent") == "latent" else "T/4"
    c.model.register_iterations = 0  # raw pairs: one program less to compile (tests set it on)
    c.model.register_target = False
    c.vae.block_out_channels = (8, 16, 16)
    c.vae.layers_per_block = 1
    c.data.image_size = 32
    c.data.workers = 0
    c.vae.path = ""  # tests and smoke runs use the random VAE
    c.train.epochs = 1
    c.train.batch_size = 4
    if "steps" in c.train:
        c.train.steps = 4
        c.train.log_every = 1
        c.train.checkpoint_every = 2
        c.train.picture_every = 2
        c.train.eval_clips = 2
        c.train.eval_pairs = 4
        c.train.eval_every = 2
    else:
        c.train.epochs = 2
    c.workdir = c.workdir.rstrip("/") + "_tiny"


def finalize(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
    """Apply the config argument (`tiny`) and lock the key set."""
    if "tiny" in parse_arg(arg):
        shrink_to_tiny(c)
    c.lock()
    return c
