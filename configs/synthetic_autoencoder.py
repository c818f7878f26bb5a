"""A domain VAE for the synthetic macro-expression set (DFEW layout), the quick start's first training stage.

Generate the data, then run:
  python scripts/generate_synthetic.py --out data/synthetic/dfew --layout dfew
  python scripts/train_autoencoder.py --config configs/synthetic_autoencoder.py
  python scripts/pretrain.py --config configs/synthetic_pretrain.py --config.vae.path=workdirs/vae_synthetic
Smoke test:  python scripts/train_autoencoder.py --config configs/synthetic_autoencoder.py:tiny
"""

from ma2mi_jax import configlib


def get_config(arg: str | None = None):
    """The synthetic pre-training config's VAE architecture, trained on its frames at 64x64."""
    c = configlib.autoencoder_base()
    c.workdir = "workdirs/vae_synthetic"
    c.data.name = "dfew"
    c.data.root = "data/synthetic/dfew"
    c.data.image_size = 64
    # A small recipe sized for a CPU; the 8-wide first block keeps the 64-px
    # convolutions cheap (docs/decisions.md#domain-autoencoder).
    c.vae.block_out_channels = (8, 16, 32, 32)
    c.vae.layers_per_block = 1
    c.train.steps = 400
    c.train.batch_size = 16
    c.train.lr = 2e-3
    c.train.frames_per_clip = 8
    c.train.eval_clips = 30  # = configs/synthetic_pretrain.py: the same clips stay unseen
    return configlib.finalize(c, arg)
