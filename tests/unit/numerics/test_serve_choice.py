"""The gate with per-format limits, each format's batch-1 latency, and the serve format chosen with its reason."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.numerics.formats import prepare_format_file
from fpgaflow.tasks.numerics.gate import FormatGateResult, NumericsGateError, choose_serve_format, gate_formats, gate_table
from fpgaflow.tasks.numerics.latency import FormatLatency, format_latencies
from fpgaflow.tasks.numerics.outcome import FormatFiles, decide_serve_format, drop_limits
from fpgaflow.tasks.settings import PipelineSettings

# What the stratix10 model says for ResNet-50 (msfp8 several times faster than int8), and a CPU where int8 is fastest.
LATENCIES = {
    "fp32": FormatLatency(modelled_ms=4.0, measured_ms=20.0),
    "int8": FormatLatency(modelled_ms=2.0, measured_ms=10.0),
    "msfp8": FormatLatency(modelled_ms=0.25, measured_ms=38.0),
    "msfp9": FormatLatency(modelled_ms=0.5, measured_ms=41.0),
}
DEFAULT_LIMITS = {"fp32": 0.01, "int8": 0.01, "msfp9": 0.01, "msfp8": 0.02}


def gated(**accuracies: float) -> dict[str, FormatGateResult]:
    return gate_formats({"fp32": 0.9, **accuracies}, DEFAULT_LIMITS)


def test_each_format_is_gated_on_its_own_limit():
    results = gated(int8=0.895, msfp9=0.885, msfp8=0.885)
    assert {name: result.passed for name, result in results.items()} == {
        "fp32": True,
        "int8": True,
        "msfp9": False,
        "msfp8": True,
    }
    assert results["msfp9"].max_drop == 0.01 and results["msfp8"].max_drop == 0.02
    assert "msfp9 fails the accuracy gate" in results["msfp9"].message
    assert "1.50 points below fp32 0.9000; at most 1.00 points" in results["msfp9"].message
    assert "within the allowed drop of 2.00 points" in results["msfp8"].message
    assert results["fp32"].summary() == {"accuracy": 0.9, "delta": 0.0, "passed": True}


def test_one_limit_for_every_format_still_works():
    results = gate_formats({"fp32": 0.90, "int8": 0.895, "msfp9": 0.89, "msfp8": 0.85}, max_drop=0.01)
    assert [results[name].passed for name in ("fp32", "int8", "msfp9", "msfp8")] == [True, True, True, False]
    assert results["msfp8"].delta == pytest.approx(-0.05)


def test_gate_refuses_bad_input():
    with pytest.raises(PipelineStepError, match="evaluate fp32 too"):
        gate_formats({"int8": 0.9}, max_drop=0.01)
    with pytest.raises(PipelineStepError, match="accuracy of int8 must be a fraction"):
        gate_formats({"fp32": 0.9, "int8": 90.0}, max_drop=0.01)
    with pytest.raises(PipelineStepError, match="unknown numeric format 'fp16'"):
        gate_formats({"fp32": 0.9, "fp16": 0.9}, max_drop=0.01)
    with pytest.raises(PipelineStepError, match="max accuracy drop of fp32"):
        gate_formats({"fp32": 0.9}, max_drop=-0.1)
    with pytest.raises(PipelineStepError, match="no allowed accuracy drop is set for int8"):
        gate_formats({"fp32": 0.9, "int8": 0.9}, {"fp32": 0.01})


def test_limits_come_from_the_config_then_the_settings(tmp_path):
    settings = PipelineSettings(home=tmp_path)
    assert drop_limits(settings) == DEFAULT_LIMITS
    assert drop_limits(settings, 1.0) == dict.fromkeys(DEFAULT_LIMITS, 1.0)
    assert drop_limits(settings, {"int8": 0.03}) == {**DEFAULT_LIMITS, "int8": 0.03}
    assert drop_limits(PipelineSettings(home=tmp_path, max_accuracy_drop=0.05))["msfp8"] == 0.02
    with pytest.raises(ValidationError, match=r"unknown numeric formats \['fp7'\]"):
        PipelineSettings(home=tmp_path, max_accuracy_drop_by_format={"fp7": 0.1})


def test_config_takes_one_limit_or_one_per_known_format(tmp_path):
    assert PipelineConfig(data_dir=tmp_path, max_accuracy_drop={"msfp8": 0.03}).max_accuracy_drop == {"msfp8": 0.03}
    assert PipelineConfig(data_dir=tmp_path).numerics == ("fp32", "int8", "msfp8", "msfp9")
    with pytest.raises(ValidationError, match=r"unknown numeric formats \['msfp7'\]"):
        PipelineConfig(data_dir=tmp_path, max_accuracy_drop={"msfp7": 0.03})
    with pytest.raises(ValidationError, match="fraction between 0 and 1"):
        PipelineConfig(data_dir=tmp_path, max_accuracy_drop=2)


def test_auto_serves_the_lowest_modelled_latency_on_the_device_and_says_why():
    choice = choose_serve_format(gated(int8=0.9, msfp8=0.895, msfp9=0.9), LATENCIES, "auto", "stratix10")
    assert choice.format == "msfp8"
    assert choice.reason.startswith("msfp8: lowest modelled latency on stratix10 among the formats that passed their gate; ")
    assert "(modelled 0.250 ms, measured 38.0 ms, accuracy delta -0.50 points)" in choice.reason
    assert "passed too: fp32 (modelled 4.000 ms" in choice.reason and "int8 (modelled 2.000 ms" in choice.reason


def test_a_format_that_failed_is_never_served_and_the_reason_names_it():
    choice = choose_serve_format(gated(int8=0.9, msfp8=0.85, msfp9=0.9), LATENCIES, "auto", "stratix10")
    assert choice.format == "msfp9"
    assert "failed: msfp8 (5.00 points below fp32, over its limit of 2 points)" in choice.reason
    only_fp32 = choose_serve_format(gated(int8=0.5, msfp8=0.5, msfp9=0.5), LATENCIES, "auto", "stratix10")
    assert only_fp32.format == "fp32"


def test_the_cpu_profile_serves_what_this_cpu_runs_fastest():
    choice = choose_serve_format(gated(int8=0.9, msfp8=0.9, msfp9=0.9), LATENCIES, "auto", "cpu")
    assert choice.format == "int8"
    assert choice.reason.startswith("int8: fastest measured on this CPU at batch 1")


def test_formats_the_device_cannot_run_are_not_chosen_for_it():
    latencies = {**LATENCIES, "msfp8": FormatLatency(None, 38.0), "msfp9": FormatLatency(None, 41.0)}
    choice = choose_serve_format(gated(int8=0.9, msfp8=0.9, msfp9=0.9), latencies, "auto", "arria10-without-msfp")
    assert choice.format == "int8" and "msfp8 (not modelled, measured 38.0 ms" in choice.reason


def test_an_explicit_serve_format_is_served_if_it_passed():
    results = gated(int8=0.5, msfp9=0.9)
    choice = choose_serve_format(results, LATENCIES, "msfp9", "stratix10")
    assert choice.format == "msfp9" and choice.reason.startswith("msfp9: as configured (serve_format: msfp9); (modelled")
    with pytest.raises(NumericsGateError, match="cannot serve int8: int8 fails the accuracy gate"):
        choose_serve_format(results, LATENCIES, "int8", "stratix10")
    with pytest.raises(NumericsGateError, match="serve format 'msfp8' was not evaluated"):
        choose_serve_format(results, LATENCIES, "msfp8", "stratix10")
    with pytest.raises(PipelineStepError, match=r"needs the latency of every format that passed; none for \['msfp9'\]"):
        choose_serve_format(results, {"fp32": LATENCIES["fp32"]}, "auto", "stratix10")


def test_gate_table_rows_carry_the_latencies():
    rows = gate_table(gated(int8=0.9), LATENCIES)
    assert [row["format"] for row in rows] == ["fp32", "int8"]
    assert rows[1] | {"message": ""} == {
        "format": "int8",
        "accuracy": 0.9,
        "delta": 0.0,
        "max_drop": 0.01,
        "passed": True,
        "modelled_ms": 2.0,
        "measured_ms": 10.0,
        "message": "",
    }


@pytest.fixture(scope="module")
def prepared_files(featurizer_path, images, tmp_path_factory) -> dict[str, FormatFiles]:
    directory = tmp_path_factory.mktemp("formats")
    return {
        name: FormatFiles(prepare_format_file(featurizer_path, name, directory / f"{name}.onnx", images[:8]), featurizer_path)
        for name in ("fp32", "int8", "msfp8")
    }


def test_latencies_are_modelled_on_the_profile_and_measured_here(prepared_files, images, tmp_path):
    fpga = {name: files.fpga_onnx for name, files in prepared_files.items()}
    latencies = format_latencies(fpga, images[0], "stratix10", repeats=2)
    assert set(latencies) == {"fp32", "int8", "msfp8"}
    assert all(latency.measured_ms > 0 for latency in latencies.values())
    assert latencies["msfp8"].modelled_ms < latencies["int8"].modelled_ms < latencies["fp32"].modelled_ms
    assert all(latency.modelled_ms is None for latency in format_latencies(fpga, images[0], "cpu", repeats=1).values())
    profile = tmp_path / "no-msfp.yaml"
    profile.write_text(
        "name: no-msfp\ndescription: d\nonchip_memory_bytes: 100000000\nmac_units: {fp32: 10, int8: 20}\n"
        "vector_lanes: 4\nclock_hz: 1000000\nhost_link_bytes_per_second: 1000000\nefficiency: 0.5\n"
        "supported_formats: [fp32, int8]\nsource: made up\n"
    )
    narrow = format_latencies(fpga, images[0], str(profile), repeats=1)
    assert narrow["msfp8"].modelled_ms is None and narrow["int8"].modelled_ms is not None
    with pytest.raises(PipelineStepError, match="cannot model the latency of fp32 on nowhere"):
        format_latencies(fpga, images[0], "nowhere", repeats=1)


def test_the_outcome_summary_holds_the_proof_keys(prepared_files, images, tmp_path):
    config = PipelineConfig(data_dir=tmp_path, device_profile="stratix10")
    settings = PipelineSettings(home=tmp_path, numerics_latency_repeats=1)
    results = gated(int8=0.9, msfp8=0.895)
    outcome = decide_serve_format(results, prepared_files, images[0], config, settings)
    assert outcome.serve_format == "msfp8" and outcome.served == prepared_files["msfp8"]
    summary = outcome.summary()
    assert set(summary) == {"numerics", "serve_format", "serve_format_reason", "device_profile"}
    assert set(summary["numerics"]) == {"fp32", "int8", "msfp8"}
    for values in summary["numerics"].values():
        assert set(values) == {"accuracy", "delta", "passed", "modelled_ms", "measured_ms"}
        assert values["modelled_ms"] > 0 and values["measured_ms"] > 0
    assert summary["serve_format_reason"] == outcome.serve_format_reason
    assert summary["serve_format_reason"].startswith("msfp8: lowest modelled latency on stratix10")


def test_fpgaflow_run_takes_the_device_profile_the_choice_is_for(tmp_path):
    from fpgaflow.flows.cli import build_parser
    from fpgaflow.flows.cli.run import OVERRIDES
    from fpgaflow.tasks.config import load_config

    args = build_parser().parse_args(["run", str(tmp_path), "--device-profile", "cpu", "--serve-format", "auto"])
    config = load_config(None, data_dir=args.data_dir, **{key: getattr(args, key) for key in OVERRIDES})
    assert (config.device_profile, config.serve_format) == ("cpu", "auto")
