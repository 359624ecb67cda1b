"""`deploy_model`: deploy a registered model version, by alias or number, to a target."""

from __future__ import annotations

from prefect import flow

from fpgaflow.tasks.deployment.steps import deploy_task
from fpgaflow.tasks.registry.steps import resolve_version_task
from fpgaflow.tasks.registry.version_state import CHAMPION_ALIAS


@flow(name="deploy_model", log_prints=True)
def deploy_model(
    model_name: str,
    alias_or_version: str = CHAMPION_ALIAS,
    target: str = "local",
    replicas: int = 1,
    base_image: str | None = None,
) -> dict:
    """Resolve the version through the MLflow registry and deploy its service definition; the docker and
    kubernetes targets get its serving image built (from ``base_image``, default: the setting).
    Artifact ``deployment``: endpoint, replicas, nodes."""
    version = resolve_version_task(model_name, str(alias_or_version))
    result = deploy_task(version.service_dir, target=target, replicas=replicas, base_image=base_image)
    print(f"{version.label} deployed on {result.target} at {result.endpoint} ({result.replicas} replicas)")
    return {
        "model_name": version.name,
        "model_version": version.version,
        "aliases": list(version.aliases),
        **result.summary(),
        "nodes": result.nodes,
    }
