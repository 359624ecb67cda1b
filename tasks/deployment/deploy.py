"""The deployment step: a service onto a target with N replicas.

The service is a service directory or a registered version, ``NAME@ALIAS`` or ``NAME@VERSION``
(resolved through the MLflow registry, :func:`fpgaflow.tasks.registry.lookup.resolve_version`). The
target is one of :data:`fpgaflow.tasks.deployment.targets.TARGETS` (``local``, ``docker``, ``kubernetes``);
by default the running cluster's, else the cluster_target setting.
"""

from __future__ import annotations

from pathlib import Path

from fpgaflow.fpga_runtime.cluster.daemon import gateway_running, running_state
from fpgaflow.fpga_runtime.cluster.launchers import LAUNCHERS
from fpgaflow.fpga_runtime.service import load_service
from fpgaflow.tasks.deployment.targets import KUBERNETES, TARGETS, DeployFailed, DeployResult
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings


def resolve_service(reference: str | Path, settings: PipelineSettings | None = None) -> Path:
    """A service directory, or the one of ``NAME@ALIAS`` / ``NAME@VERSION`` in the registry."""
    path = Path(reference).expanduser()
    if path.is_dir():
        load_service(path)
        return path.resolve()
    name, separator, which = str(reference).partition("@")
    if not separator or not name or not which:
        raise DeployFailed(f"{reference!r} is neither a service directory nor NAME@ALIAS or NAME@VERSION")
    from fpgaflow.tasks.registry.lookup import resolve_version

    try:
        return resolve_version(name, which, settings).service_dir
    except ValueError as error:
        raise DeployFailed(str(error)) from None


def deploy(
    reference: str | Path,
    target: str | None = None,
    replicas: int = 1,
    image: str | None = None,
    base_image: str | None = None,
    device: str | None = None,
    settings: PipelineSettings | None = None,
    render_dir: Path | None = None,
) -> DeployResult:
    """Deploy ``reference`` with ``replicas`` replicas; a model already deployed is scaled or rolled over to it.

    ``render_dir`` (kubernetes target only): write the manifests there and touch no cluster.
    """
    settings = settings or get_pipeline_settings()
    if replicas < 1:
        raise DeployFailed(f"replicas must be at least 1, got {replicas}")
    service_dir = resolve_service(reference, settings)
    if target is None:
        target = running_state(settings).target if gateway_running(settings) else settings.cluster_target
    if target not in TARGETS:
        raise DeployFailed(f"a cluster runs on the targets {sorted(LAUNCHERS)}, not {target!r}")
    if render_dir is not None:
        if target != KUBERNETES.name:
            raise DeployFailed(f"--render writes Kubernetes manifests: it needs --target kubernetes, not {target}")
        return KUBERNETES.deploy(service_dir, replicas, image, base_image, device, settings, render_dir=render_dir)
    return TARGETS[target].deploy(service_dir, replicas, image, base_image, device, settings)
