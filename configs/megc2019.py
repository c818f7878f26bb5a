"""Fine-tuning and evaluation on the MEGC 2019 composite database (CASME II + SAMM + SMIC-HS, 3 classes, leave-one-subject-out), from an MA2MI pre-training checkpoint.

data.root holds CASME2/, SAMM/ and SMIC/ (each as its release ships it); data.roots.<casme2|samm|smic>
names a database's folder elsewhere. Results add each database's own UF1/UAR to the pooled ones.
Run:  python scripts/loso.py --config configs/megc2019.py --config.data.root=/data/MEGC2019 \
          --config.init=workdirs/pretrain_dfew
      python scripts/loso.py --config configs/megc2019.py --config.data.roots.casme2=/data/CASME2 \
          --config.data.roots.samm=/data/SAMM --config.data.roots.smic=/data/SMIC --config.init=workdirs/pretrain_dfew
Smoke test on a CPU:  python scripts/loso.py --config configs/megc2019.py:tiny --config.data.root=/data/MEGC2019
"""

from ma2mi_jax import configlib


def get_config(arg: str | None = None):
    """MEGC 2019 composite: CASME II + SAMM + SMIC-HS, negative / positive / surprise, LOSO over 68 subjects."""
    c = configlib.finetune_base()
    c.workdir = "workdirs/loso_megc2019"
    c.init = "workdirs/pretrain_dfew"
    c.data.name = "megc2019"
    c.data.root = "/data/MEGC2019"
    c.data.class_names = configlib.MEGC2019_CLASSES
    c.data.label_map = dict(configlib.MEGC2019_LABEL_MAP)
    c.data.smic_apex = "middle"
    return configlib.finalize(c, arg)
