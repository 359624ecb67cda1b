"""What is measured: one ResNet-50 (random init, seeded) with a softmax head, as a Keras model, as
ONNX stages, and as one packaged service per numeric format; plus the request image."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec, preprocess
from fpgaflow.tasks.settings import PipelineSettings

FEATURIZER = "resnet50"
FORMATS = ("fp32", "int8", "msfp9", "msfp8")
CLASS_NAMES = tuple(f"class_{index}" for index in range(10))
REQUEST_PHOTO = "china.jpg"
JPEG_QUALITY = 90


@dataclass
class Subjects:
    input_size: int
    spec: PreprocessSpec
    keras_model: object  # featurizer + head, one functional Keras model
    featurizer_onnx: dict[str, Path]
    head_onnx: Path
    services: dict[str, Path]
    macs: int
    parameters: int
    jpeg: bytes
    timings_seconds: dict[str, float] = field(default_factory=dict)


def request_jpeg() -> bytes:
    """A real photograph (scikit-learn's sample 'china.jpg', 427x640) as the JPEG every request sends."""
    from sklearn.datasets import load_sample_image

    buffer = io.BytesIO()
    Image.fromarray(load_sample_image(REQUEST_PHOTO)).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def calibration_images(spec: PreprocessSpec, count: int, seed: int = 0) -> np.ndarray:
    """``count`` preprocessed crops of scikit-learn's two sample photographs (int8 calibration)."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = load_sample_images().images
    batch = []
    for index in range(count):
        photo = photos[index % len(photos)]
        height, width = photo.shape[:2]
        side = int(rng.integers(min(height, width) // 2, min(height, width) + 1))
        top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        buffer = io.BytesIO()
        Image.fromarray(photo[top : top + side, left : left + side]).save(buffer, format="JPEG", quality=JPEG_QUALITY)
        batch.append(preprocess(buffer.getvalue(), spec))
    return np.stack(batch)


def _head(feature_dim: int, seed: int):
    import keras

    from fpgaflow.tasks.featurizers.catalog import seed_everything

    seed_everything(seed)
    features = keras.Input((feature_dim,), name="features")
    probabilities = keras.layers.Dense(len(CLASS_NAMES), activation="softmax", name="probabilities")(features)
    return keras.Model(features, probabilities, name="head")


def build_subjects(
    work: Path,
    input_size: int,
    settings: PipelineSettings,
    calibration_count: int = 8,
    seed: int = 0,
    formats: tuple[str, ...] = FORMATS,
) -> Subjects:
    """Build the model once and package it in every format under ``work``."""
    import time

    import keras

    from fpgaflow.tasks.conversion.cache import onnx_cache_dir
    from fpgaflow.tasks.conversion.onnx_stages import convert_keras_stage
    from fpgaflow.tasks.featurizers.catalog import build_featurizer
    from fpgaflow.tasks.numerics.formats import prepare_format_file
    from fpgaflow.tasks.packaging.service_dir import package_service

    timings: dict[str, float] = {}
    start = time.perf_counter()
    featurizer = build_featurizer(FEATURIZER, "none", input_size, seed=seed, settings=settings)
    head = _head(featurizer.info.feature_dim, seed)
    image = keras.Input((input_size, input_size, 3), name="image")
    whole = keras.Model(image, head(featurizer.model(image)), name=f"{FEATURIZER}_classifier")
    timings["build_keras"] = time.perf_counter() - start

    start = time.perf_counter()
    stages = work / "stages"
    stages.mkdir(parents=True, exist_ok=True)
    cache = onnx_cache_dir(settings)
    fp32_path = convert_keras_stage(
        featurizer.model, stages / "featurizer-fp32.onnx", "input", "features", settings.onnx_opset, cache
    )
    head_path = convert_keras_stage(head, stages / "head.onnx", "features", "probabilities", settings.onnx_opset, cache)
    timings["convert_onnx"] = time.perf_counter() - start

    spec = featurizer.info.preprocessing
    calibration = calibration_images(spec, calibration_count, seed)
    featurizer_onnx = {"fp32": Path(fp32_path)}
    for name in formats:
        if name == "fp32":
            continue
        start = time.perf_counter()
        featurizer_onnx[name] = prepare_format_file(
            Path(fp32_path), name, stages / f"featurizer-{name}.onnx", calibration, settings=settings
        )
        timings[f"prepare_{name}"] = time.perf_counter() - start

    services = {}
    for name in formats:
        services[name] = package_service(
            name=f"bench-{name}",
            version="1",
            class_names=CLASS_NAMES,
            preprocessing=spec,
            numeric_format=name,
            fpga_onnx=featurizer_onnx[name],
            cpu_onnx=Path(head_path),
            source={"benchmark": FEATURIZER},
            destination=work / "services" / name,
            settings=settings,
        )
    return Subjects(
        input_size=input_size,
        spec=spec,
        keras_model=whole,
        featurizer_onnx=featurizer_onnx,
        head_onnx=Path(head_path),
        services=services,
        macs=featurizer.info.mac_count,
        parameters=featurizer.info.parameter_count,
        jpeg=request_jpeg(),
        timings_seconds=timings,
    )
