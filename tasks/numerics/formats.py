"""The FPGA numerics step: prepare the featurizer in each numeric format, gate each on accuracy.

Each format is a small class with ``name`` and ``prepare(model, calibration) -> model``, built
from the format's descriptor (:mod:`fpgaflow.fpga_runtime.numerics`) by the implementation registered for
its kind in :data:`IMPLEMENTATIONS`:

* ``fp32``: the reference graph, unchanged;
* ``int8``: onnxruntime static QDQ quantization calibrated on preprocessed training images;
* ``msfp8`` / ``msfp9``: block floating point, weights rounded offline and activations rounded
  inside the graph (:mod:`fpgaflow.tasks.numerics.bfp`).

A prepared graph runs through :class:`OnnxFeatureExtractor`, so the head of a non-fp32 format is
trained on the features the device will produce; :mod:`fpgaflow.tasks.numerics.gate` gates each
format against fp32 and picks the one to serve.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx

from fpgaflow.fpga_runtime.graph_format import label_properties
from fpgaflow.fpga_runtime.numerics import FORMATS, FormatKind, NumericFormat, numeric_format
from fpgaflow.fpga_runtime.ort import make_session
from fpgaflow.tasks.conversion.onnx_stages import StageParity, measure_parity
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.numerics.bfp import apply_block_float
from fpgaflow.tasks.numerics.bias_correction import correct_conv_biases
from fpgaflow.tasks.numerics.int8 import quantize_int8
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings

FEATURIZER_INPUT = "input"
FEATURIZER_OUTPUT = "features"
REFERENCE_FORMAT = "fp32"


class OnnxNumerics(Protocol):
    """A numeric format the featurizer graph can be prepared in."""

    @property
    def format(self) -> NumericFormat: ...

    @property
    def name(self) -> str: ...

    def prepare(self, model: onnx.ModelProto, calibration: np.ndarray) -> onnx.ModelProto:
        """The graph computing in this format; ``calibration``: preprocessed training images [N, H, W, 3]."""
        ...


@dataclass(frozen=True)
class Float32Numerics:
    """The reference: the converted graph as it is."""

    format: NumericFormat

    @property
    def name(self) -> str:
        return self.format.name

    def prepare(self, model: onnx.ModelProto, calibration: np.ndarray) -> onnx.ModelProto:
        return onnx.ModelProto.FromString(model.SerializeToString())


@dataclass(frozen=True)
class Int8Numerics:
    """Static QDQ int8, activation ranges calibrated on up to ``calibration_images`` training images."""

    format: NumericFormat
    per_channel: bool = True
    reduce_range: bool = True
    method: str = "minmax"
    calibration_images: int = 64

    @classmethod
    def from_settings(cls, fmt: NumericFormat, settings: PipelineSettings) -> Int8Numerics:
        return cls(
            fmt,
            per_channel=settings.int8_per_channel,
            reduce_range=settings.int8_reduce_range,
            method=settings.int8_calibration_method,
            calibration_images=settings.int8_calibration_images,
        )

    @property
    def name(self) -> str:
        return self.format.name

    def prepare(self, model: onnx.ModelProto, calibration: np.ndarray) -> onnx.ModelProto:
        calibration = np.asarray(calibration, dtype=np.float32)
        if calibration.ndim != 4 or len(calibration) == 0:
            raise PipelineStepError(
                f"int8 needs preprocessed training images [N, H, W, 3] to calibrate on, got an array of shape {calibration.shape}"
            )
        return quantize_int8(
            model,
            calibration[: self.calibration_images],
            per_channel=self.per_channel,
            reduce_range=self.reduce_range,
            method=self.method,
        )


@dataclass(frozen=True)
class BlockFloatNumerics:
    """ms-fp8 / ms-fp9: weights rounded offline, activations rounded inside the graph; with ``bias_correction``
    each Conv's float bias takes back the mean error its rounded weights cause on the calibration images."""

    format: NumericFormat
    bias_correction: bool = True
    calibration_images: int = 64

    @classmethod
    def from_settings(cls, fmt: NumericFormat, settings: PipelineSettings) -> BlockFloatNumerics:
        return cls(fmt, settings.msfp_bias_correction, settings.int8_calibration_images)

    @property
    def name(self) -> str:
        return self.format.name

    def prepare(self, model: onnx.ModelProto, calibration: np.ndarray) -> onnx.ModelProto:
        prepared = apply_block_float(model, self.format)
        if not self.bias_correction or not any(node.op_type == "Conv" for node in model.graph.node):
            return prepared
        calibration = np.asarray(calibration, dtype=np.float32)
        if calibration.ndim != 4 or len(calibration) == 0:
            raise PipelineStepError(
                f"{self.name} bias correction needs preprocessed training images [N, H, W, 3], got an array of shape "
                f"{calibration.shape} (or set FPGAFLOW_MSFP_BIAS_CORRECTION=false)"
            )
        return correct_conv_biases(model, prepared, calibration[: self.calibration_images], _image_input(model))


