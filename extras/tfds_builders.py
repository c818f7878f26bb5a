"""tensorflow-datasets builders that package a data set, or a latent cache, as versioned ArrayRecord.

Both builders are manual-download builders: the licensed archives are downloaded by the user, read
by this project's readers, and the resulting records (or a built `LatentCache`) are passed in.
Examples hold only numpy tensors (`tfds.features.Tensor`), scalars and text -- no JPEG-encoded
`Image`/`Video` features, whose decoding needs TensorFlow -- so writing with
`file_format="array_record"` and reading with `tfds.data_source(...)` (random access, fed to
Grain) both work without TensorFlow installed. Shuffling at write time is disabled, so record i of
the split is sample (or cache clip) i of the input.

    build_micro_pairs(samples, image_size=..., data_dir=...)  -> "micro_pairs/<dataset>_<size>"
    micro_pairs_source(data_dir, name)                         -> random-access source for Grain
    read_micro_pairs(source)                                   -> pairs uint8[N,2,S,S,3], labels, ...
    build_macro_latents(cache, data_dir=..., dataset=...)     -> "macro_latents/<dataset>_<size>"
    SourceLatents.open(data_dir, name)                         -> drop-in for LatentCache in pipelines
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
import tqdm

from ma2mi_jax.data import micro_pairs
from ma2mi_jax.data.latent_cache import LatentCache
from ma2mi_jax.data.records import DataError, MicroSample

SPLIT = "train"  # one split holding every sample; folds are made by the protocol code

_INSTRUCTIONS = """\
The data set is licensed by its authors and must be requested and downloaded by hand. Unpack it,
read it with ma2mi_jax's reader for that data set, and pass the records to this builder (see
`extras.tfds_builders`); nothing is downloaded by the builder itself.
"""


def _config(dataset: str, image_size: int, description: str) -> tfds.core.BuilderConfig:
    if not re.fullmatch(r"[a-z0-9_]+", dataset):
        raise ValueError(f"dataset name {dataset!r}: use lower-case letters, digits and '_' only")
    return tfds.core.BuilderConfig(name=f"{dataset}_{image_size}", description=description)


def _size_from_config(config: Any) -> int | None:
    """Image size encoded at the end of a config name such as 'casme2_224'."""
    name = config if isinstance(config, str) else getattr(config, "name", None)
    match = re.fullmatch(r"[a-z0-9_]+_(\d+)", name or "")
    return int(match.group(1)) if match else None


class MicroPairs(tfds.core.GeneratorBasedBuilder):
    """A micro-expression data set's onset/apex frames (uint8), label, subject and clip id."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Onset and apex as uint8[S,S,3] tensors, label, subject, clip id, index."
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
    # No download, so no checksums file next to the code; tfds' lookup of the code folder fails
    # for an editable install of this package, so say there is none.
    code_path = None

    def __init__(
        self,
        *,
        samples: Sequence[MicroSample] | None = None,
        pairs: np.ndarray | None = None,
        image_size: int | None = None,
        **kwargs: Any,
    ):
        """Give `samples` (and optionally their decoded `pairs`) to build; nothing to read back."""
        self._samples = samples
        self._pairs = pairs
        self._image_size = image_size or _size_from_config(kwargs.get("config"))
        if self._image_size is None:
            raise ValueError("MicroPairs needs image_size or a config named '<dataset>_<size>'")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        s = self._image_size
        return tfds.core.DatasetInfo(
            builder=self,
            description="Onset and apex frames of micro-expression clips, resized to a square.",
            features=tfds.features.FeaturesDict(
                {
                    "onset": tfds.features.Tensor(shape=(s, s, 3), dtype=np.uint8),
                    "apex": tfds.features.Tensor(shape=(s, s, 3), dtype=np.uint8),
                    "label": tfds.features.Scalar(dtype=np.int64),
                    "index": tfds.features.Scalar(dtype=np.int64),
                    "subject": tfds.features.Text(),
                    "clip_id": tfds.features.Text(),
                    "emotion": tfds.features.Text(),
                }
            ),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        if self._samples is None:
            raise DataError(f"{self.name}: no samples given; read the data set and pass samples=...")
        return {SPLIT: self._generate_examples()}

    def _generate_examples(self):
        samples = self._samples
        pairs = self._pairs
        if pairs is None:
            pairs = micro_pairs.load_micro_pairs(samples, self._image_size)  # [N,2,S,S,3]
        for i, s in enumerate(samples):
            yield (
                i,
                {
                    "onset": pairs[i, 0],
                    "apex": pairs[i, 1],
                    "label": s.label,
                    "index": i,
                    "subject": s.subject,
                    "clip_id": s.clip_id,
                    "emotion": s.emotion,
                },
            )


class MacroLatents(tfds.core.GeneratorBasedBuilder):
    """A latent cache: per clip its VAE latents float32[n,h,w,c], label and clip id."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Per-clip latents (zlib-compressed float32), label, clip id."
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
    # No download, so no checksums file next to the code; tfds' lookup of the code folder fails
    # for an editable install of this package, so say there is none.
    code_path = None

    def __init__(
        self, *, cache: LatentCache | None = None, labels: dict[str, int] | None = None, **kwargs: Any
    ):
        """Give a built `cache` (and optional clip labels) to build; nothing to read back."""
        self._cache = cache
        self._labels = labels or {}
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        shape = (None, None, None, None) if self._cache is None else (None, *self._cache.latent_shape)
        meta = tfds.core.MetadataDict()
        if self._cache is not None:
            meta.update(
                image_size=self._cache.image_size,
                face_crop=self._cache.face_crop,
                latent_shape=list(self._cache.latent_shape),
                clip_ids=sorted(self._cache.clips),
                num_frames=[self._cache.num_frames(c) for c in sorted(self._cache.clips)],
            )
        return tfds.core.DatasetInfo(
            builder=self,
            description="VAE latents of every frame of macro-expression clips (pre-training cache).",
            features=tfds.features.FeaturesDict(
                {
                    "latents": tfds.features.Tensor(
                        shape=shape, dtype=np.float32, encoding=tfds.features.Encoding.ZLIB
                    ),
                    "num_frames": tfds.features.Scalar(dtype=np.int64),
                    "label": tfds.features.Scalar(dtype=np.int64),
                    "clip_id": tfds.features.Text(),
                }
            ),
            metadata=meta,
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        if self._cache is None:
            raise DataError(f"{self.name}: no latent cache given; build one and pass cache=...")
        return {SPLIT: self._generate_examples()}

    def _generate_examples(self):
        cache = self._cache
        for i, clip_id in enumerate(tqdm.tqdm(sorted(cache.clips), desc="package latents", unit="clip")):
            n = cache.num_frames(clip_id)
            yield (
                i,
                {
                    "latents": cache.read(clip_id, range(n)),
                    "num_frames": n,
                    "label": int(self._labels.get(clip_id, -1)),
                    "clip_id": clip_id,
                },
            )


def _prepare(builder: tfds.core.GeneratorBasedBuilder, manual_dir: str | None) -> str:
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir),
    )
    return f"{builder.name}/{builder.builder_config.name}"


def build_micro_pairs(
    samples: Sequence[MicroSample],
    *,
    image_size: int,
    data_dir: str,
    dataset: str | None = None,
    pairs: np.ndarray | None = None,
    manual_dir: str | None = None,
) -> str:
    """Package onset/apex pairs as ArrayRecord under `data_dir`; returns the name for `tfds.data_source`."""
    if not samples:
        raise DataError("build_micro_pairs: no samples to package")
    dataset = dataset or samples[0].dataset
    config = _config(dataset, image_size, f"{dataset} onset/apex pairs at {image_size}x{image_size}")
    builder = MicroPairs(
        samples=samples, pairs=pairs, image_size=image_size, data_dir=data_dir, config=config
    )
    return _prepare(builder, manual_dir)


def build_macro_latents(
    cache: LatentCache,
    *,
    data_dir: str,
    dataset: str,
    labels: dict[str, int] | None = None,
    manual_dir: str | None = None,
) -> str:
    """Package a latent cache as ArrayRecord under `data_dir`; returns the name for `tfds.data_source`."""
    config = _config(
        dataset, cache.image_size, f"{dataset} VAE latents at {cache.image_size}x{cache.image_size}"
    )
    builder = MacroLatents(cache=cache, labels=labels, data_dir=data_dir, config=config)
    return _prepare(builder, manual_dir)


def source(data_dir: str, name: str, split: str = SPLIT) -> Sequence[dict[str, Any]]:
    """Random-access source of a packaged set (`tfds.data_source`), usable by `grain.MapDataset.source`."""
    try:
        return tfds.data_source(name, data_dir=data_dir, split=split)
    except Exception as e:
        raise DataError(
            f"cannot open {name} in {data_dir} ({type(e).__name__}: {e}); build it first "
            "(tfds_builders.build_micro_pairs / build_macro_latents)"
        ) from e


micro_pairs_source = source


def read_micro_pairs(src: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """All records of a MicroPairs source: {"pairs": uint8[N,2,S,S,3], "label", "subject", "clip_id"}."""
    records = [src[i] for i in range(len(src))]
    records.sort(key=lambda r: int(r["index"]))
    text = lambda v: v.decode() if isinstance(v, bytes) else str(v)
    return {
        "pairs": np.stack([np.stack([r["onset"], r["apex"]]) for r in records]),
        "label": np.asarray([r["label"] for r in records], np.int32),
        "subject": np.asarray([text(r["subject"]) for r in records]),
        "clip_id": np.asarray([text(r["clip_id"]) for r in records]),
    }


class SourceLatents:
    """A packaged MacroLatents set with LatentCache's read interface (for `pretrain_iterator`)."""

    def __init__(self, data_dir: str, name: str, split: str = SPLIT):
        """Open `name` (e.g. "macro_latents/dfew_224") under `data_dir` for random access."""
        self.cache_dir = f"{data_dir}:{name}"
        self._data_dir, self._name, self._split = data_dir, name, split
        builder = tfds.builder(name, data_dir=data_dir)
        meta = builder.info.metadata
        if not meta or "clip_ids" not in meta:
            raise DataError(f"{name} in {data_dir} has no clip index in its metadata; rebuild it")
        self.image_size = int(meta["image_size"])
        self.face_crop = bool(meta["face_crop"])
        self.latent_shape = tuple(meta["latent_shape"])
        self._position = {cid: i for i, cid in enumerate(meta["clip_ids"])}
        self._num_frames = dict(zip(meta["clip_ids"], meta["num_frames"], strict=True))
        self._source: Sequence[dict[str, Any]] | None = None

    @classmethod
    def open(cls, data_dir: str, name: str, split: str = SPLIT) -> SourceLatents:
        """Open a packaged latent set."""
        return cls(data_dir, name, split)

    def __getstate__(self) -> dict[str, Any]:  # the data source is reopened in each worker process
        return {**self.__dict__, "_source": None}

    def __contains__(self, clip_id: str) -> bool:
        return clip_id in self._position

    def _record(self, clip_id: str) -> dict[str, Any]:
        if clip_id not in self._position:
            raise DataError(f"clip {clip_id} is not in {self.cache_dir}; rebuild the packaged latents")
        if self._source is None:
            self._source = source(self._data_dir, self._name, self._split)
        return self._source[self._position[clip_id]]

    def num_frames(self, clip_id: str) -> int:
        """Number of packaged frames of a clip."""
        if clip_id not in self._num_frames:
            raise DataError(f"clip {clip_id} is not in {self.cache_dir}; rebuild the packaged latents")
        return int(self._num_frames[clip_id])

    def read(self, clip_id: str, frames: Sequence[int]) -> np.ndarray:
        """Latents of `frames` (0-based) of a clip: float32[len(frames), h, w, c]."""
        return np.asarray(self._record(clip_id)["latents"][np.asarray(frames)], np.float32)
