"""The ImageNet classifier's numerics gate: each format's top-1 and top-5 against fp32 on the calibration images.

Without labelled ImageNet data there is no accuracy to measure; a format's top-1 agreement with fp32
stands in for it (fp32 agrees with itself: 1.0), gated by the same per-format limits. The int8
calibration uses the same images. The ImageNet top runs on the CPU unchanged in every format.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.conversion.onnx_stages import FPGA_STAGE_FILE
from fpgaflow.tasks.featurizers.features import load_images
from fpgaflow.tasks.numerics.formats import (
    REFERENCE_FORMAT,
    OnnxFeatureExtractor,
    format_names,
    onnx_classifier,
    prepare_format_file,
)
from fpgaflow.tasks.numerics.gate import gate_formats
from fpgaflow.tasks.numerics.outcome import FormatFiles, NumericsOutcome, decide_serve_format, drop_limits
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings

TOP_K = 5


def top_k_overlap(scores: np.ndarray, reference: np.ndarray, k: int = TOP_K) -> float:
    """Mean share of the reference's top-k classes that are also in the top-k of ``scores``."""
    ours, theirs = np.argsort(scores, axis=1)[:, -k:], np.argsort(reference, axis=1)[:, -k:]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ours, theirs)]))


def evaluate_agreement(
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
    settings = settings or get_pipeline_settings()
    images = load_images(list(splits["path"]), spec)
    calibration = images[: settings.int8_calibration_images]
    classify = onnx_classifier(fp32_cpu_onnx)
    scores: dict[str, np.ndarray] = {}
    files: dict[str, FormatFiles] = {}
    for name in format_names(config.numerics):
        fpga_onnx = prepare_format_file(
            fp32_fpga_onnx, name, Path(output_dir) / name / FPGA_STAGE_FILE, calibration, config.msfp_block_size, settings
        )
        scores[name] = classify(OnnxFeatureExtractor(fpga_onnx)(images))
        files[name] = FormatFiles(fpga_onnx, Path(fp32_cpu_onnx))
    reference = scores[REFERENCE_FORMAT].argmax(axis=1)
    agreement = {name: float(np.mean(value.argmax(axis=1) == reference)) for name, value in scores.items()}
    results = gate_formats(agreement, drop_limits(settings, config.max_accuracy_drop))
    for name, result in results.items():
        overlap = top_k_overlap(scores[name], scores[REFERENCE_FORMAT])
        results[name] = dataclasses.replace(
            result,
            message=f"{result.message} — no labelled ImageNet data: top-1 agreement with fp32 on {len(images)} calibration "
            f"images stands in for accuracy (top-5 overlap with fp32 {overlap:.4f})",
        )
    return decide_serve_format(results, files, images[0], config, settings)
