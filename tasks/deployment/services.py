"""The services on the emulated FPGA cluster: a service is a model placed on it (``fpgaflow deploy``).

The running gateway answers for them; when it is down, the state it saved still lists them (``cluster up``
brings them back), marked not running. Removing one is the cluster's ``undeploy``.
"""

from __future__ import annotations

from typing import Any

from fpgaflow.fpga_runtime.cluster.daemon import cluster_client, gateway_running
from fpgaflow.fpga_runtime.cluster.state import PlacementRecord, StateStore, cluster_dir
from fpgaflow.fpga_runtime.errors import ModelNotFound
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings


def saved_placements(settings: PipelineSettings | None = None) -> dict[str, PlacementRecord]:
    """The cluster's placements as its state file has them, whether or not its gateway runs."""
    state = StateStore(cluster_dir(settings or get_pipeline_settings())).load()
    return dict(state.placements) if state is not None else {}


def _saved_row(placement: PlacementRecord) -> dict[str, Any]:
    return {
        "name": placement.name,
        "version": placement.version,
        "versions": sorted({replica.version for replica in placement.replicas} or {placement.version}),
        "service_dir": placement.service_dir,
        "image": placement.image,
        "replicas": len(placement.replicas),
        "healthy_replicas": 0,
        "endpoint": None,
        "running": False,
    }


def list_services(settings: PipelineSettings | None = None) -> list[dict[str, Any]]:
    """One entry per service: the gateway's status of it (``running`` true), or its saved placement (false)."""
    settings = settings or get_pipeline_settings()
    if gateway_running(settings):
        with cluster_client(settings) as client:
            return [{**model, "running": True} for model in client.status()["models"]]
    return [_saved_row(placement) for _, placement in sorted(saved_placements(settings).items())]


def get_service(name: str, settings: PipelineSettings | None = None) -> dict[str, Any]:
    services = {service["name"]: service for service in list_services(settings)}
    if name not in services:
        raise ModelNotFound(f"no service {name!r} on the cluster (services: {', '.join(services) or 'none'})")
    return services[name]


def images_of(placement: PlacementRecord) -> set[str]:
    """The images a placement's replicas run (none on the local target)."""
    return {image for image in (placement.image, *(replica.image for replica in placement.replicas)) if image}


def serves_version(placement: PlacementRecord, version: str) -> bool:
    return placement.version == version or any(replica.version == version for replica in placement.replicas)


def delete_service(name: str, settings: PipelineSettings | None = None) -> dict[str, Any]:
    """Stop serving ``name``: its replicas stop and its nodes become free (the gateway must run)."""
    with cluster_client(settings or get_pipeline_settings()) as client:
        return client.undeploy(name)
