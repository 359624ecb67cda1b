"""The window arithmetic and the target verdicts (no timing asserted)."""

from __future__ import annotations

import pytest

from fpgaflow.benchmarks.harness import Target, judge_targets
from fpgaflow.benchmarks.machine import PeakCompute
from fpgaflow.benchmarks.measure import WindowPlan, measure_interleaved, measure_level, windows_agree


def test_windows_agree_within_tolerance_of_their_mean():
    assert windows_agree([100.0, 105.0, 95.0], 0.10)
    assert not windows_agree([100.0, 100.0, 130.0], 0.10)
    assert not windows_agree([], 0.10)
    assert not windows_agree([0.0, 0.0, 0.0], 0.10)


def test_window_plan_refuses_impossible_plans():
    with pytest.raises(ValueError, match="stable_windows"):
        WindowPlan(stable_windows=5, max_windows=3)
    with pytest.raises(ValueError, match="window must be positive"):
        WindowPlan(window_seconds=0)


def test_measure_level_counts_requests_and_orders_percentiles():
    calls = []
    result = measure_level(lambda: calls.append(1), 2, WindowPlan(warmup_seconds=0.0, window_seconds=0.05, max_windows=4))
    assert result.concurrency == 2
    assert 0 < result.requests <= len(calls)
    assert result.p50_ms <= result.p90_ms <= result.p99_ms
    assert result.errors == 0
    assert 3 <= result.windows <= 4


def test_measure_level_reports_a_request_that_always_fails():
    def broken():
        raise ConnectionError("gateway gone")

    with pytest.raises(RuntimeError, match="ConnectionError: gateway gone"):
        measure_level(broken, 1, WindowPlan(warmup_seconds=0.0, window_seconds=0.01, max_windows=3))


def test_floor_is_two_operations_per_mac_at_the_peak_rate():
    peak = PeakCompute(
        fp32_gflops=100.0, int8_gops=400.0, fp32_source="numpy matmul", int8_source="MatMulInteger", matrix_size=512
    )
    assert peak.floor_ms(4_000_000_000, integer=False) == pytest.approx(80.0)
    assert peak.floor_ms(4_000_000_000, integer=True) == pytest.approx(20.0)


def _level(concurrency, p50, p99, throughput):
    return {"concurrency": concurrency, "p50_ms": p50, "p90_ms": p50, "p99_ms": p99, "throughput_per_second": throughput}


def test_targets_are_ratios_of_the_measured_numbers():
    results = {
        "configurations": {
            "gateway int8": [_level(1, 50.0, 114.0, 22), _level(8, 300.0, 400.0, 20)],
        },
        "side_by_side": {
            "tensorflow in-process": {"p50_ms": 200.0},
            "onnxruntime int8 in-process": {"p50_ms": 40.0},
            "gateway fp32": {"p50_ms": 80.0},
            "gateway int8": {"p50_ms": 44.0},
            "gateway msfp9": {"p50_ms": 160.0},
        },
        "machine_limit": {"int8_floor_ms": 20.0},
        "memory_mb": {"node int8": 300.0, "gateway": 250.0},
        "fpga_emulation": {"fp32": {"vs_fp32": 1.0}, "msfp9": {"vs_fp32": 1.25}, "msfp8": {"vs_fp32": 1.5}},
    }
    verdicts = {target.name: target for target in judge_targets(results)}
    assert verdicts["serving overhead"].value == pytest.approx(1.1) and verdicts["serving overhead"].passed
    assert verdicts["ahead of TensorFlow"].value == pytest.approx(0.22) and verdicts["ahead of TensorFlow"].passed
    assert verdicts["near the limit"].value == pytest.approx(2.2)
    assert verdicts["throughput under load"].value == pytest.approx(20 / 22) and not verdicts["throughput under load"].passed
    assert verdicts["tail at concurrency 1"].value == pytest.approx(114 / 50) and not verdicts["tail at concurrency 1"].passed
    assert verdicts["msfp9 emulation usable"].value == pytest.approx(2.0)
    assert verdicts["msfp9 emulation speed"].value == 1.25 and verdicts["msfp9 emulation speed"].passed
    assert verdicts["msfp8 emulation speed"].value == 1.5 and not verdicts["msfp8 emulation speed"].passed
    assert verdicts["int8 node memory"].passed and not verdicts["gateway memory"].passed
    assert Target("x", 1.0, 1.0, ">=", "").to_dict()["pass"] is True


def test_interleaved_rounds_run_every_configuration_once_per_round():
    calls = []
    rows = measure_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 4)
    assert calls.count("a") == calls.count("b") == 5  # one priming call each, then one per round
    assert calls[2:4] == ["a", "b"] and calls[4:6] == ["b", "a"]  # order rotated each round
    assert set(rows) == {"a", "b"} and all(row["rounds"] == 4 and row["p50_ms"] <= row["p99_ms"] for row in rows.values())