def _image_input(model: onnx.ModelProto) -> str:
    initializer_names = {tensor.name for tensor in model.graph.initializer}
    inputs = [tensor.name for tensor in model.graph.input if tensor.name not in initializer_names]
    if len(inputs) != 1:
        raise ValueError(f"calibration feeds one image input; the model has inputs {inputs}")
    return inputs[0]


IMPLEMENTATIONS: dict[FormatKind, Callable[[NumericFormat, PipelineSettings], OnnxNumerics]] = {
    "float32": lambda fmt, settings: Float32Numerics(fmt),
    "int8": Int8Numerics.from_settings,
    "block_float": BlockFloatNumerics.from_settings,
}


def numerics_for(name: str, block_size: int | None = None, settings: PipelineSettings | None = None) -> OnnxNumerics:
    """The implementation of format ``name`` (``block_size`` applies to block floating point formats)."""
    try:
        fmt = numeric_format(name, block_size)
    except ValueError as error:
        raise PipelineStepError(str(error)) from None
    return IMPLEMENTATIONS[fmt.kind](fmt, settings or get_pipeline_settings())


def prepare_model(numerics: OnnxNumerics, model: onnx.ModelProto, calibration: np.ndarray) -> onnx.ModelProto:
    """``numerics.prepare`` checked by the ONNX checker and labelled with its format in the model metadata."""
    try:
        prepared = numerics.prepare(model, calibration)
        onnx.checker.check_model(prepared)
    except (ValueError, onnx.checker.ValidationError) as error:
        raise PipelineStepError(f"cannot prepare the featurizer graph in {numerics.name}: {error}") from None
    properties = {prop.key: prop.value for prop in prepared.metadata_props}
    onnx.helper.set_model_props(prepared, {**properties, **label_properties(numerics.format)})
    return prepared


def prepare_format_file(
    source: Path,
    name: str,
    output: Path,
    calibration: np.ndarray,
    block_size: int | None = None,
    settings: PipelineSettings | None = None,
) -> Path:
    """Read the fp32 featurizer ``source``, prepare it in format ``name``, write it to ``output``."""
    source, output = Path(source), Path(output)
    if not source.is_file():
        raise PipelineStepError(f"featurizer graph {source} does not exist")
    prepared = prepare_model(numerics_for(name, block_size, settings), onnx.load(source), calibration)
    output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(prepared, output)
    return output


def graph_fingerprint(serialized: bytes) -> str:
    """sha256 of an ONNX model without its metadata: the graph, weights included, and its opsets.

    Labelling a graph with its format (:func:`prepare_model`) leaves it the same graph, so the fp32 stage
    shares its features with the converted featurizer that training used.
    """
    model = onnx.ModelProto.FromString(serialized)
    del model.metadata_props[:]
    return "onnx-" + hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


class OnnxFeatureExtractor:
    """A prepared featurizer graph run by onnxruntime: ``fingerprint`` + ``__call__(batch) -> [N, D]``."""

    def __init__(
        self,
        model: onnx.ModelProto | bytes | str | Path,
        input_name: str = FEATURIZER_INPUT,
        output_name: str = FEATURIZER_OUTPUT,
    ):
        if isinstance(model, onnx.ModelProto):
            serialized = model.SerializeToString()
        elif isinstance(model, bytes):
            serialized = model
        else:
            path = Path(model)
            if not path.is_file():
                raise PipelineStepError(f"featurizer graph {path} does not exist")
            serialized = path.read_bytes()
        self.session = make_session(serialized)
        inputs = {tensor.name: tensor for tensor in self.session.get_inputs()}
        outputs = [tensor.name for tensor in self.session.get_outputs()]
        if input_name not in inputs or output_name not in outputs:
            raise PipelineStepError(
                f"featurizer graph must map input {input_name!r} to output {output_name!r}; it has inputs {list(inputs)} "
                f"and outputs {outputs}"
            )
        self.input_name, self.output_name = input_name, output_name
        self.image_shape = tuple(dim if isinstance(dim, int) else None for dim in inputs[input_name].shape[1:])
        self._fingerprint = graph_fingerprint(serialized)

    @property
    def fingerprint(self) -> str:
        """The graph's hash (:func:`graph_fingerprint`): its weights and its numeric format."""
        return self._fingerprint

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        if batch.ndim != 4 or any(want is not None and want != got for want, got in zip(self.image_shape, batch.shape[1:])):
            shape = ", ".join("?" if dim is None else str(dim) for dim in self.image_shape)
            raise ValueError(f"the featurizer expects a batch [N, {shape}], got shape {batch.shape}")
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        (features,) = self.session.run([self.output_name], {self.input_name: batch})
        return features.reshape(len(batch), -1).astype(np.float32, copy=False)


