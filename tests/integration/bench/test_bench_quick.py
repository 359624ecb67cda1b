"""`fpgaflow bench --quick` end to end: a real ResNet-50 (32 px) in every format on a real local cluster."""

from __future__ import annotations

import json

import pytest

from fpgaflow.benchmarks.report import CONCURRENCY_CHART, LATENCY_CHART
from fpgaflow.flows.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_quick_bench_writes_results_markdown_and_charts(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--skip-pipeline", "--out", str(out)]) == 0

    results = json.loads((out / "results.json").read_text())
    configurations = results["configurations"]
    assert set(configurations) == {
        "tensorflow in-process",
        "onnxruntime fp32 in-process",
        "onnxruntime int8 in-process",
        "gateway fp32",
        "gateway int8",
        "gateway msfp9",
        "gateway msfp8",
    }
    assert [level["concurrency"] for level in configurations["gateway int8"]] == results["plan"]["levels"]
    for levels in configurations.values():
        for level in levels:
            assert level["requests"] > 0 and level["errors"] == 0
            assert 0 < level["p50_ms"] <= level["p90_ms"] <= level["p99_ms"]
    assert results["deployment"]["fp32"]["devices"] > 1  # 94 MB of fp32 weights: split across stratix10 devices
    assert results["deployment"]["int8"]["devices"] == 1
    assert results["machine_limit"]["int8_floor_ms"] > 0 and results["machine_limit"]["fp32_floor_ms"] > 0
    assert set(results["memory_mb"]) == {"node fp32", "node int8", "node msfp9", "node msfp8", "gateway"}
    assert all(row["modelled_device_ms"] > 0 and row["measured_emulation_ms"] > 0 for row in results["fpga_emulation"].values())
    assert results["pipeline"] is None
    targets = results["targets"]
    assert {target["name"] for target in targets} >= {
        "serving overhead",
        "ahead of TensorFlow",
        "near the limit",
        "gateway memory",
        "msfp9 emulation speed",
        "msfp8 emulation speed",
    }
    emulation = results["fpga_emulation"]
    assert emulation["fp32"]["vs_fp32"] == 1.0 and emulation["msfp9"]["vs_fp32"] > 0
    assert all(set(target) >= {"name", "value", "limit", "pass"} and isinstance(target["pass"], bool) for target in targets)

    markdown = (out / "results.md").read_text()
    assert "| gateway int8 | 1 |" in markdown and "machine limit int8 (floor)" in markdown
    for chart in (LATENCY_CHART, CONCURRENCY_CHART):
        assert (out / chart).read_bytes()[:8] == PNG_SIGNATURE
    printed = capsys.readouterr().out
    assert printed.count("PASS") + printed.count("FAIL") == len(targets)
