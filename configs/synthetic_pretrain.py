"""MA2MI pre-training on the synthetic macro-expression set (DFEW layout), the quick start's first stage.

Generate the data, train the domain autoencoder, then run:
  python scripts/generate_synthetic.py --out data/synthetic/dfew --layout dfew
  python scripts/train_autoencoder.py --config configs/synthetic_autoencoder.py
  python scripts/pretrain.py --config configs/synthetic_pretrain.py
Smoke test:  python scripts/pretrain.py --config configs/synthetic_pretrain.py:tiny
"""

from ma2mi_jax import configlib


def get_config(arg: str | None = None):
    """Synthetic DFEW-layout pre-training at a CPU size (64x64 frames, narrow networks)."""
    c = configlib.pretrain_base()
    c.workdir = "workdirs/pretrain_synthetic"
    c.data.name = "dfew"
    c.data.root = "data/synthetic/dfew"
    c.data.image_size = 64
    c.data.workers = 0
    c.model.resnet_width = 8
    c.model.dit = "T/2"
    # The DiT starts at copying z_t and learns only the change: the direct form spends these few
    # steps learning to copy (docs/decisions.md#residual-dit).
    c.model.dit_residual = True
    # Pairs registered (similarity + lighting) before the action encoder's difference and for the
    # DiT's input and target: head pose and lighting leave the pretext, which lets pre-training
    # transfer on the benchmark (docs/decisions.md#pair-registration). 0 / False = the paper's raw pairs.
    c.model.register_iterations = 8
    c.model.register_target = True
    # The domain autoencoder of configs/synthetic_autoencoder.py (docs/decisions.md#domain-autoencoder).
    c.vae.path = "workdirs/vae_synthetic"
    c.vae.block_out_channels = (8, 16, 32, 32)  # its architecture, for a random VAE with vae.path=""
    c.vae.layers_per_block = 1
    c.train.epochs = 0
    c.train.steps = 300
    # A constant learning rate: the paper's decay (over 80 epochs of DFEW) squeezed into these few
    # steps leaves the model too few useful ones (docs/decisions.md#constant-learning-rate-in-synthetic-pre-training).
    c.train.final_lr_ratio = 1.0
    c.train.batch_size = 32
    c.train.log_every = 10
    c.train.checkpoint_every = 100
    c.train.picture_every = 100
    c.train.eval_clips = 30
    c.train.eval_pairs = 128
    c.train.eval_every = 100
    return configlib.finalize(c, arg)
