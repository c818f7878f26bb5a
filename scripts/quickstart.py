"""The quick start: synthetic data -> domain VAE -> MA2MI pre-training -> probe -> LOSO -> export.

python scripts/quickstart.py
python scripts/quickstart.py --out workdirs/qs --loso_config.train.epochs=5
"""

from absl import flags
from ml_collections import config_flags

from ma2mi_jax import cli

_VAE = config_flags.DEFINE_config_file(
    "autoencoder_config",
    "configs/synthetic_autoencoder.py",
    "Domain autoencoder stage config.",
    lock_config=True,
)
_PRETRAIN = config_flags.DEFINE_config_file(
    "pretrain_config", "configs/synthetic_pretrain.py", "Pre-training stage config.", lock_config=True
)
_LOSO = config_flags.DEFINE_config_file(
    "loso_config", "configs/synthetic_loso.py", "Cross-validation stage config.", lock_config=True
)
_OUT = flags.DEFINE_string("out", "workdirs/quickstart", "Folder for the data and every output.")
_PROBE_SEEDS = flags.DEFINE_list("probe_seeds", ["0", "1", "2"], "Seeds of the random encoders probed.")
_CLIPS_SCALE = flags.DEFINE_float(
    "clips_scale", 1.0, "Scale the synthetic data sets' clip and subject counts (smoke tests)."
)


def main(argv: list[str]) -> None:
    """Parse flags and run the chain."""
    cli.check_no_extra_args(argv)
    from ma2mi_jax.workflows import quickstart

    seeds = tuple(int(x) for x in _PROBE_SEEDS.value)
    quickstart.run(_VAE.value, _PRETRAIN.value, _LOSO.value, _OUT.value, _CLIPS_SCALE.value, seeds)


if __name__ == "__main__":
    cli.run(main)
