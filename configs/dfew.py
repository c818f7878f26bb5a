"""MA2MI pre-training on DFEW (16,372 face-cropped clips, frame folders Clip/clip_224x224).

Run:  python scripts/pretrain.py --config configs/dfew.py --config.data.root=/data/DFEW
Smoke test on a CPU:  python scripts/pretrain.py --config configs/dfew.py:tiny --config.data.root=/data/DFEW
"""

from ma2mi_jax import configlib


def get_config(arg: str | None = None):
    """MA2MI pre-training on DFEW."""
    c = configlib.pretrain_base()
    c.workdir = "workdirs/pretrain_dfew"
    c.data.name = "dfew"
    c.data.root = "/data/DFEW"
    return configlib.finalize(c, arg)
