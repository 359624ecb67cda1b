"""The numerics stage's Prefect tasks: every requested format measured for a model of any kind, and the pieces on their own."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
from fpgaflow.tasks.artifacts import publish_table
from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.numerics.formats import prepare_format_file
from fpgaflow.tasks.numerics.gate import FormatGateResult, choose_serve_format, gate_formats, gate_table
from fpgaflow.tasks.numerics.outcome import NumericsOutcome, drop_limits
from fpgaflow.tasks.settings import get_pipeline_settings

if TYPE_CHECKING:
    from fpgaflow.tasks.kinds import ModelKind


@task(name="numerics", cache_policy=NO_CACHE)
def evaluate_numerics_task(
    kind: ModelKind,
    fp32_fpga_onnx: Path,
    fp32_cpu_onnx: Path,
    splits: pd.DataFrame,
    class_names: Sequence[str],
    dataset_fingerprint: str,
    spec: PreprocessSpec,
    config: PipelineConfig,
    output_dir: Path,
) -> NumericsOutcome:
    outcome = kind.evaluate_numerics(
        fp32_fpga_onnx, fp32_cpu_onnx, splits, class_names, dataset_fingerprint, spec, config, output_dir
    )
    get_run_logger().info("serving %s", outcome.serve_format_reason)
    publish_table(
        "numerics",
        gate_table(outcome.results, outcome.latencies),
        f"{kind.numerics_measure} per numeric format, batch-1 latency modelled on {outcome.device_profile} and "
        f"measured in emulation; serving {outcome.serve_format_reason}",
    )
    return outcome


prepare_format_task = task(name="prepare-numeric-format", cache_policy=NO_CACHE)(prepare_format_file)


@task(name="numerics-gate", cache_policy=NO_CACHE)
def gate_formats_task(
    accuracies: Mapping[str, float], max_drop: float | Mapping[str, float] | None = None
) -> dict[str, FormatGateResult]:
    results = gate_formats(accuracies, drop_limits(get_pipeline_settings(), max_drop))
    publish_table("numerics-gate", gate_table(results), "Test top-1 accuracy per numeric format and its delta to fp32")
    return results


choose_serve_format_task = task(name="choose-serve-format", cache_policy=NO_CACHE)(choose_serve_format)
