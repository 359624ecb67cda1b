"""The operations' Prefect tasks: retraining (config, scores, decision) and monitoring (hold-out score, degradation event).

Artifacts: ``retrain-decision`` (both versions' scores by the kind's metric, and why) and ``monitor-quality``
(the holdout score per class)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from fpgaflow.tasks.artifacts import publish_markdown, publish_table
from fpgaflow.tasks.kinds import kind_serving
from fpgaflow.tasks.operations.monitoring import MonitorResult, emit_model_degraded, monitor_endpoint, result_description
from fpgaflow.tasks.operations.retraining import (
    RetrainDecision,
    VersionScore,
    decide,
    decision_markdown,
    retrain_config,
    score_version,
)
from fpgaflow.tasks.settings import get_pipeline_settings

retrain_config_task = task(name="retrain-config", cache_policy=NO_CACHE)(retrain_config)


score_version_task = task(name="score-version", cache_policy=NO_CACHE)(score_version)


@task(name="retrain-decision", cache_policy=NO_CACHE)
def decide_task(candidate: VersionScore, champion: VersionScore | None, candidate_gates_passed: bool) -> RetrainDecision:
    decision = decide(candidate, champion, candidate_gates_passed, get_pipeline_settings().retrain_min_improvement)
    publish_markdown("retrain-decision", decision_markdown(decision), decision.reason[:500])
    return decision


@task(name="score-holdout", cache_policy=NO_CACHE)
def monitor_endpoint_task(
    endpoint: str,
    data_dir: Path,
    model_name: str = "",
    threshold: float | None = None,
    access_token: str | None = None,
    tls: dict[str, str] | None = None,
) -> MonitorResult:
    result = monitor_endpoint(
        endpoint,
        data_dir,
        model_name,
        threshold,
        access_token,
        tls=tls,
        measure_of=lambda task: kind_serving(task).quality,
    )
    publish_table("monitor-quality", result.report.table(), result_description(result))
    return result


emit_model_degraded_task = task(name="emit-model-degraded", cache_policy=NO_CACHE)(emit_model_degraded)
