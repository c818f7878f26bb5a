"""MA2MI pre-training on AFEW (1,156 uncropped .avi videos, decoded with OpenCV and face-cropped once).

Run:  python scripts/pretrain.py --config configs/afew.py --config.data.root=/data/AFEW
Smoke test on a CPU:  python scripts/pretrain.py --config configs/afew.py:tiny --config.data.root=/data/AFEW
"""

from ma2mi_jax import configlib


def get_config(arg: str | None = None):
    """MA2MI pre-training on AFEW."""
    c = configlib.pretrain_base()
    c.workdir = "workdirs/pretrain_afew"
    c.data.name = "afew"
    c.data.root = "/data/AFEW"
    c.data.source = "video"
    c.data.face_crop = True
    c.data.class_names = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
    return configlib.finalize(c, arg)
