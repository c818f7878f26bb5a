"""Fine-tuning and evaluation on SAMM (5 classes, leave-one-subject-out), from an MA2MI pre-training checkpoint.

Run:  python scripts/loso.py --config configs/samm.py --config.data.root=/data/SAMM \
          --config.init=workdirs/pretrain_dfew
Smoke test on a CPU:  python scripts/loso.py --config configs/samm.py:tiny --config.data.root=/data/SAMM
"""

from ma2mi_jax import configlib


def get_config(arg: str | None = None):
    """SAMM, 5 classes, leave-one-subject-out."""
    c = configlib.finetune_base()
    c.workdir = "workdirs/loso_samm"
    c.init = "workdirs/pretrain_dfew"
    c.data.name = "samm"
    c.data.root = "/data/SAMM"
    c.data.class_names = configlib.SAMM_CLASSES
    c.data.label_map = {"other": "others"}
    return configlib.finalize(c, arg)
