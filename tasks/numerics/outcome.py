"""What the numerics step hands on: each format's gate result and stage files, and the format to serve."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.featurizers.features import load_images
from fpgaflow.tasks.numerics.formats import FormatGateResult
from fpgaflow.tasks.settings import PipelineSettings


@dataclass
class FormatFiles:
    fpga_onnx: Path
    cpu_onnx: Path


@dataclass
class NumericsOutcome:
    results: dict[str, FormatGateResult]
    serve_format: str
    files: dict[str, FormatFiles] = field(default_factory=dict)

    @property
    def served(self) -> FormatFiles:
        return self.files[self.serve_format]


def allowed_drop(config: PipelineConfig, settings: PipelineSettings) -> float:
    """The largest drop from fp32 a format may show and pass: the config's, else the setting."""
    return settings.max_accuracy_drop if config.max_accuracy_drop is None else config.max_accuracy_drop


def calibration_images(splits: pd.DataFrame, spec: PreprocessSpec, count: int) -> np.ndarray:
    """Up to ``count`` training images spread over the train split, preprocessed."""
    paths = list(splits.loc[splits["split"] == "train", "path"])
    chosen = sorted({int(index) for index in np.linspace(0, len(paths) - 1, num=min(count, len(paths)))})
    return load_images([paths[index] for index in chosen], spec)
