"""Featurizing the splits: images decoded once, in bounded batches, through one or several extractors.

Any :class:`FeatureExtractor` works (an onnxruntime graph in any numeric format, the Keras featurizer
...). Images are decoded and preprocessed one batch at a time, and every extractor asked for runs on
that batch before the next is decoded, so memory holds one batch of images whatever the split's size,
and N formats cost one decoding pass. Features are cached per split, keyed by the extractor's
fingerprint (an ONNX graph's hash), the preprocessing spec and the content of the split's image files:
the same graph on the same images is never featurized twice, and a changed image invalidates its split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from fpgaflow.fpga_runtime.errors import InvalidInput
from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec, preprocess
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.files import write_atomic
from fpgaflow.tasks.progress import Progress
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings

SPLITS = ("train", "val", "test")
REQUIRED_COLUMNS = ("path", "label", "split")
CACHE_FORMAT = 2


@runtime_checkable
class FeatureExtractor(Protocol):
    """Preprocessed images [N, H, W, 3] float32 → features [N, D] float32."""

    @property
    def fingerprint(self) -> str:
        """Identifies the weights and the numeric format; part of the feature cache key."""
        ...

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class SplitFeatures:
    features: np.ndarray  # [N, D] float32, rows in the split's order in the manifest
    labels: np.ndarray  # [N] int64, indices into the class names


@dataclass(frozen=True)
class FeatureSet:
    splits: dict[str, SplitFeatures]
    cache_paths: dict[str, Path]  # split → its cache file; empty when the cache is off
    from_cache: bool  # every split was read from the cache

    def __getitem__(self, split: str) -> SplitFeatures:
        return self.splits[split]

    @property
    def feature_dim(self) -> int:
        return int(next(iter(self.splits.values())).features.shape[1])


def check_splits(splits: pd.DataFrame, class_names: Sequence[str]) -> None:
    missing = [column for column in REQUIRED_COLUMNS if column not in splits.columns]
    if missing:
        raise PipelineStepError(f"split manifest lacks the columns {missing} (has {list(splits.columns)})")
    unknown_splits = sorted(set(splits["split"]) - set(SPLITS))
    if unknown_splits:
        raise PipelineStepError(f"split manifest names splits {unknown_splits}; expected only {list(SPLITS)}")
    unknown_labels = sorted(set(splits["label"].astype(str)) - set(class_names))
    if unknown_labels:
        raise PipelineStepError(
            f"split manifest has labels {unknown_labels} that are not among the class names {list(class_names)}"
        )


def label_indices(labels: Sequence[str], class_names: Sequence[str]) -> np.ndarray:
    index = {name: position for position, name in enumerate(class_names)}
    return np.asarray([index[str(label)] for label in labels], dtype=np.int64)


def load_images(paths: Sequence[str | Path], spec: PreprocessSpec) -> np.ndarray:
    """Files → the float32 batch [N, crop, crop, 3] a featurizer takes: each file's bytes through ``preprocess``."""
    images = np.empty((len(paths), spec.crop, spec.crop, 3), dtype=np.float32)
    for position, path in enumerate(paths):
        try:
            images[position] = preprocess(Path(path).read_bytes(), spec)
        except InvalidInput as error:
            raise PipelineStepError(f"cannot use image {path}: {error}") from None
    return images


def image_batches(paths: Sequence[str | Path], spec: PreprocessSpec, batch_size: int) -> Iterator[np.ndarray]:
    """The images of ``paths`` preprocessed, ``batch_size`` at a time: only one batch is ever held."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    for start in range(0, len(paths), batch_size):
        yield load_images(paths[start : start + batch_size], spec)


def _run(extractor: FeatureExtractor, batch: np.ndarray) -> np.ndarray:
    features = np.asarray(extractor(batch), dtype=np.float32)
    if features.ndim != 2 or features.shape[0] != len(batch):
        raise PipelineStepError(
            f"feature extractor returned shape {features.shape} for a batch of {len(batch)} images; expected [N, D]"
        )
    return features


def extract_features_with(
    paths: Sequence[str | Path],
    extractors: Mapping[str, FeatureExtractor],
    spec: PreprocessSpec,
    batch_size: int,
    description: str = "featurize",
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Features of ``paths`` from every extractor, each batch decoded once and run through all of them."""
    if not paths:
        raise PipelineStepError(f"{description}: no images to featurize")
    results: dict[str, np.ndarray] = {}
    with Progress(description, total=len(paths), unit="img", shown=progress) as bar:
        start = 0
        for batch in image_batches(paths, spec, batch_size):
            for name, extractor in extractors.items():
                features = _run(extractor, batch)
                if name not in results:
                    results[name] = np.empty((len(paths), features.shape[1]), dtype=np.float32)
                results[name][start : start + len(batch)] = features
            start += len(batch)
            bar.update(len(batch))
    return results


