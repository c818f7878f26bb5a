"""Linear probe of a frozen MIACNet on a micro-expression data set (LOSO or k-fold of the config).

python scripts/probe.py --config configs/synthetic_loso.py --config.init=workdirs/pretrain_synthetic
python scripts/probe.py --config configs/synthetic_loso.py --config.init=scratch --seeds 0,1,2
Writes <workdir>/probe.json (default workdir: <init>/probe for a pre-training workdir, else
workdirs/probe_scratch).
"""

from absl import flags
from ml_collections import config_flags

from ma2mi_jax import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Fine-tuning config, e.g. configs/synthetic_loso.py.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder of probe.json (default: see above).")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds; one random init per seed with --config.init=scratch.")
flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
    """Parse flags and run the probe."""
    cli.check_no_extra_args(argv)
    from ma2mi_jax.evaluation import probe

    config = _CONFIG.value
    seeds = [int(s) for s in _SEEDS.value]
    result = probe.run_probe(config, _WORKDIR.value or probe.default_workdir(config), seeds)
    print(probe.summary(result), flush=True)


if __name__ == "__main__":
    cli.run(main)
