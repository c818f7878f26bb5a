"""MA2MI pre-training on FERV39K (38,935 face-cropped clips in 2_ClipsforFaceCrop).

Run:  python scripts/pretrain.py --config configs/ferv39k.py --config.data.root=/data/FERV39K
Smoke test on a CPU:  python scripts/pretrain.py --config configs/ferv39k.py:tiny --config.data.root=/data/FERV39K
"""

from ma2mi_jax import configlib


def get_config(arg: str | None = None):
    """MA2MI pre-training on FERV39K."""
    c = configlib.pretrain_base()
    c.workdir = "workdirs/pretrain_ferv39k"
    c.data.name = "ferv39k"
    c.data.root = "/data/FERV39K"
    c.data.class_names = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
    return configlib.finalize(c, arg)
