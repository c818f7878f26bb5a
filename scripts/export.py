"""Export fine-tuned classifiers of a cross-validation workdir for inference.

python scripts/export.py --workdir workdirs/loso_samm --out exports/samm            # every fold
python scripts/export.py --workdir workdirs/loso_samm --fold 006 --out exports/006   # one fold
python scripts/export.py --workdir workdirs/loso_samm --fold all --out exports/samm_all
    (--fold all: the model trained on every subject, from a run with --config.finetune.final_model=True)
"""

from absl import flags

from ma2mi_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of a scripts/loso.py run.")
_FOLD = flags.DEFINE_string("fold", None, "Fold name (e.g. sub01, fold1) or 'all'; default: every fold.")
_OUT = flags.DEFINE_string("out", None, "Output folder (one sub-folder per fold when --fold is not given).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing export.")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv: list[str]) -> None:
    """Parse flags and export."""
    cli.check_no_extra_args(argv)
    from ma2mi_jax.train import finetune

    for path in finetune.export_from_workdir(
        _WORKDIR.value, _OUT.value, fold=_FOLD.value, overwrite=_OVERWRITE.value
    ):
        print(f"exported {path}")


if __name__ == "__main__":
    cli.run(main)
