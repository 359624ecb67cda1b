"""The numerics stage's Prefect task: every requested format measured and gated for a model of any kind."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
from fpgaflow.tasks.artifacts import publish_table
from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.numerics.gate import gate_table
from fpgaflow.tasks.numerics.outcome import NumericsOutcome

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
