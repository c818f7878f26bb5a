"""The MEGC 2019 composite database: CASME II + SAMM + SMIC-HS read together, subjects kept apart.

Layout accepted (docs/datasets.md#megc-2019-composite-database):
- `data.root` is a folder holding `CASME2/`, `SAMM/` and `SMIC/`, each laid out as its own reader
  expects; `data.roots.casme2`, `data.roots.samm`, `data.roots.smic` name a database's folder
  elsewhere (an empty entry means `<data.root>/<CASME2|SAMM|SMIC>`). With all three set,
  `data.root` may be empty.
- each database's sheet is found in its own folder; `data.sheet` (one file) does not apply.

Labels: each reader maps its raw emotions with the config's `data.label_map` onto
`data.class_names` (configs/megc2019.py: negative, positive, surprise, as MEGC 2019 defines them);
an emotion outside them ("others") is dropped as not in the protocol.

Samples keep their database in `MicroSample.dataset`; subjects are prefixed with it
(`casme2_sub01`, `samm_006`, `smic_s1`) so that no two databases share a subject (and a fold name
stays a plain folder name), clip ids likewise (`casme2/sub01/EP02_01f`). The report lists every
database's drops and repairs under those prefixed ids.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence

from ma2mi_jax.data.media import frames as frames_lib
from ma2mi_jax.data.readers import casme2, samm, smic
from ma2mi_jax.data.records import DataError, MicroSample, ReadReport
from ma2mi_jax.errors import ConfigError

NAME = "megc2019"
DATABASES = ("casme2", "samm", "smic")
FOLDERS = {"casme2": "CASME2", "samm": "SAMM", "smic": "SMIC"}


def database_roots(root: str, overrides: Mapping[str, str]) -> dict[str, str]:
    """Each database's folder: `data.roots.<db>` when set, else `<data.root>/<FOLDER>`; checked to exist."""
    unknown = sorted(set(overrides) - set(DATABASES))
    if unknown:
        raise ConfigError(f"data.roots has unknown key(s) {unknown}; valid: {list(DATABASES)}")
    roots = {}
    for db in DATABASES:
        given = str(overrides.get(db, "") or "")
        if not given and not root:
            raise DataError(
                f"megc2019: no folder for {db}: set data.root to the folder holding "
                f"{', '.join(f + '/' for f in FOLDERS.values())} or data.roots.{db}"
            )
        path = given or os.path.join(root, FOLDERS[db])
        key = f"data.roots.{db}" if given else "data.root"
        frames_lib.require_dir(path, f"megc2019: the {db} folder", key)
        roots[db] = path
    return roots


def prefixed(sample: MicroSample, db: str) -> MicroSample:
    """The sample with its subject and clip id prefixed by its database (`samm_006`, `samm/006/006_1_2`)."""
    return dataclasses.replace(sample, subject=f"{db}_{sample.subject}", clip_id=f"{db}/{sample.clip_id}")


def merge_report(report: ReadReport, part: ReadReport, db: str) -> None:
    """Add one database's report to the composite's, with subjects and clip ids prefixed."""
    report.kept += [(f"{db}_{subject}", emotion) for subject, emotion in part.kept]
    report.dropped += [(f"{db}/{clip}", reason) for clip, reason in part.dropped]
    report.repaired += [(f"{db}/{clip}", reason) for clip, reason in part.repaired]
    report.problems += [(kind, f"{db}/{clip}", reason) for kind, clip, reason in part.problems]


def read(
    roots: Mapping[str, str],
    *,
    class_names: Sequence[str],
    label_map: Mapping[str, str] = {},
    strict: bool = True,
    smic_apex: str,
    smic_motion_size: int,
) -> tuple[list[MicroSample], ReadReport]:
    """Read the three databases (folders from `database_roots`) into one list of prefixed samples."""
    smic.check_options(smic_apex, smic_motion_size)
    common = {"class_names": class_names, "label_map": label_map, "strict": strict}
    parts = {
        "casme2": casme2.read(roots["casme2"], **common),
        "samm": samm.read(roots["samm"], **common),
        "smic": smic.read(roots["smic"], **common, apex=smic_apex, motion_size=smic_motion_size),
    }
    report = ReadReport(NAME)
    samples: list[MicroSample] = []
    for db in DATABASES:
        part_samples, part_report = parts[db]
        samples += [prefixed(s, db) for s in part_samples]
        merge_report(report, part_report, db)
    return samples, report
