"""The transfer experiment on the synthetic benchmark (the shape of the paper's Tables 1 and 4).

  python scripts/experiment.py --out workdirs/experiment --seeds 0,1,2
  python scripts/experiment.py --rows scratch,latent --loso_config.protocol.name=kfold
  python scripts/experiment.py --out workdirs/gap --rows scratch,latent --domain_gap=all

Writes results.md (mean ± std over seeds, last epoch), results.json and results.png into --out.
"""

from absl import flags
from ml_collections import config_flags

from ma2mi_jax import cli
from ma2mi_jax.data.synthetic import domain_gap
from ma2mi_jax.workflows import experiment

_VAE = config_flags.DEFINE_config_file(
    "autoencoder_config", "configs/synthetic_autoencoder.py", "Domain autoencoder (shared).", lock_config=True
)
_PRETRAIN = config_flags.DEFINE_config_file(
    "pretrain_config", "configs/synthetic_pretrain.py", "Pre-training config of every row.", lock_config=True
)
_LOSO = config_flags.DEFINE_config_file(
    "loso_config", "configs/synthetic_loso.py", "Fine-tuning config of every row.", lock_config=True
)
_OUT = flags.DEFINE_string("out", "workdirs/experiment", "Folder for every run and the tables.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (pre-training and fine-tuning).")
_ROWS = flags.DEFINE_list(
    "rows",
    None,
    "Rows to run (default: all): scratch,maer,pixel,latent,no_fpe,no_lpos,joint and the fine-tuning "
    "rows latent_* (ma2mi_jax/workflows/experiment.py)",
)
_GAP = flags.DEFINE_string(
    "domain_gap",
    "",
    "Domain-gap factors of the macro set (faces,resolution,compression,lighting,timing; all).",
)


def main(argv: list[str]) -> None:
    """Parse flags and run the experiment."""
    cli.check_no_extra_args(argv)
    seeds = [int(s) for s in _SEEDS.value]
    gap = domain_gap.parse(_GAP.value)
    experiment.run(_VAE.value, _PRETRAIN.value, _LOSO.value, _OUT.value, seeds, _ROWS.value, gap)


if __name__ == "__main__":
    cli.run(main)
