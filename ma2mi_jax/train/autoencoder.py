"""A domain autoencoder where SD-VAE weights are not at hand: diffusers' FlaxAutoencoderKL on macro frames.

`train_autoencoder(config, out)` decodes `train.frames_per_clip` evenly spaced frames of every
training clip of a macro data set (the clips `train.eval_clips` holds out, drawn as pre-training's
diagnostics draw them, give the held-out frames), trains the VAE, and writes `out/` in diffusers'
format (`config.json` + `diffusion_flax_model.msgpack`), loadable unchanged through `vae.path`.

Recipe: Stable Diffusion's autoencoder loss without its perceptual (LPIPS) and adversarial terms,
which need networks of their own and matter little at 64 px: per sample, the L1 error summed
over pixels plus `train.kl_weight` (SD: 1e-6) times the KL to N(0, I) summed over the latent, here
divided by the number of pixel values so the loss reads as a mean absolute error. The posterior is
sampled during training (reparameterised), its mean is what `FrozenVAE.encode` uses. The KL term
keeps the latent's scale bounded; the exact scale is set afterwards, as for SD: `scaling_factor` =
1 / std of the held-out frames' latent means, so scaled latents have unit variance.

Also written: `reconstructions.png` (held-out originals above their reconstructions) and
`autoencoder.json` (PSNR on held-out frames before and after training, the scaling factor, the
recipe). Nothing is half-written: the folder is built next to `out` and renamed at the end.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from ma2mi_jax import files
from ma2mi_jax.data.media import decode
from ma2mi_jax.data.readers import registry as readers
from ma2mi_jax.data.records import MacroClip
from ma2mi_jax.errors import DivergedError
from ma2mi_jax.models import vae as vae_lib
from ma2mi_jax.train import observe, optim
from ma2mi_jax.train.pretrain import diagnostics

SUMMARY_FILE = "autoencoder.json"
PICTURE_FILE = "reconstructions.png"
PICTURE_ITEMS = 8


def load_frames(clips: list[MacroClip], per_clip: int, image_size: int, threads: int = 4) -> np.ndarray:
    """`per_clip` evenly spaced frames of every clip: uint8[N,H,W,3]."""

    def frames_of(clip: MacroClip) -> list[np.ndarray]:
        idx = np.unique(
            np.linspace(0, clip.num_frames - 1, min(per_clip, clip.num_frames)).round().astype(int)
        )
        return decode.read_clip_frames(clip, idx.tolist(), image_size)

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        parts = list(
            tqdm.tqdm(pool.map(frames_of, clips), total=len(clips), desc="decode frames", unit="clip")
        )
    return np.stack([f for part in parts for f in part])


def psnr(original: np.ndarray, reconstruction: np.ndarray) -> float:
    """PSNR in dB of uint8 images (peak 255), over the whole set."""
    mse = np.mean((original.astype(np.float64) - reconstruction.astype(np.float64)) ** 2)
    return float(10.0 * np.log10(255.0**2 / max(mse, 1e-12)))


def make_train_step(module: Any, tx: optax.GradientTransformation, kl_weight: float):
    """(params, opt_state, frames uint8[B,H,W,3], key) -> (params, opt_state, metrics); pure, jit it."""

    def loss_fn(params, frames, key):
        k_flip, k_sample = jax.random.split(key)
        x = frames.astype(jnp.float32) / 127.5 - 1.0  # [B,H,W,3] in [-1,1]
        flip = jax.random.bernoulli(k_flip, 0.5, (x.shape[0], 1, 1, 1))
        x = jnp.where(flip, x[:, :, ::-1], x)
        x = jnp.transpose(x, (0, 3, 1, 2))  # NCHW, as diffusers' Flax VAE expects
        with vae_lib.quiet_diffusers():
            posterior = module.apply({"params": params}, x, method="encode").latent_dist
            z = posterior.sample(k_sample)  # [B,h,w,C]
            x_hat = module.apply({"params": params}, z, method="decode").sample  # [B,3,H,W]
        l1 = jnp.mean(jnp.abs(x_hat - x))
        kl = jnp.mean(posterior.kl()) / x[0].size  # KL summed over the latent, per pixel value
        return l1 + kl_weight * kl, {"l1": l1, "kl": kl}

    def step(params, opt_state, frames, key):
        (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, frames, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, {"loss": loss, **terms}

    return step


def reconstruct(
    encode: Any, decode_fn: Any, params: Any, frames: np.ndarray, batch: int
) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 reconstructions [N,H,W,3], scaled latent means f32[N,h,w,C]) through jitted encode/decode."""
    recs, lats = [], []
    for s in range(0, len(frames), batch):
        z = encode(params, frames[s : s + batch])
        lats.append(np.asarray(z))
        recs.append(np.asarray(decode_fn(params, z)))
    return np.concatenate(recs), np.concatenate(lats)


def _module(config: ml_collections.ConfigDict, scaling_factor: float) -> Any:
    v = config.vae
    return vae_lib.build_vae_module(
        tuple(v.block_out_channels), int(v.layers_per_block), int(v.latent_channels), scaling_factor
    )


