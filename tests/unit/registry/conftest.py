"""Tiny exported stages, held-out inputs and a throwaway conversion home, shared by the registry tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
from fpgaflow.tasks.settings import PipelineSettings
from tests.fixtures.keras_stages import INPUT_SIZE, held_out_like, save_stages


@pytest.fixture(scope="session")
def stage_files(tmp_path_factory) -> tuple[Path, Path]:
    return save_stages(tmp_path_factory.mktemp("keras-stages"), seed=1)


@pytest.fixture(scope="session")
def held_out_images() -> np.ndarray:
    return held_out_like(12)


@pytest.fixture(scope="session")
def preprocess_spec() -> PreprocessSpec:
    return PreprocessSpec.for_input_size(INPUT_SIZE)


@pytest.fixture(scope="session")
def conversion_settings(tmp_path_factory) -> PipelineSettings:
    return PipelineSettings(home=tmp_path_factory.mktemp("conversion-home"))


@pytest.fixture(scope="session")
def converted(stage_files, held_out_images, conversion_settings, tmp_path_factory):
    """The conversion report of the tiny stages (both ONNX files beside it)."""
    from fpgaflow.tasks.conversion.onnx_stages import convert_stages

    fpga_path, cpu_path = stage_files
    return convert_stages(fpga_path, cpu_path, held_out_images, tmp_path_factory.mktemp("onnx"), conversion_settings)
