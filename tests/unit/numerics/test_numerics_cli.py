"""``fpgaflow numerics``: formats, prepare, compare."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from fpgaflow.flows.cli import main
from fpgaflow.fpga_runtime.graph_format import FORMAT_METADATA_KEY
from tests.fixtures.settings import reload_settings

from .conftest import INPUT_SIZE


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("cli-images")
    rng = np.random.default_rng(9)
    for index in range(6):
        pixels = rng.integers(0, 256, (INPUT_SIZE + 8, INPUT_SIZE + 4, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(directory / f"image{index}.png")
    return directory


def test_formats_lists_bits_per_weight(capsys):
    assert main(["numerics", "formats", "--json", "--block-size", "8"]) == 0
    formats = {item["name"]: item for item in json.loads(capsys.readouterr().out)}
    assert formats["msfp9"]["bits_per_weight"] == 1 + 3 + 5 / 8
    assert formats["int8"]["bits_per_weight"] == 8


def test_prepare_writes_the_graph_in_the_format(featurizer_path, image_dir, tmp_path, capsys, monkeypatch):
    output = tmp_path / "int8.onnx"
    assert (
        main(
            ["numerics", "prepare", str(featurizer_path), "--format", "int8", "-o", str(output), "--calibration", str(image_dir)]
        )
        == 0
    )
    assert {prop.key: prop.value for prop in onnx.load(output).metadata_props}[FORMAT_METADATA_KEY] == "int8"
    assert main(["numerics", "prepare", str(featurizer_path), "--format", "int8", "-o", str(output)]) == 2
    assert "pass --calibration IMAGE_DIR" in capsys.readouterr().err
    assert main(["numerics", "prepare", str(featurizer_path), "--format", "msfp9", "-o", str(output)]) == 0
    capsys.readouterr()
    monkeypatch.setenv("FPGAFLOW_MSFP_BIAS_CORRECTION", "true")
    reload_settings()
    try:
        assert main(["numerics", "prepare", str(featurizer_path), "--format", "msfp9", "-o", str(output)]) == 2
        assert "msfp9 calibrates on training images: pass --calibration IMAGE_DIR" in capsys.readouterr().err
    finally:
        monkeypatch.delenv("FPGAFLOW_MSFP_BIAS_CORRECTION")
        reload_settings()
    assert main(["numerics", "prepare", str(featurizer_path), "--format", "fp8", "-o", str(output)]) == 2
    assert "unknown numeric format 'fp8'" in capsys.readouterr().err


def test_compare_reports_each_format_against_fp32(featurizer_path, image_dir, capsys):
    assert (
        main(
            [
                "numerics",
                "compare",
                str(featurizer_path),
                "--images",
                str(image_dir),
                "--formats",
                "msfp9",
                "--repeats",
                "1",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 6
    assert set(report["formats"]) == {"fp32", "msfp9"}
    assert report["formats"]["fp32"]["features_max_abs_diff"] == 0
    assert report["formats"]["msfp9"]["features_max_abs_diff"] > 0