def _fit(
    module: Any, params: Any, frames: np.ndarray, t: ml_collections.ConfigDict, seed: int
) -> tuple[Any, dict[str, float]]:
    """`t.steps` steps of L1 + KL on random batches of `frames` uint8[N,S,S,3]; (params, last metrics)."""
    steps = int(t.steps)
    tx = optim.make_optimizer(t, steps)
    opt_state = tx.init(params)
    step_fn = jax.jit(make_train_step(module, tx, float(t.kl_weight)), donate_argnums=(0, 1))
    rng = np.random.default_rng([seed, 11])
    root = jax.random.PRNGKey(seed)
    bar = observe.Progress(steps, desc="autoencoder")
    last: dict[str, float] = {}
    for step in range(steps):
        batch = frames[rng.integers(0, len(frames), int(t.batch_size))]
        params, opt_state, m = step_fn(params, opt_state, batch, jax.random.fold_in(root, step))
        bar.update(1)
        if (step + 1) % int(t.log_every) == 0 or step + 1 == steps:
            last = {k: float(v) for k, v in jax.device_get(m).items()}
            if not np.isfinite(last["loss"]):
                raise DivergedError(f"non-finite autoencoder loss at step {step + 1}; lower train.lr")
            bar.update(0, l1=last["l1"], kl=last["kl"])
    bar.close()
    return params, last


def train_autoencoder(config: ml_collections.ConfigDict, out: str) -> dict[str, Any]:
    """Train the VAE of `config.vae` on `config.data`'s frames and write it to `out` (diffusers format)."""
    c, t = config, config.train
    out = os.path.abspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise FileExistsError(f"output {out} exists and is not a folder; choose another --out")
    clips, report = readers.read_macro(c.data)
    print(report.summary(), flush=True)
    train_clips, eval_clips = diagnostics.hold_out(clips, int(t.eval_clips), int(t.batch_size), int(c.seed))
    if not eval_clips:
        raise ValueError("train.eval_clips must be > 0: PSNR is measured on held-out frames")
    size = int(c.data.image_size)
    train_frames = load_frames(train_clips, int(t.frames_per_clip), size)
    eval_frames = load_frames(eval_clips, int(t.frames_per_clip), size)
    print(
        f"autoencoder: {len(train_frames)} training frames of {len(train_clips)} clips, "
        f"{len(eval_frames)} held-out frames of {len(eval_clips)} clips",
        flush=True,
    )
    module = _module(c, 1.0)
    params = vae_lib.init_vae_params(module, size, int(c.seed))
    frozen = vae_lib.FrozenVAE(module, params, 1.0)  # compiled once, for the PSNR before and after
    encode, decode_fn = jax.jit(frozen.encode), jax.jit(frozen.decode)
    before = psnr(eval_frames, reconstruct(encode, decode_fn, params, eval_frames, int(t.batch_size))[0])
    steps = int(t.steps)
    start = time.perf_counter()
    params, last = _fit(module, params, train_frames, t, int(c.seed))
    seconds = time.perf_counter() - start
    recon, latents = reconstruct(encode, decode_fn, params, eval_frames, int(t.batch_size))
    after = psnr(eval_frames, recon)
    scaling = float(1.0 / max(float(np.std(latents)), 1e-8))
    summary = {
        "psnr_held_out_db": after,
        "psnr_untrained_db": before,
        "scaling_factor": scaling,
        "latent_std_unscaled": float(np.std(latents)),
        "train_frames": len(train_frames),
        "held_out_frames": len(eval_frames),
        "steps": steps,
        "seconds": seconds,
        "final_l1": last.get("l1"),
        "final_kl": last.get("kl"),
        "recipe": f"L1 + {t.kl_weight:g} x KL (SD's autoencoder loss without LPIPS and GAN terms)",
    }
    _write(out, _module(c, scaling), params, eval_frames, recon, summary)
    print(
        f"autoencoder -> {out}: held-out PSNR {after:.2f} dB (untrained {before:.2f} dB), "
        f"scaling_factor {scaling:.4f}, {steps} steps in {seconds:.0f} s",
        flush=True,
    )
    return summary


def _write(out: str, module: Any, params: Any, frames: np.ndarray, recon: np.ndarray, summary: dict) -> None:
    """Write the diffusers folder, the picture and the summary next to `out`, then move it into place."""
    with files.atomic_dir(out) as tmp:
        with vae_lib.quiet_diffusers():
            module.save_pretrained(tmp, params=jax.device_get(params))
        n = min(PICTURE_ITEMS, len(frames))
        pick = np.linspace(0, len(frames) - 1, n).round().astype(int)
        observe.save_picture(
            os.path.join(tmp, PICTURE_FILE),
            {"held-out frame": frames[pick], "reconstruction": recon[pick]},
            title=f"autoencoder: held-out PSNR {summary['psnr_held_out_db']:.2f} dB",
        )
        files.write_json(os.path.join(tmp, SUMMARY_FILE), summary)