def extract_features(
    paths: Sequence[str | Path],
    extractor: FeatureExtractor,
    spec: PreprocessSpec,
    batch_size: int,
    description: str = "featurize",
    progress: bool = True,
) -> np.ndarray:
    """Features of ``paths`` in batches of ``batch_size``, with a progress bar."""
    return extract_features_with(paths, {"only": extractor}, spec, batch_size, description, progress)["only"]


def images_fingerprint(paths: Sequence[str | Path]) -> str:
    """sha256 over the content of each file, in order: changes when any image, or the order, changes."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
        except OSError as error:
            raise PipelineStepError(f"cannot read image {path}: {error.strerror}") from None
    return digest.hexdigest()


def cache_key(extractor_fingerprint: str, spec: PreprocessSpec, images: str) -> str:
    """The cache key of one split's features: (graph, preprocessing, image contents)."""
    return hashlib.sha256(f"{CACHE_FORMAT}|{extractor_fingerprint}|{spec.model_dump_json()}|{images}".encode()).hexdigest()


def _load_cached(path: Path, rows: int) -> np.ndarray | None:
    """The cached features, or None when the file is missing or unreadable (a torn or foreign file is recomputed)."""
    try:
        features = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return features if features.ndim == 2 and len(features) == rows and features.dtype == np.float32 else None


def featurize_splits_with(
    splits: pd.DataFrame,
    class_names: Sequence[str],
    extractors: Mapping[str, FeatureExtractor],
    spec: PreprocessSpec,
    batch_size: int = 32,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> dict[str, FeatureSet]:
    """Every split's features from each extractor (by name) and its label indices; ``cache_dir=None`` disables the cache.

    Per split, the extractors whose features are not cached run together in one decoding pass.
    """
    check_splits(splits, class_names)
    present = [split for split in SPLITS if (splits["split"] == split).any()]
    features: dict[str, dict[str, np.ndarray]] = {name: {} for name in extractors}
    cache_paths: dict[str, dict[str, Path]] = {name: {} for name in extractors}
    cached: dict[str, set[str]] = {name: set() for name in extractors}
    labels = {}
    for split in present:
        rows = splits[splits["split"] == split]
        paths = list(rows["path"])
        labels[split] = label_indices(rows["label"], class_names)
        missing = dict(extractors)
        if cache_dir is not None:
            images = images_fingerprint(paths)
            for name, extractor in extractors.items():
                path = Path(cache_dir) / f"{cache_key(extractor.fingerprint, spec, images)}.npy"
                cache_paths[name][split] = path
                stored = _load_cached(path, len(paths))
                if stored is not None:
                    features[name][split] = stored
                    cached[name].add(split)
                    del missing[name]
        if missing:
            computed = extract_features_with(paths, missing, spec, batch_size, f"featurize {split}", progress)
            for name, values in computed.items():
                features[name][split] = values
                if name in cache_paths and split in cache_paths[name]:
                    write_atomic(cache_paths[name][split], partial(np.save, arr=values, allow_pickle=False))
    return {
        name: FeatureSet(
            {split: SplitFeatures(features[name][split], labels[split]) for split in present},
            cache_paths[name],
            from_cache=cached[name] == set(present),
        )
        for name in extractors
    }


def featurize_splits(
    splits: pd.DataFrame,
    class_names: Sequence[str],
    extractor: FeatureExtractor,
    spec: PreprocessSpec,
    batch_size: int = 32,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> FeatureSet:
    """Features and label indices of every split in the manifest; ``cache_dir=None`` disables the cache."""
    return featurize_splits_with(splits, class_names, {"only": extractor}, spec, batch_size, cache_dir, progress)["only"]


def feature_cache_dir(settings: PipelineSettings | None = None) -> Path | None:
    settings = settings or get_pipeline_settings()
    return settings.home / "cache" / "features" if settings.feature_cache else None
