"""A detector's numerics: its FPGA stage prepared in each numeric format, gated on mAP@0.5.

Shaped like :mod:`fpgaflow.tasks.numerics.accuracy` (same call, same :class:`~fpgaflow.tasks.numerics.outcome.NumericsOutcome`).
The classifier's gate compares top-1 accuracy with fp32; a detector has no top-1, so its gate
compares test mAP@0.5 with fp32's, with the same allowed drops (``max_accuracy_drop``, fractions:
0.01 = one mAP point), and the results' ``accuracy`` holds the mAP. Every format is prepared by
:func:`fpgaflow.tasks.numerics.formats.prepare_format_file` (int8 calibrated on training images) and run by
onnxruntime with the CPU stage on the test images, each format in one pass with one session per stage
and the images read batch by batch. Unlike a classifier's head, the detector's heads
are inside the FPGA stage, so nothing is retrained per format: the gate measures exactly what the
device would serve, and every format shares the one CPU stage (decoding + NMS).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from fpgaflow.fpga_runtime.ort import make_session
from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.conversion.onnx_stages import FPGA_STAGE_FILE
from fpgaflow.tasks.detection.average_precision import ImageDetections, detections_of, mean_average_precision
from fpgaflow.tasks.detection.conversion import FPGA_INPUT
from fpgaflow.tasks.detection.ground_truth import load_ground_truth
from fpgaflow.tasks.detection.training import PREDICT_BATCH_SIZE
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.featurizers.features import load_images
from fpgaflow.tasks.numerics.formats import format_names, prepare_format_file
from fpgaflow.tasks.numerics.gate import FormatGateResult, gate_formats
from fpgaflow.tasks.numerics.outcome import FormatFiles, NumericsOutcome, calibration_images, decide_serve_format, drop_limits
from fpgaflow.tasks.progress import Progress
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings


def served_detections(
    fpga_onnx: Path, cpu_onnx: Path, paths: Sequence[str], spec: PreprocessSpec, description: str = "detect"
) -> list[ImageDetections]:
    """Detections of image files through both ONNX stages, as a node computes them: one session per stage, the
    images read batch by batch (memory bounded by the batch, not the split)."""
    fpga, cpu = make_session(Path(fpga_onnx)), make_session(Path(cpu_onnx))
    fpga_outputs, cpu_outputs = [output.name for output in fpga.get_outputs()], [output.name for output in cpu.get_outputs()]
    found = []
    with Progress(description, total=len(paths), unit="img") as progress:
        for start in range(0, len(paths), PREDICT_BATCH_SIZE):
            images = load_images(paths[start : start + PREDICT_BATCH_SIZE], spec)
            heads = dict(zip(fpga_outputs, fpga.run(fpga_outputs, {FPGA_INPUT: images})))
            found += detections_of(dict(zip(cpu_outputs, cpu.run(cpu_outputs, heads))))
            progress.update(len(images))
    return found


def gate_detector_formats(maps: dict[str, float], max_drop: float | Mapping[str, float]) -> dict[str, FormatGateResult]:
    """:func:`fpgaflow.tasks.numerics.gate.gate_formats` on mAP values, its messages speaking of mAP@0.5."""
    results = gate_formats(maps, max_drop)
    return {
        name: dataclasses.replace(result, message=result.message.replace("top-1", "mAP@0.5")) for name, result in results.items()
    }


def evaluate_detector_numerics(
    fp32_fpga_onnx: Path,
    fp32_cpu_onnx: Path,
    splits: pd.DataFrame,
    class_names: Sequence[str],
    dataset_fingerprint: str,
    spec: PreprocessSpec,
    config: PipelineConfig,
    output_dir: Path,
    settings: PipelineSettings | None = None,
) -> NumericsOutcome:
    """Test mAP@0.5 of every format in ``config.numerics`` (fp32 always included), the gates and the serve format.

    ``dataset_fingerprint`` is accepted for the same call shape as the classifier's step.
    """
    settings = settings or get_pipeline_settings()
    test = splits[splits["split"] == "test"]
    if test.empty:
        raise PipelineStepError("the split manifest has no test images to measure the numeric formats on")
    truths, paths = load_ground_truth(test, class_names), list(test["path"])
    calibration = calibration_images(splits, spec, settings.int8_calibration_images)
    maps: dict[str, float] = {}
    files: dict[str, FormatFiles] = {}
    for name in format_names(config.numerics):
        fpga_onnx = prepare_format_file(
            fp32_fpga_onnx, name, Path(output_dir) / name / FPGA_STAGE_FILE, calibration, config.msfp_block_size, settings
        )
        found = served_detections(fpga_onnx, fp32_cpu_onnx, paths, spec, f"{name} test mAP")
        maps[name] = mean_average_precision(found, truths, class_names).map50
        files[name] = FormatFiles(fpga_onnx, Path(fp32_cpu_onnx))
    results = gate_detector_formats(maps, drop_limits(settings, config.max_accuracy_drop))
    return decide_serve_format(results, files, calibration[0], config, settings)
