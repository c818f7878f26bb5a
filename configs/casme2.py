"""Fine-tuning and evaluation on CASME II (5 classes, leave-one-subject-out), from an MA2MI pre-training checkpoint.

Run:  python scripts/loso.py --config configs/casme2.py --config.data.root=/data/CASME2 \
          --config.init=workdirs/pretrain_dfew
Smoke test on a CPU:  python scripts/loso.py --config configs/casme2.py:tiny --config.data.root=/data/CASME2
"""

from ma2mi_jax import configlib


def get_config(arg: str | None = None):
    """CASME II, 5 classes, leave-one-subject-out."""
    c = configlib.finetune_base()
    c.workdir = "workdirs/loso_casme2"
    c.init = "workdirs/pretrain_dfew"
    c.data.name = "casme2"
    c.data.root = "/data/CASME2"
    c.data.class_names = configlib.CASME2_CLASSES
    return configlib.finalize(c, arg)
