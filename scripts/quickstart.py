"""The quick start: synthetic data -> MA2MI pre-training -> LOSO fine-tuning -> exported classifier.

python scripts/quickstart.py
python scripts/quickstart.py --out workdirs/qs --loso_config.train.epochs=5
"""

from absl import flags
from ml_collections import config_flags

from ma2mi_jax import cli

_PRETRAIN = config_flags.DEFINE_config_file(
    "pretrain_config", "configs/synthetic_pretrain.py", "Pre-training stage config.", lock_config=True
)
_LOSO = config_flags.DEFINE_config_file(
    "loso_config", "configs/synthetic_loso.py", "Cross-validation stage config.", lock_config=True
)
_OUT = flags.DEFINE_string("out", "workdirs/quickstart", "Folder for the data and every output.")
_CLIPS_SCALE = flags.DEFINE_float(
    "clips_scale", 1.0, "Scale the synthetic data sets' clip and subject counts (smoke tests)."
)


def main(argv: list[str]) -> None:
    """Parse flags and run the chain."""
    cli.check_no_extra_args(argv)
    from ma2mi_jax import quickstart

    quickstart.run(_PRETRAIN.value, _LOSO.value, _OUT.value, _CLIPS_SCALE.value)


if __name__ == "__main__":
    cli.run(main)
