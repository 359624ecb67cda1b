"""The detector's frozen featurizer (the VGG-16 backbone) and an on-disk cache of its feature maps.

A detector trained the way transfer learning is usually done computes its backbone's feature maps
once per image and trains only what comes after on them. The featurizer is the detector's own model
cut where the SSD layers start: ``conv4_3`` L2-normalised (before its learned scale) and ``pool5``
(what fc6 reads), so it shares the detector's weights. Cutting after the SSD extra layers instead,
so that only the heads learn, was measured on the sample data with seeded random weights: test mAP
stayed near 0 (see README), so the extra layers train too. Each image's maps are cached in one
file named by the featurizer's graph hash (architecture and every weight) and the preprocessing,
then the image's content hash: a second run reads them back, a changed image (or featurizer) is
computed afresh.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
from fpgaflow.tasks.detection.model import Detector
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.featurizers.features import load_images
from fpgaflow.tasks.files import write_atomic
from fpgaflow.tasks.progress import Progress
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings

CACHE_FORMAT = 1
CACHE_FOLDER = "detection-maps"
# The backbone outputs the SSD layers read: conv4_3 normalised (map 0, before its scale) and pool5 (fc6's input).
CUT_LAYERS = ("conv4_3_norm", "pool5")


@dataclass(frozen=True)
class FeatureMaps:
    """Backbone maps of some images: one array ``[N, H, W, C]`` per cut layer, rows in the order of the paths."""

    maps: list[np.ndarray]
    from_cache: int  # images read back from the cache
    computed: int  # images run through the featurizer

    def __len__(self) -> int:
        return len(self.maps[0])

    def rows(self, chosen: np.ndarray | slice) -> list[np.ndarray]:
        return [values[chosen] for values in self.maps]


def featurizer_model(detector: Detector) -> keras.Model:
    """The detector's VGG-16 backbone: preprocessed images → the maps its SSD layers read (conv4_3 alone for one map)."""
    model = detector.model
    names = CUT_LAYERS[: 1 if detector.info.feature_maps == 1 else 2]
    return keras.Model(model.inputs, [model.get_layer(name).output for name in names], name="ssd_vgg_backbone")


def graph_fingerprint(featurizer: keras.Model, spec: PreprocessSpec) -> str:
    """sha256 of the featurizer's architecture, every weight and the preprocessing that feeds it."""
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{featurizer.to_json()}|{spec.model_dump_json()}".encode())
    for variable in featurizer.weights:
        digest.update(variable.path.encode())
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(variable)).tobytes())
    return digest.hexdigest()


def image_fingerprint(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class FeatureMapCache:
    """One ``.npz`` per image under ``directory/<graph hash>/``, named by the image's content hash."""

    def __init__(self, directory: Path, graph_hash: str) -> None:
        self.directory = Path(directory) / graph_hash

    def path(self, image_hash: str) -> Path:
        return self.directory / f"{image_hash}.npz"

    def load(self, image_hash: str, count: int) -> list[np.ndarray] | None:
        path = self.path(image_hash)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                return [stored[f"map_{k}"] for k in range(count)]
        except (OSError, ValueError, KeyError):
            return None  # a damaged entry is recomputed and overwritten

    def save(self, image_hash: str, maps: Sequence[np.ndarray]) -> None:
        arrays = {f"map_{k}": values for k, values in enumerate(maps)}
        write_atomic(self.path(image_hash), lambda handle: np.savez(handle, allow_pickle=False, **arrays))


def map_cache_dir(settings: PipelineSettings | None = None) -> Path | None:
    """Where feature maps are cached (``<home>/cache/detection-maps``), or None when the feature cache is off."""
    settings = settings or get_pipeline_settings()
    return settings.home / "cache" / CACHE_FOLDER if settings.feature_cache else None


def extract_feature_maps(
    featurizer: keras.Model,
    paths: Sequence[str | Path],
    spec: PreprocessSpec,
    batch_size: int,
    cache: FeatureMapCache | None = None,
    description: str = "feature maps",
) -> FeatureMaps:
    """The feature maps of ``paths``: cached ones read back, the others computed in batches (and cached)."""
    if not paths:
        raise PipelineStepError(f"{description}: no images to featurize")
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    shapes = [tuple(int(size) for size in output.shape[1:]) for output in featurizer.outputs]
    maps = [np.empty((len(paths), *shape), np.float32) for shape in shapes]
    hashes = [image_fingerprint(path) for path in paths]
    missing = []
    for row, image_hash in enumerate(hashes):
        stored = cache.load(image_hash, len(shapes)) if cache else None
        if stored is None or [value.shape for value in stored] != shapes:
            missing.append(row)
            continue
        for values, value in zip(maps, stored):
            values[row] = value
    with Progress(description, total=len(paths), unit="img") as progress:
        progress.update(len(paths) - len(missing))
        for start in range(0, len(missing), batch_size):
            rows = missing[start : start + batch_size]
            outputs = featurizer(load_images([paths[row] for row in rows], spec), training=False)
            outputs = [np.asarray(value, np.float32) for value in (outputs if isinstance(outputs, list) else [outputs])]
            for position, row in enumerate(rows):
                for values, output in zip(maps, outputs):
                    values[row] = output[position]
                if cache:
                    cache.save(hashes[row], [output[position] for output in outputs])
            progress.update(len(rows))
    return FeatureMaps(maps, from_cache=len(paths) - len(missing), computed=len(missing))
