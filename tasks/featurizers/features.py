"""Featurizing the splits in batches, with a progress bar and an on-disk cache.

Any :class:`FeatureExtractor` works (the Keras featurizer, an onnxruntime one in a quantized
format ...). Features are cached keyed by the extractor's fingerprint, the dataset fingerprint,
the split assignment and the preprocessing spec, so a re-run with the same weights and data
reads them back instead of recomputing.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
from tqdm import tqdm

from fpgaflow.fpga_runtime.errors import InvalidInput
from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec, preprocess
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings

SPLITS = ("train", "val", "test")
REQUIRED_COLUMNS = ("path", "label", "split")
CACHE_FORMAT = 1


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
    cache_path: Path | None
    from_cache: bool

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
    images = []
    for path in paths:
        try:
            images.append(preprocess(Path(path).read_bytes(), spec))
        except InvalidInput as error:
            raise PipelineStepError(f"cannot use image {path}: {error}") from None
    if not images:
        return np.zeros((0, spec.crop, spec.crop, 3), dtype=np.float32)
    return np.stack(images)


def extract_features(
    paths: Sequence[str | Path],
    extractor: FeatureExtractor,
    spec: PreprocessSpec,
    batch_size: int,
    description: str = "featurize",
    progress: bool = True,
) -> np.ndarray:
    """Features of ``paths`` in batches of ``batch_size``, with a progress bar."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    chunks = []
    with tqdm(total=len(paths), desc=description, unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), batch_size):
            batch = load_images(paths[start : start + batch_size], spec)
            features = np.asarray(extractor(batch), dtype=np.float32)
            if features.ndim != 2 or features.shape[0] != len(batch):
                raise PipelineStepError(
                    f"feature extractor returned shape {features.shape} for a batch of {len(batch)} images; expected [N, D]"
                )
            chunks.append(features)
            bar.update(len(batch))
    if not chunks:
        raise PipelineStepError(f"{description}: no images to featurize")
    return np.concatenate(chunks)


def cache_key(
    extractor_fingerprint: str, dataset_fingerprint: str, spec: PreprocessSpec, splits: pd.DataFrame, class_names: Sequence[str]
) -> str:
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{extractor_fingerprint}|{dataset_fingerprint}|{spec.model_dump_json()}".encode())
    digest.update("\t".join(class_names).encode())
    for path, label, split in zip(splits["path"], splits["label"], splits["split"]):
        digest.update(f"\n{path}\t{label}\t{split}".encode())
    return digest.hexdigest()


def _save_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            np.savez(handle, allow_pickle=True, **arrays)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _load(path: Path, present: Sequence[str]) -> dict[str, SplitFeatures]:
    with np.load(path, allow_pickle=False) as stored:
        return {split: SplitFeatures(stored[f"{split}_features"], stored[f"{split}_labels"]) for split in present}


def featurize_splits(
    splits: pd.DataFrame,
    class_names: Sequence[str],
    dataset_fingerprint: str,
    extractor: FeatureExtractor,
    spec: PreprocessSpec,
    batch_size: int = 32,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> FeatureSet:
    """Features and label indices of every split in the manifest; ``cache_dir=None`` disables the cache."""
    check_splits(splits, class_names)
    present = [split for split in SPLITS if (splits["split"] == split).any()]
    cache_path = None
    if cache_dir is not None:
        key = cache_key(extractor.fingerprint, dataset_fingerprint, spec, splits, class_names)
        cache_path = Path(cache_dir) / f"{key}.npz"
        if cache_path.is_file():
            return FeatureSet(_load(cache_path, present), cache_path, from_cache=True)
    result = {}
    for split in present:
        rows = splits[splits["split"] == split]
        features = extract_features(list(rows["path"]), extractor, spec, batch_size, f"featurize {split}", progress)
        result[split] = SplitFeatures(features, label_indices(rows["label"], class_names))
    if cache_path is not None:
        arrays = {}
        for split, part in result.items():
            arrays[f"{split}_features"], arrays[f"{split}_labels"] = part.features, part.labels
        _save_atomic(cache_path, arrays)
    return FeatureSet(result, cache_path, from_cache=False)


def feature_cache_dir(settings: PipelineSettings | None = None) -> Path | None:
    settings = settings or get_pipeline_settings()
    return settings.home / "cache" / "features" if settings.feature_cache else None
