"""Fine-tuning and evaluation on MMEW (6 classes, 5-fold subject-independent), from an MA2MI pre-training checkpoint.

Run:  python scripts/loso.py --config configs/mmew.py --config.data.root=/data/MMEW_Final \
          --config.init=workdirs/pretrain_dfew
Smoke test on a CPU:  python scripts/loso.py --config configs/mmew.py:tiny --config.data.root=/data/MMEW_Final
"""

from ma2mi_jax import configlib


def get_config(arg: str | None = None):
    """MMEW, 6 classes, 5-fold subject-independent."""
    c = configlib.finetune_base()
    c.workdir = "workdirs/loso_mmew"
    c.init = "workdirs/pretrain_dfew"
    c.data.name = "mmew"
    c.data.root = "/data/MMEW_Final"
    c.data.class_names = configlib.MMEW_CLASSES
    c.protocol.name = "kfold"
    c.protocol.num_folds = 5
    return configlib.finalize(c, arg)
