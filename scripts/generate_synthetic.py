"""Generate a synthetic micro/macro-expression data set in an official on-disk layout.

python scripts/generate_synthetic.py --out data/synthetic/casme2 --layout casme2
python scripts/generate_synthetic.py --out data/synthetic/dfew --layout dfew --size 224 --workers 8
python scripts/generate_synthetic.py --out data/synthetic/megc2019 --layout megc2019   # CASME2/ SAMM/ SMIC/
python scripts/generate_synthetic.py --out data/synthetic/dfew_gap --layout dfew --domain_gap=all
python scripts/generate_synthetic.py --calibrate --micro_intensity 2   # proxy UF1 only, writes nothing
The layouts, flags, knobs and determinism: ma2mi_jax/data/synthetic/README.md.
"""

import dataclasses

from absl import flags

from ma2mi_jax import cli
from ma2mi_jax.data.synthetic import calibrate, domain_gap, generator
from ma2mi_jax.data.synthetic.knobs import Knobs
from ma2mi_jax.data.synthetic.planning import LAYOUTS

_OUT = flags.DEFINE_string("out", None, "Output folder: the reader's data root (needed unless --calibrate).")
_LAYOUT = flags.DEFINE_enum(
    "layout", "casme2", [*LAYOUTS, *generator.COMPOSITES], "Release layout (or composite) to write."
)
_SIZE = flags.DEFINE_integer("size", 64, "Frame side in pixels (64 for CPU, 224 possible).", lower_bound=16)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the whole set: same seed, same bytes.")
_CLIPS_SCALE = flags.DEFINE_float("clips_scale", 1.0, "Scale every class count (min 1 each) and subjects.")
_WORKERS = flags.DEFINE_integer("workers", 0, "Processes (0/1 = in this process); the bytes do not change.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a non-empty --out.")
_PREVIEW = flags.DEFINE_bool("preview", True, "Write preview.png (--nopreview: skip it).")
_QUIET = flags.DEFINE_bool("quiet", False, "No progress bar.")
_DOMAIN_GAP = flags.DEFINE_string(
    "domain_gap",
    "",
    f"Macro set only (--layout dfew): comma-separated domain-gap factors ({','.join(domain_gap.FACTORS)}) "
    f"or {domain_gap.ALL}; empty: the in-domain benchmark.",
)
_CALIBRATE = flags.DEFINE_bool(
    "calibrate", False, "Print the LOSO proxy UF1/UAR/accuracy of the micro set instead of writing files."
)
_KNOBS = {  # one flag per difficulty knob, e.g. --macro_jitter
    k.name: flags.DEFINE_float(k.name, k.default, k.metadata["help"]) for k in dataclasses.fields(Knobs)
}
flags.register_multi_flags_validator(
    ["layout", "calibrate"],
    lambda v: not (v["calibrate"] and v["layout"] in generator.COMPOSITES),
    "--calibrate measures one layout, not a composite",
)
flags.register_multi_flags_validator(
    ["domain_gap", "calibrate"],
    lambda v: not (v["calibrate"] and v["domain_gap"]),
    "--calibrate measures the in-domain set; --domain_gap does not apply to it",
)
flags.register_validator("clips_scale", lambda v: v > 0, "--clips_scale must be > 0")
flags.register_multi_flags_validator(
    ["out", "calibrate"], lambda v: bool(v["out"] or v["calibrate"]), "--out is required (unless --calibrate)"
)


def main(argv: list[str]) -> None:
    """Parse flags and write the set (or print the calibration proxies)."""
    cli.check_no_extra_args(argv)
    knobs = Knobs(**{name: flag.value for name, flag in _KNOBS.items() if flag.present})
    gap = domain_gap.parse(_DOMAIN_GAP.value)  # ConfigError: one line naming the factors
    if _CALIBRATE.value:
        print(calibrate.run(_LAYOUT.value, _SIZE.value, _SEED.value, knobs, _CLIPS_SCALE.value), flush=True)
        return
    line = generator.run(
        _LAYOUT.value,
        _OUT.value,
        _SIZE.value,
        _SEED.value,
        clips_scale=_CLIPS_SCALE.value,
        knobs=knobs,
        overwrite=_OVERWRITE.value,
        workers=_WORKERS.value,
        progress=not _QUIET.value,
        preview=_PREVIEW.value,
        macro_gap=gap,
    )
    print(line, flush=True)


if __name__ == "__main__":
    cli.run(main)