@dataclass(frozen=True)
class FormatComparison:
    """One prepared format against fp32 on the same images, and its onnxruntime latency at batch 1."""

    name: str
    features: StageParity
    predictions: StageParity | None
    latency_p50_ms: float
    latency_ratio: float

    def summary(self) -> dict:
        summary: dict[str, float | None] = {
            "features_max_abs_diff": self.features.max_abs_diff,
            "features_scaled_diff": self.features.scaled_diff,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_ratio_to_fp32": self.latency_ratio,
        }
        if self.predictions is not None:
            summary["predictions_max_abs_diff"] = self.predictions.max_abs_diff
            summary["top1_agreement"] = self.predictions.top1_agreement
        return summary


def batch1_latency_p50(
    extractors: Mapping[str, Callable[[np.ndarray], object]], image: np.ndarray, repeats: int = 50
) -> dict[str, float]:
    """Median milliseconds of one single-image run per extractor, runs interleaved so machine noise hits all alike."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    batch = np.asarray(image, dtype=np.float32)[None]
    for extractor in extractors.values():
        extractor(batch)
    timings: dict[str, list[float]] = {name: [] for name in extractors}
    for _ in range(repeats):
        for name, extractor in extractors.items():
            start = time.perf_counter()
            extractor(batch)
            timings[name].append((time.perf_counter() - start) * 1000)
    return {name: float(np.median(values)) for name, values in timings.items()}


def compare_formats(
    prepared: Mapping[str, onnx.ModelProto],
    images: np.ndarray,
    classifier: Callable[[np.ndarray], np.ndarray] | None = None,
    repeats: int = 50,
) -> dict[str, FormatComparison]:
    """Features (and, given a ``classifier``, class scores) of each prepared graph vs the fp32 one; batch-1 latency."""
    if REFERENCE_FORMAT not in prepared:
        raise PipelineStepError(f"comparing formats needs the {REFERENCE_FORMAT} graph as the reference")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise PipelineStepError(f"comparing formats needs preprocessed images [N, H, W, 3], got shape {images.shape}")
    extractors = {name: OnnxFeatureExtractor(model) for name, model in prepared.items()}
    features = {name: extractor(images) for name, extractor in extractors.items()}
    scores = {name: classifier(values) for name, values in features.items()} if classifier else {}
    latency = batch1_latency_p50(extractors, images[0], repeats)
    return {
        name: FormatComparison(
            name=name,
            features=measure_parity(features[REFERENCE_FORMAT], features[name]),
            predictions=measure_parity(scores[REFERENCE_FORMAT], scores[name], top1=True) if classifier else None,
            latency_p50_ms=latency[name],
            latency_ratio=latency[name] / latency[REFERENCE_FORMAT],
        )
        for name in prepared
    }


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def images_in(directory: Path, input_size: int, limit: int) -> np.ndarray:
    """Up to ``limit`` image files below ``directory`` (sorted), preprocessed for a square ``input_size`` input."""
    from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
    from fpgaflow.tasks.featurizers.features import load_images

    directory = Path(directory)
    if not directory.is_dir():
        raise PipelineStepError(f"image folder {directory} does not exist")
    paths = sorted(path for path in directory.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not paths:
        raise PipelineStepError(f"no {'/'.join(IMAGE_SUFFIXES)} files below {directory}")
    return load_images(paths, PreprocessSpec.for_input_size(input_size))


def onnx_classifier(path: Path, input_name: str = FEATURIZER_OUTPUT) -> Callable[[np.ndarray], np.ndarray]:
    """A CPU-stage graph (features -> class scores) as a function, to compare predictions across formats."""
    session = make_session(Path(path))
    output = session.get_outputs()[0].name
    return lambda features: session.run([output], {input_name: np.ascontiguousarray(features, dtype=np.float32)})[0]


def format_names(names: Sequence[str]) -> tuple[str, ...]:
    """Validated, de-duplicated format names in the given order (fp32 added first when missing)."""
    unknown = [name for name in names if name not in FORMATS]
    if unknown:
        raise PipelineStepError(f"unknown numeric formats {unknown}; known formats: {', '.join(FORMATS)}")
    ordered = dict.fromkeys([REFERENCE_FORMAT, *names])
    return tuple(ordered)
