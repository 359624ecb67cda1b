"""ONNX conversion of a detector, with a parity proof on held-out images (the classifier's step, for detectors).

The FPGA stage (``input`` → the head tensors) is converted with tf2onnx at the pinned opset, keeping
the Keras output names; the CPU stage is already ONNX (:mod:`fpgaflow.tasks.detection.postprocess`) and is copied.
Parity, written as the same :class:`~fpgaflow.tasks.conversion.onnx_stages.ConversionReport` the classifier's step writes:

- ``fpga``: Keras vs onnxruntime head tensors (max absolute difference, scaled like the classifier's);
- ``cpu``: the numpy reference CPU stage vs the ONNX one, both on the Keras head tensors;
- ``end_to_end``: Keras heads + numpy CPU stage vs both ONNX stages.

Detections are compared as sets (:func:`fpgaflow.tasks.detection.parity.detection_parity`): ``top1_agreement`` is
the share of detections with a twin on the other side, ``max_abs_diff`` the largest difference
between twins.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from fpgaflow.fpga_runtime.ort import make_session
from fpgaflow.tasks.conversion.onnx_stages import (
    CPU_STAGE_FILE,
    FPGA_INPUT,
    FPGA_STAGE_FILE,
    ConversionError,
    ConversionReport,
    check_held_out,
    keras_to_onnx,
    measure_parity,
    parity_report,
    save_checked,
)
from fpgaflow.tasks.detection.detect import detect
from fpgaflow.tasks.detection.export import load_detector
from fpgaflow.tasks.detection.geometry import flatten_heads
from fpgaflow.tasks.detection.parity import detection_parity
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings


def convert_detector_stage(keras_model, onnx_path: Path, opset: int) -> Path:
    """The multi-output FPGA stage → a checked ONNX file with input ``input`` and the Keras output names."""
    model_proto = keras_to_onnx(keras_model, FPGA_INPUT, opset, f"the detector {keras_model.name!r}")
    inputs = [value.name for value in model_proto.graph.input]
    outputs = [value.name for value in model_proto.graph.output]
    expected = list(keras_model.output_names)
    if inputs != [FPGA_INPUT] or sorted(outputs) != sorted(expected):
        raise ConversionError(
            f"detector ONNX graph has inputs {inputs} and outputs {outputs}; expected [{FPGA_INPUT!r}] -> {expected}"
        )
    return save_checked(model_proto, onnx_path)


def run_stage(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = make_session(Path(path))
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def convert_detector(
    fpga_model_path: Path,
    cpu_model_path: Path,
    held_out_images: np.ndarray,
    output_dir: Path,
    settings: PipelineSettings | None = None,
) -> ConversionReport:
    """Convert the detector's FPGA stage, copy its CPU stage into ``output_dir`` and measure parity.

    Same call as :func:`fpgaflow.tasks.conversion.onnx_stages.convert_stages` (``fpga_model_path`` is the exported
    ``fpga_stage.keras``, ``cpu_model_path`` its ``cpu_stage.onnx`` beside the other exported files).
    Does not raise on a parity miss; :func:`fpgaflow.tasks.conversion.onnx_stages.ensure_parity` fails the step.
    """
    settings = settings or get_pipeline_settings()
    output_dir = Path(output_dir).resolve()
    exported = load_detector(Path(fpga_model_path).parent)
    if Path(cpu_model_path).resolve() != exported.cpu_stage.resolve():
        raise ConversionError(f"{cpu_model_path} is not the CPU stage exported beside {fpga_model_path}")
    detector, info = exported.detector, exported.detector.info
    images = check_held_out(held_out_images, tuple(detector.model.inputs[0].shape))[: settings.parity_images]

    fpga_onnx = convert_detector_stage(detector.model, output_dir / FPGA_STAGE_FILE, settings.onnx_opset)
    cpu_onnx = output_dir / CPU_STAGE_FILE
    shutil.copyfile(exported.cpu_stage, cpu_onnx)

    keras_heads = detector(images)
    onnx_heads = run_stage(fpga_onnx, {FPGA_INPUT: images})
    keras_loc, keras_logits = flatten_heads(keras_heads, info.feature_maps, info.num_classes)
    onnx_loc, onnx_logits = flatten_heads(onnx_heads, info.feature_maps, info.num_classes)
    reference = detect(keras_loc, keras_logits, info.layout.priors(), exported.detection)
    stages = {
        "fpga": measure_parity(
            np.concatenate([keras_loc, keras_logits], axis=-1), np.concatenate([onnx_loc, onnx_logits], axis=-1)
        ),
        "cpu": detection_parity(reference, run_stage(cpu_onnx, keras_heads)),
        "end_to_end": detection_parity(reference, run_stage(cpu_onnx, onnx_heads)),
    }
    return parity_report(stages, len(images), fpga_onnx, cpu_onnx, output_dir, settings)
