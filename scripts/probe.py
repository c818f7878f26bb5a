"""Linear probe of a frozen MIACNet on a micro-expression data set (LOSO or k-fold of the config).

python scripts/probe.py --config configs/synthetic_loso.py --config.init=workdirs/pretrain_synthetic
python scripts/probe.py --config configs/synthetic_loso.py --config.init=scratch --seeds 0,1,2
Writes <workdir>/probe.json: the folder given by --config.workdir, or by default <init>/probe for a
pre-training workdir or export, else workdirs/probe_scratch (workdirs/probe_imagenet).
"""

from absl import flags
from ml_collections import config_flags

from ma2mi_jax import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Fine-tuning config, e.g. configs/synthetic_loso.py.", lock_config=True
)
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds; one random init per seed with --config.init=scratch.")
flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
    """Parse flags and run the probe."""
    cli.check_no_extra_args(argv)
    from ma2mi_jax.evaluation import probe

    config = _CONFIG.value
    seeds = [int(s) for s in _SEEDS.value]
    workdir_given = "workdir" in config_flags.get_override_values(flags.FLAGS[_CONFIG.name])
    result = probe.run_probe(config, probe.output_dir(config, workdir_given), seeds)
    print(probe.summary(result), flush=True)


if __name__ == "__main__":
    cli.run(main)
