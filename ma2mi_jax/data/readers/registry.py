"""Pick the data set reader named by `config.data.name` and call it with the config's settings."""

from __future__ import annotations

import os
from typing import Any

from ma2mi_jax.data.media import frames
from ma2mi_jax.data.readers import afew, casme2, dfew, ferv39k, macro_folders, megc2019, mmew, samm, smic
from ma2mi_jax.data.records import DataError, MacroClip, MicroSample, ReadReport
from ma2mi_jax.errors import ConfigError

MICRO_READERS = {
    "casme2": casme2.read,
    "samm": samm.read,
    "mmew": mmew.read,
    "smic": smic.read,
    "megc2019": megc2019.read,
}
MACRO_NAMES = ("dfew", "ferv39k", "afew", "frames", "videos")


def _get(cfg: Any, key: str, default: Any) -> Any:
    try:
        value = cfg.get(key, default)
    except AttributeError:
        value = getattr(cfg, key, default)
    return default if value is None else value


def _root(cfg: Any) -> str:
    root = str(_get(cfg, "root", ""))
    if not root:
        raise DataError("no data set folder given: set data.root (e.g. --config.data.root=/data/CASME2)")
    if not os.path.isdir(root):
        problem = frames.path_problem(root)
        found = "not found" if problem == "does not exist" else problem
        raise DataError(
            f"data set folder {root} {found} (config key data.root); check the path or pass "
            "--config.data.root=<folder>"
        )
    return root


def _name(cfg: Any, valid: tuple[str, ...]) -> str:
    name = str(_get(cfg, "name", ""))
    if name not in valid:
        raise ConfigError(f"data.name={name!r} is not a data set this job reads; valid names: {list(valid)}")
    return name


def _smic_options(cfg: Any) -> dict[str, Any]:
    """The SMIC-HS apex rule and motion size (data.smic_apex, data.smic_motion_size)."""
    size = _get(cfg, "smic_motion_size", None)
    if size is None:
        raise ConfigError("data.smic_motion_size is not set: SMIC-HS needs it (configlib sets the default)")
    return {"smic_apex": str(_get(cfg, "smic_apex", "middle")), "smic_motion_size": int(size)}


def _megc_roots(cfg: Any) -> dict[str, str]:
    """The three database folders of data.name=megc2019 (data.root and data.roots)."""
    if str(_get(cfg, "sheet", "")):
        raise ConfigError(
            "data.sheet names one sheet, but megc2019 reads each database's own sheet from its folder; "
            "leave data.sheet empty"
        )
    roots = _get(cfg, "roots", {})
    overrides = roots.to_dict() if hasattr(roots, "to_dict") else dict(roots)
    return megc2019.database_roots(str(_get(cfg, "root", "")), overrides)


def read_micro(data_cfg: Any) -> tuple[list[MicroSample], ReadReport]:
    """Validated micro-expression samples and their report for `data_cfg` (name, root, sheet, ...)."""
    name = _name(data_cfg, tuple(MICRO_READERS))
    common = {
        "class_names": tuple(_get(data_cfg, "class_names", ())),
        "label_map": dict(_get(data_cfg, "label_map", {})),
        "strict": bool(_get(data_cfg, "strict", True)),
    }
    if name == "megc2019":
        return megc2019.read(_megc_roots(data_cfg), **common, **_smic_options(data_cfg))
    root = _root(data_cfg)
    if name == "smic":
        options = _smic_options(data_cfg)
        return smic.read(root, **common, apex=options["smic_apex"], motion_size=options["smic_motion_size"])
    return MICRO_READERS[name](root, sheet=str(_get(data_cfg, "sheet", "")), **common)


def read_macro(data_cfg: Any) -> tuple[list[MacroClip], ReadReport]:
    """Validated macro-expression clips and their report for `data_cfg` (name, root, source, ...)."""
    name = _name(data_cfg, MACRO_NAMES)
    root = _root(data_cfg)
    strict = bool(_get(data_cfg, "strict", True))
    class_names = tuple(_get(data_cfg, "class_names", ()))
    if name == "dfew":
        return dfew.read(root, source=str(_get(data_cfg, "source", "frames")),
                         class_names=class_names or dfew.LABEL_NAMES, strict=strict)  # fmt: skip
    if name == "ferv39k":
        return ferv39k.read(root, class_names=class_names or ferv39k.EMOTIONS, strict=strict)
    if name == "afew":
        return afew.read(root, class_names=class_names or afew.EMOTIONS, strict=strict)
    if name == "frames":
        return macro_folders.read_frame_folders(root, strict=strict)
    return macro_folders.read_video_folder(root, strict=strict)
