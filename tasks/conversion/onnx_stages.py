"""ONNX conversion of the two stages, with a parity proof on held-out images.

The FPGA stage (``input`` [N,H,W,3] → ``features``) and the CPU stage (``features`` →
``probabilities``) are converted separately with tf2onnx at a pinned opset, checked with the
ONNX checker, and compared with Keras on held-out preprocessed images: each stage on its own
(the CPU stage fed Keras features, so its error is its own) and the two chained end to end.
The comparison is written as a conversion report; :func:`ensure_parity` fails the step when a
difference exceeds the tolerance.

TensorFlow and tf2onnx are imported inside the functions that need them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from pydantic import BaseModel, ConfigDict

from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
from fpgaflow.tasks.conversion.cache import conversion_key, copy_atomic, onnx_cache_dir
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings

FPGA_INPUT = "input"
FEATURES = "features"
PROBABILITIES = "probabilities"
FPGA_STAGE_FILE = "fpga_stage.onnx"
CPU_STAGE_FILE = "cpu_stage.onnx"
REPORT_FILE = "conversion_report.json"
KERAS_BATCH_SIZE = 16


class ConversionError(PipelineStepError):
    """A Keras stage that cannot be converted into the expected ONNX graph."""


class ParityError(PipelineStepError):
    """onnxruntime does not reproduce Keras within the tolerance; ``report`` holds the measurements."""

    def __init__(self, message: str, report: ConversionReport | None = None):
        super().__init__(message)
        self.report = report


class StageParity(BaseModel):
    model_config = ConfigDict(frozen=True)

    max_abs_diff: float
    output_scale: float
    scaled_diff: float
    top1_agreement: float | None = None


class ConversionReport(BaseModel):
    """What was converted and how closely onnxruntime reproduces Keras (saved as JSON)."""

    model_config = ConfigDict(frozen=True)

    opset: int
    images: int
    tolerance: float
    min_top1_agreement: float
    fpga_onnx: Path
    cpu_onnx: Path
    stages: dict[str, StageParity]
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.problems

    def save(self, path: Path) -> Path:
        Path(path).write_text(self.model_dump_json(indent=2) + "\n")
        return Path(path)


def load_keras_model(path: Path):
    import keras

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Keras model {path} does not exist")
    return keras.models.load_model(path, compile=False)


def _rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in list(graph.output) + list(graph.value_info):
        if value.name == old:
            value.name = new


def check_graph_io(model: onnx.ModelProto, input_name: str, output_name: str, what: str) -> None:
    inputs = [value.name for value in model.graph.input]
    outputs = [value.name for value in model.graph.output]
    if inputs != [input_name] or outputs != [output_name]:
        raise ConversionError(
            f"{what}: ONNX graph has inputs {inputs} and outputs {outputs}; "
            f"expected exactly [{input_name!r}] -> [{output_name!r}]"
        )


def keras_to_onnx(keras_model, input_name: str, opset: int, what: str) -> onnx.ModelProto:
    """tf2onnx's graph of a Keras model whose one input is named ``input_name`` and has a free batch dimension."""
    import tensorflow as tf
    import tf2onnx

    shape = tuple(keras_model.inputs[0].shape)
    signature = (tf.TensorSpec((None, *shape[1:]), tf.float32, name=input_name),)
    try:
        model_proto, _ = tf2onnx.convert.from_keras(keras_model, input_signature=signature, opset=opset)
    except Exception as error:  # tf2onnx raises bare KeyError/ValueError deep inside; name the stage
        raise ConversionError(f"tf2onnx could not convert {what}: {error!r}") from error
    return model_proto


def save_checked(model_proto: onnx.ModelProto, onnx_path: Path) -> Path:
    """Save the graph and pass it through the ONNX checker (full check)."""
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model_proto, onnx_path)
    onnx.checker.check_model(str(onnx_path), full_check=True)
    return onnx_path


def convert_keras_stage(
    keras_model, onnx_path: Path, input_name: str, output_name: str, opset: int, cache_dir: Path | None = None
) -> Path:
    """One single-input, single-output functional Keras model → a checked ONNX file with the given tensor names.

    With a ``cache_dir``, a model converted before (same architecture, weights, names and opset) is copied
    from the cache instead of converted again.
    """
    onnx_path = Path(onnx_path)
    cached = Path(cache_dir) / f"{conversion_key(keras_model, input_name, output_name, opset)}.onnx" if cache_dir else None
    if cached is not None and cached.is_file():
        return copy_atomic(cached, onnx_path)
    what = f"stage {keras_model.name!r}"
    if len(keras_model.inputs) != 1 or len(keras_model.outputs) != 1:
        raise ConversionError(
            f"{what} must have exactly one input and one output, has {len(keras_model.inputs)} and {len(keras_model.outputs)}"
        )
    model_proto = keras_to_onnx(keras_model, input_name, opset, f"{what} (a Sequential model? use the functional API)")
    produced = [value.name for value in model_proto.graph.output]
    if len(produced) == 1 and produced[0] != output_name:
        _rename_tensor(model_proto.graph, produced[0], output_name)
    check_graph_io(model_proto, input_name, output_name, what)
    save_checked(model_proto, onnx_path)
    if cached is not None:
        copy_atomic(onnx_path, cached)
    return onnx_path


