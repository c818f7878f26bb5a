"""Cross-validated fine-tuning and evaluation on a micro-expression data set (LOSO or k-fold).

python scripts/loso.py --config configs/samm.py --config.data.root=/data/SAMM
python scripts/loso.py --config configs/synthetic_loso.py:tiny
"""

from absl import flags
from ml_collections import config_flags

from ma2mi_jax import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/samm.py or configs/samm.py:tiny.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (default: config.workdir).")
flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
    """Parse flags and run all folds."""
    cli.check_no_extra_args(argv)
    from ma2mi_jax.train import finetune

    finetune.run_cross_validation(_CONFIG.value, _WORKDIR.value or _CONFIG.value.workdir)


if __name__ == "__main__":
    cli.run(main)
