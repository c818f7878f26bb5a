"""MA2MI pre-training on macro-expression video.

python scripts/pretrain.py --config configs/dfew.py --config.data.root=/data/DFEW
python scripts/pretrain.py --config configs/synthetic_pretrain.py:tiny
"""

from absl import flags
from ml_collections import config_flags

from ma2mi_jax import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/dfew.py or configs/dfew.py:tiny.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (default: config.workdir).")
flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
    """Parse flags and run pre-training."""
    cli.check_no_extra_args(argv)
    from ma2mi_jax.train.pretrain import job as pretrain

    pretrain.train_and_evaluate(_CONFIG.value, _WORKDIR.value or _CONFIG.value.workdir)


if __name__ == "__main__":
    cli.run(main)