def run_onnx(onnx_path: Path, input_name: str, inputs: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(None, {input_name: np.ascontiguousarray(inputs, dtype=np.float32)})[0]


def run_keras(keras_model, inputs: np.ndarray) -> np.ndarray:
    return np.asarray(keras_model.predict(inputs, batch_size=KERAS_BATCH_SIZE, verbose=0), dtype=np.float32)


def measure_parity(reference: np.ndarray, candidate: np.ndarray, top1: bool = False) -> StageParity:
    """Max absolute difference (raw and divided by max(1, largest |reference|)) and, for class scores, top-1 agreement."""
    if reference.shape != candidate.shape:
        raise ParityError(f"output shapes differ: Keras {reference.shape}, onnxruntime {candidate.shape}")
    max_abs_diff = float(np.max(np.abs(reference.astype(np.float64) - candidate))) if reference.size else 0.0
    output_scale = max(1.0, float(np.max(np.abs(reference)))) if reference.size else 1.0
    agreement = None
    if top1:
        agreement = float(np.mean(np.argmax(reference, axis=-1) == np.argmax(candidate, axis=-1)))
    return StageParity(
        max_abs_diff=max_abs_diff, output_scale=output_scale, scaled_diff=max_abs_diff / output_scale, top1_agreement=agreement
    )


def parity_problems(stages: dict[str, StageParity], tolerance: float, min_top1_agreement: float) -> tuple[str, ...]:
    problems = []
    for stage, parity in stages.items():
        if not np.isfinite(parity.scaled_diff) or parity.scaled_diff > tolerance:
            problems.append(
                f"{stage}: max abs difference {parity.max_abs_diff:.3g} (scaled {parity.scaled_diff:.3g}) "
                f"exceeds the tolerance {tolerance:.3g}"
            )
        if parity.top1_agreement is not None and parity.top1_agreement < min_top1_agreement:
            problems.append(
                f"{stage}: top-1 agreement {parity.top1_agreement:.2%} is below the required {min_top1_agreement:.2%}"
            )
    return tuple(problems)


def parity_report(
    stages: dict[str, StageParity], images: int, fpga_onnx: Path, cpu_onnx: Path, output_dir: Path, settings: PipelineSettings
) -> ConversionReport:
    """The conversion report of measured ``stages`` against the settings' tolerances, saved into ``output_dir``."""
    report = ConversionReport(
        opset=settings.onnx_opset,
        images=images,
        tolerance=settings.parity_tolerance,
        min_top1_agreement=settings.parity_min_top1_agreement,
        fpga_onnx=fpga_onnx,
        cpu_onnx=cpu_onnx,
        stages=stages,
        problems=parity_problems(stages, settings.parity_tolerance, settings.parity_min_top1_agreement),
    )
    report.save(output_dir / REPORT_FILE)
    return report


def check_held_out(images: np.ndarray, input_shape: tuple) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[0] == 0:
        raise PipelineStepError(f"held-out images must be a non-empty [N,H,W,C] array, got shape {images.shape}")
    expected = tuple(input_shape[1:])
    if tuple(images.shape[1:]) != expected:
        raise PipelineStepError(f"held-out images have shape {images.shape[1:]} per image; the FPGA stage expects {expected}")
    return images


def convert_stages(
    fpga_model_path: Path,
    cpu_model_path: Path,
    held_out_images: np.ndarray,
    output_dir: Path,
    settings: PipelineSettings | None = None,
) -> ConversionReport:
    """Convert both stages into ``output_dir`` and measure parity; writes and returns the report.

    Does not raise on a parity miss (the report lists the problems, so it can be recorded
    first); call :func:`ensure_parity` to fail the step.
    """
    settings = settings or get_pipeline_settings()
    output_dir = Path(output_dir).resolve()
    fpga_model, cpu_model = load_keras_model(fpga_model_path), load_keras_model(cpu_model_path)
    images = check_held_out(held_out_images, tuple(fpga_model.inputs[0].shape))[: settings.parity_images]

    cache = onnx_cache_dir(settings)
    fpga_onnx = convert_keras_stage(fpga_model, output_dir / FPGA_STAGE_FILE, FPGA_INPUT, FEATURES, settings.onnx_opset, cache)
    cpu_onnx = convert_keras_stage(cpu_model, output_dir / CPU_STAGE_FILE, FEATURES, PROBABILITIES, settings.onnx_opset, cache)

    keras_features = run_keras(fpga_model, images)
    keras_probabilities = run_keras(cpu_model, keras_features)
    onnx_features = run_onnx(fpga_onnx, FPGA_INPUT, images)
    stages = {
        "fpga": measure_parity(keras_features, onnx_features),
        "cpu": measure_parity(keras_probabilities, run_onnx(cpu_onnx, FEATURES, keras_features), top1=True),
        "end_to_end": measure_parity(keras_probabilities, run_onnx(cpu_onnx, FEATURES, onnx_features), top1=True),
    }
    return parity_report(stages, len(images), fpga_onnx, cpu_onnx, output_dir, settings)


def ensure_parity(report: ConversionReport) -> ConversionReport:
    if not report.passed:
        raise ParityError(
            f"ONNX conversion does not reproduce Keras on {report.images} held-out images: " + "; ".join(report.problems),
            report,
        )
    return report


def load_held_out_images(paths: Sequence[str | Path], spec: PreprocessSpec, limit: int | None = None) -> np.ndarray:
    """Preprocess at most ``limit`` (default: the parity_images setting) images spread evenly over ``paths``.

    Give it the test split's paths, so parity is proven on images training never saw.
    """
    from fpgaflow.tasks.featurizers.features import load_images

    if not paths:
        raise PipelineStepError("no held-out images given for the parity check")
    limit = limit or get_pipeline_settings().parity_images
    chosen = sorted({int(index) for index in np.linspace(0, len(paths) - 1, num=min(limit, len(paths)))})
    return load_images([paths[index] for index in chosen], spec)
