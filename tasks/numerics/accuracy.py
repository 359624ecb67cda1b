"""A classifier's numerics: every requested format evaluated the way the device will run it.

For each format the fp32 FPGA stage is prepared in that format, the splits are featurized by
onnxruntime in it, and the head is retrained on those features (so it fits what the device
produces); its test accuracy against fp32 decides the gate. The serve format's two stage files are
what the package step ships.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.conversion.onnx_stages import CPU_STAGE_FILE, FEATURES, FPGA_STAGE_FILE, PROBABILITIES, convert_keras_stage
from fpgaflow.tasks.featurizers.features import feature_cache_dir, featurize_splits
from fpgaflow.tasks.numerics.formats import (
    REFERENCE_FORMAT,
    OnnxFeatureExtractor,
    format_names,
    onnx_classifier,
    prepare_format_file,
)
from fpgaflow.tasks.numerics.gate import gate_formats
from fpgaflow.tasks.numerics.outcome import FormatFiles, NumericsOutcome, calibration_images, decide_serve_format, drop_limits
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings
from fpgaflow.tasks.training.head import train_head


def _test_accuracy(cpu_onnx: Path, features: np.ndarray, labels: np.ndarray) -> float:
    probabilities = onnx_classifier(cpu_onnx)(features)
    return float(np.mean(np.argmax(probabilities, axis=1) == labels))


def evaluate_numerics(
    fp32_fpga_onnx: Path,
    fp32_cpu_onnx: Path,
    splits: pd.DataFrame,
    class_names: Sequence[str],
    dataset_fingerprint: str,
    spec: PreprocessSpec,
    config: PipelineConfig,
    output_dir: Path,
    settings: PipelineSettings | None = None,
    progress: bool = True,
) -> NumericsOutcome:
    """Accuracy of every format in ``config.numerics`` (fp32 always included), the gates, each format's batch-1
    latency and the serve format."""

    settings = settings or get_pipeline_settings()
    output_dir = Path(output_dir)
    calibration = calibration_images(splits, spec, settings.int8_calibration_images)
    accuracies: dict[str, float] = {}
    files: dict[str, FormatFiles] = {}
    for name in format_names(config.numerics):
        directory = output_dir / name
        fpga_onnx = prepare_format_file(
            fp32_fpga_onnx, name, directory / FPGA_STAGE_FILE, calibration, config.msfp_block_size, settings
        )
        features = featurize_splits(
            splits,
            class_names,
            dataset_fingerprint,
            OnnxFeatureExtractor(fpga_onnx),
            spec,
            config.training.featurize_batch_size,
            feature_cache_dir(settings),
            progress,
        )
        if name == REFERENCE_FORMAT:
            cpu_onnx = Path(fp32_cpu_onnx)
        else:
            head = train_head(
                features["train"].features,
                features["train"].labels,
                features["val"].features,
                features["val"].labels,
                len(class_names),
                config.training,
                config.seed,
            )
            cpu_onnx = convert_keras_stage(head.model, directory / CPU_STAGE_FILE, FEATURES, PROBABILITIES, settings.onnx_opset)
        accuracies[name] = _test_accuracy(cpu_onnx, features["test"].features, features["test"].labels)
        files[name] = FormatFiles(fpga_onnx, cpu_onnx)
    results = gate_formats(accuracies, drop_limits(settings, config.max_accuracy_drop))
    return decide_serve_format(results, files, calibration[0], config, settings)
