"""`fpgaflow estimate SERVICE_DIR --device PROFILE`, run in-process."""

from __future__ import annotations

import json

import pytest

from fpgaflow.flows.cli import main
from tests.fixtures.settings import reload_settings


@pytest.fixture
def service_dir(graphs, tmp_path):
    return graphs.write_service(tmp_path / "service", graphs.conv_relu_pool(channels=8, size=16))


def test_table_and_totals(service_dir, capsys):
    assert main(["estimate", str(service_dir), "--device", "arria10"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("service tiny 1 on device arria10 (300 MHz")
    assert "stage featurizer (featurizer.onnx) in fp32: 1,518 MACs per cycle" in out
    header = next(line for line in lines if line.startswith("layer"))
    assert header.split()[:3] == ["layer", "op", "MACs"]
    conv_row = next(line for line in lines if line.startswith("conv "))
    assert conv_row.split()[1:6] == ["Conv", "55,296", "0", "224", "896"]
    assert any(line.startswith("relu ") and "Relu" in line for line in lines)
    assert "total MACs: 55,296" in out
    assert "weight memory: 896 of 6,945,280 bytes on chip (0.0%): fits" in out
    assert "modelled latency: " in out
    assert "measured wall time (batch 1, emulated device on this CPU): " in out
    assert "head" not in out.split("stage featurizer", 1)[1]


def test_json_output(service_dir, capsys):
    assert main(["estimate", str(service_dir), "--device", "stratix10", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["service"], data["device"]) == ("tiny", "stratix10")
    (stage,) = data["stages"]
    assert (stage["stage"], stage["numeric_format"]) == ("featurizer", "fp32")
    assert [row["op_type"] for row in stage["layers"]] == ["Conv", "Relu", "GlobalAveragePool"]
    assert stage["totals"]["macs"] == 55_296 and stage["totals"]["fits"] is True
    assert stage["measured_seconds"] > 0
    assert stage["totals"]["modelled_seconds"] > 0


def test_a_stage_that_does_not_fit_is_reported_and_exits_1(service_dir, tiny_profile_path, capsys):
    assert main(["estimate", str(service_dir), "--device", str(tiny_profile_path)]) == 1
    out = capsys.readouterr().out
    assert "weight memory: 896 of 500 bytes on chip (179.2%): DOES NOT FIT" in out
    assert "measured wall time: not run" in out


def test_narrow_format_service_fits_the_tiny_device(graphs, tmp_path, tiny_profile_path, capsys):
    directory = graphs.write_service(tmp_path / "narrow", graphs.conv_relu_pool(), numeric_format="msfp8")
    assert main(["estimate", str(directory), "--device", str(tiny_profile_path), "--json"]) == 0
    (stage,) = json.loads(capsys.readouterr().out)["stages"]
    assert stage["totals"]["weight_bytes"] == 158


def test_default_device_comes_from_settings(service_dir, monkeypatch, capsys):

    monkeypatch.setenv("FPGAFLOW_DEVICE_PROFILE", "arria10")
    reload_settings()
    assert main(["estimate", str(service_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["device"] == "arria10"


def test_unknown_profile_is_a_clean_error(service_dir, capsys):
    assert main(["estimate", str(service_dir), "--device", "virtex7"]) == 2
    assert (
        "fpgaflow estimate: error: unknown device profile 'virtex7': known profiles are arria10, stratix10"
        in capsys.readouterr().err
    )


def test_not_a_service_directory_is_a_clean_error(tmp_path, capsys):
    assert main(["estimate", str(tmp_path), "--device", "arria10"]) == 2
    assert "service.json is missing" in capsys.readouterr().err
