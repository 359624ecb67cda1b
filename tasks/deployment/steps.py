"""The deployment stage's Prefect tasks: deploy a service, fit it to a device (split), smoke-test a deployed service."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import task
from prefect.cache_policies import NO_CACHE

from fpgaflow.tasks.artifacts import publish_markdown, publish_table
from fpgaflow.tasks.charts import LATENCY_HISTOGRAM_FILE, plot_latency_histogram
from fpgaflow.tasks.deployment.deploy import deploy
from fpgaflow.tasks.deployment.smoke import latency_caption
from fpgaflow.tasks.deployment.split import SplitResult, fit_to_device
from fpgaflow.tasks.deployment.targets import DeployResult
from fpgaflow.tasks.registry.client import artifact_links
from fpgaflow.tasks.registry.runs import ARTIFACT_SMOKE_TEST_DIR, artifact_path, log_file
from fpgaflow.tasks.settings import get_pipeline_settings

if TYPE_CHECKING:
    from fpgaflow.tasks.kinds import ModelKind
    from fpgaflow.tasks.kinds.protocol import SmokeOutcome


@task(name="smoke-test", cache_policy=NO_CACHE)
def smoke_test_task(
    kind: ModelKind, endpoint: str, service_dir: Path, images: Sequence, mlflow_run_id: str, output_dir: Path
) -> SmokeOutcome:
    """The kind's smoke test; its latency histogram goes into ``output_dir`` and the MLflow run, linked from the artifact."""
    keys = get_pipeline_settings().server_api_keys
    result = kind.smoke_test(endpoint, service_dir, images, api_key=keys[0] if keys else None)
    histogram = plot_latency_histogram(
        result.latencies_ms, f"{result.images} requests to {endpoint}", Path(output_dir) / LATENCY_HISTOGRAM_FILE
    )
    log_file(mlflow_run_id, histogram, ARTIFACT_SMOKE_TEST_DIR)
    publish_table(
        "smoke-test",
        result.rows,
        f"{result.images} held-out images through {endpoint}: max abs diff {result.max_abs_diff:.2g}, "
        f"{kind.smoke_caption(result)}, {latency_caption(result.latencies_ms)}\n\n"
        + artifact_links(mlflow_run_id, [artifact_path(histogram, ARTIFACT_SMOKE_TEST_DIR)]),
    )
    return result


def _deployment_markdown(result: DeployResult) -> str:
    rows = [
        ("model", f"{result.model} {result.version}"),
        ("target", result.target),
        ("endpoint", result.endpoint),
        ("replicas", result.replicas),
        ("devices per replica", result.devices),
        ("image", result.image or result.image_reason),
        ("service", result.service_dir),
    ]
    if result.nodes:
        rows.append(("nodes", "; ".join(" → ".join(chain) for chain in result.nodes)))
    if not result.applied:
        rows.append(("not applied", result.reason))
    return "| | |\n|---|---|\n" + "\n".join(f"| {key} | `{value}` |" for key, value in rows)


@task(name="deploy", cache_policy=NO_CACHE)
def deploy_task(
    service_dir: str | Path, target: str = "local", replicas: int = 1, image: str | None = None, base_image: str | None = None
) -> DeployResult:
    """Prefect step: :func:`deploy`, with the deployment as an artifact."""
    result = deploy(service_dir, target=target, replicas=replicas, image=image, base_image=base_image)
    publish_markdown(
        "deployment", _deployment_markdown(result), description=f"{result.model} {result.version} on {result.target}"
    )
    return result


def _split_markdown(result: SplitResult) -> str:
    rows = "\n".join(
        f"| {index} | {weight / 1e6:.2f} MB | {cut} |"
        for index, (weight, cut) in enumerate(zip(result.part_weight_bytes, (*result.cuts, "(outputs)")), start=1)
    )
    return (
        f"Split into **{result.parts}** parts over **{result.devices}** {result.device_profile} devices "
        f"({result.onchip_memory_bytes / 1e6:.2f} MB on chip each); chained parts vs whole graph: max abs diff "
        f"{result.max_abs_diff:.3g}.\n\n| part | weights | hands on |\n|---|---|---|\n{rows}\n"
    )


@task(name="fit-to-device", cache_policy=NO_CACHE)
def fit_to_device_task(service_dir: str | Path, device_profile: str) -> SplitResult:
    result = fit_to_device(service_dir, device_profile)
    if result.split:
        publish_markdown("model-split", _split_markdown(result), description="FPGA stage split across devices")
    return result
