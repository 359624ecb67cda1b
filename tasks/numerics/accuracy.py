"""A classifier's numerics: every requested format evaluated the way the device will run it.

The fp32 FPGA stage is prepared in every format first; then each split is decoded once, in bounded
batches, and every format's graph runs on each batch (the fp32 graph is the one training featurized
through, so its features come from the cache). The head is retrained on each format's features (so
it fits what the device produces); its test accuracy against fp32 decides the gate. The serve
format's two stage files are what the package step ships.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.conversion.cache import onnx_cache_dir
from fpgaflow.tasks.conversion.onnx_stages import CPU_STAGE_FILE, FEATURES, FPGA_STAGE_FILE, PROBABILITIES, convert_keras_stage
from fpgaflow.tasks.featurizers.features import FeatureSet, feature_cache_dir, featurize_splits_with
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
    names = format_names(config.numerics)
    fpga_files = prepare_formats(fp32_fpga_onnx, names, splits, spec, config, output_dir, settings)
    feature_sets = featurize_splits_with(
        splits,
        class_names,
        {name: OnnxFeatureExtractor(path) for name, path in fpga_files.items()},
        spec,
        config.training.featurize_batch_size,
        feature_cache_dir(settings),
        progress,
    )
    accuracies: dict[str, float] = {}
    files: dict[str, FormatFiles] = {}
    for name in names:
        features = feature_sets.pop(name)
        if name == REFERENCE_FORMAT:
            cpu_onnx = Path(fp32_cpu_onnx)
        else:
            cpu_onnx = retrained_head(features, len(class_names), config, output_dir / name / CPU_STAGE_FILE, settings)
        accuracies[name] = _test_accuracy(cpu_onnx, features["test"].features, features["test"].labels)
        files[name] = FormatFiles(fpga_files[name], cpu_onnx)
    results = gate_formats(accuracies, drop_limits(settings, config.max_accuracy_drop))
    return decide_serve_format(results, files, calibration_images(splits, spec, 1)[0], config, settings)


def prepare_formats(
    fp32_fpga_onnx: Path,
    names: Sequence[str],
    splits: pd.DataFrame,
    spec: PreprocessSpec,
    config: PipelineConfig,
    output_dir: Path,
    settings: PipelineSettings,
) -> dict[str, Path]:
    """The FPGA stage prepared in each format, written to ``output_dir/<format>``; the calibration images live only here."""
    calibration = calibration_images(splits, spec, settings.int8_calibration_images)
    return {
        name: prepare_format_file(
            fp32_fpga_onnx, name, output_dir / name / FPGA_STAGE_FILE, calibration, config.msfp_block_size, settings
        )
        for name in names
    }


def retrained_head(
    features: FeatureSet, num_classes: int, config: PipelineConfig, cpu_onnx: Path, settings: PipelineSettings
) -> Path:
    """The head trained on one format's features, converted to ONNX at ``cpu_onnx``."""
    head = train_head(
        features["train"].features,
        features["train"].labels,
        features["val"].features,
        features["val"].labels,
        num_classes,
        config.training,
        config.seed,
    )
    return convert_keras_stage(head.model, cpu_onnx, FEATURES, PROBABILITIES, settings.onnx_opset, onnx_cache_dir(settings))
