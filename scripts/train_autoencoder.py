"""Train a domain VAE (diffusers' FlaxAutoencoderKL) on the frames of a macro-expression data set.

python scripts/train_autoencoder.py --config configs/synthetic_autoencoder.py [--out workdirs/vae_synthetic]
The output folder is in diffusers' format: give it to pre-training as --config.vae.path.
"""

from absl import flags
from ml_collections import config_flags

from ma2mi_jax import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/synthetic_autoencoder.py.", lock_config=True
)
_OUT = flags.DEFINE_string("out", None, "Output folder (default: config.workdir).")
flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
    """Parse flags and train the autoencoder."""
    cli.check_no_extra_args(argv)
    from ma2mi_jax.train import autoencoder

    autoencoder.train_autoencoder(_CONFIG.value, _OUT.value or _CONFIG.value.workdir)


if __name__ == "__main__":
    cli.run(main)
