"""The deployment step: a service onto a target with N replicas.

The service is a service directory or a registered version, ``NAME@ALIAS`` or ``NAME@VERSION``
(resolved through the MLflow registry, :func:`fpgaflow.tasks.registry.lookup.resolve_version`).

- ``local`` and ``docker``: onto the running cluster, whose gateway routes by model name; when no
  cluster runs, one is started on the target, large enough for the replicas. A model whose FPGA
  stage does not fit one of the cluster's devices is split across several first
  (:func:`fpgaflow.tasks.deployment.split.fit_to_device`). The docker target runs the service's serving image (built
  here unless one is given).
- ``kubernetes``: manifests rendered, validated, written, and applied when a kubeconfig is present.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from fpgaflow.fpga_runtime.cluster.daemon import cluster_client, gateway_running, running_state, start_gateway
from fpgaflow.fpga_runtime.errors import FpgaflowError
from fpgaflow.fpga_runtime.service import load_service
from fpgaflow.fpga_runtime.settings import Settings, get_settings
from fpgaflow.tasks.artifacts import publish_markdown
from fpgaflow.tasks.deployment.targets import LAUNCHERS
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.deployment.split import fit_to_device

TARGETS = ("local", "docker", "kubernetes")


class DeployFailed(PipelineStepError):
    """The service could not be deployed; the message says why."""


@dataclass
class DeployResult:
    model: str
    version: str
    target: str
    endpoint: str
    replicas: int
    service_dir: str
    image: str | None = None
    image_reason: str = ""
    parts: int = 1
    nodes: list[list[str]] = field(default_factory=list)
    applied: bool = True
    reason: str = ""

    def summary(self) -> dict:
        """The keys the deploy step adds to ``fpgaflow run --json``."""
        summary = {"endpoint": self.endpoint, "image": self.image, "target": self.target, "replicas": self.replicas,
                   "devices_per_replica": self.parts}
        if self.image is None and self.image_reason:
            summary["image_reason"] = self.image_reason
        if not self.applied:
            summary["deploy_reason"] = self.reason
        return summary


def resolve_service(reference: str | Path, settings: Settings | None = None) -> Path:
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


def start_cluster(target: str, nodes: int | None = None, device: str | None = None, port: int | None = None,
                  settings: Settings | None = None):
    """``fpgaflow cluster up``: the gateway process of a new (or the saved) cluster on ``target``."""
    settings = settings or get_settings()
    if target not in LAUNCHERS:
        raise DeployFailed(f"a cluster runs on the targets {sorted(LAUNCHERS)}, not {target!r}")
    return start_gateway(settings, nodes=nodes, device=device, target=target, launcher=LAUNCHERS[target], port=port)


def _serving_image(service_dir: Path, image: str | None, base_image: str | None, settings: Settings) -> tuple[str | None, str]:
    if image:
        return image, ""
    from fpgaflow.tasks.packaging.image_build import build_image

    result = build_image(service_dir, base_image=base_image, settings=settings)
    return result.image, result.reason


def deploy(
    reference: str | Path,
    target: str | None = None,
    replicas: int = 1,
    image: str | None = None,
    base_image: str | None = None,
    device: str | None = None,
    settings: Settings | None = None,
) -> DeployResult:
    """Deploy ``reference`` with ``replicas`` replicas; a model already deployed is scaled or rolled over to it."""
    settings = settings or get_settings()
    if replicas < 1:
        raise DeployFailed(f"replicas must be at least 1, got {replicas}")
    service_dir = resolve_service(reference, settings)
    if target == "kubernetes":
        return _deploy_to_kubernetes(service_dir, replicas, image, base_image, device, settings)
    running = gateway_running(settings)
    if running:
        state = running_state(settings)
        if target and target != state.target:
            raise DeployFailed(f"the running cluster is on the {state.target} target, not {target}: take it down first")
        target, device = state.target, state.device_profile
    target = target or settings.cluster_target
    device = device or settings.device_profile
    fit = fit_to_device(service_dir, device, settings)
    service = load_service(fit.service_dir)
    image_reason = ""
    if target == "docker":
        image, image_reason = _serving_image(fit.service_dir, image, base_image, settings)
        if image is None:
            raise DeployFailed(f"the docker target needs a serving image: {image_reason}")
    if not running:
        start_cluster(target, max(settings.cluster_nodes, replicas * fit.parts), device, settings=settings)
    with cluster_client(settings) as client:
        try:
            placed = client.deploy(str(fit.service_dir), replicas, image)
        except FpgaflowError as error:
            raise DeployFailed(f"deploying {service.name} version {service.version}: {error}") from None
    return DeployResult(
        model=service.name,
        version=service.version,
        target=target,
        endpoint=placed["endpoint"],
        replicas=placed["replicas"],
        service_dir=str(fit.service_dir),
        image=image,
        image_reason=image_reason,
        parts=fit.parts,
        nodes=[replica["nodes"] for replica in placed["placement"]],
    )


def _deploy_to_kubernetes(service_dir: Path, replicas: int, image: str | None, base_image: str | None, device: str | None,
                          settings: Settings) -> DeployResult:
    from fpgaflow.tasks.packaging.image_build import default_tag
    from fpgaflow.tasks.deployment.kubernetes import deploy_to_kubernetes

    device = device or settings.device_profile
    fit = fit_to_device(service_dir, device, settings)
    service = load_service(fit.service_dir)
    image, image_reason = _serving_image(fit.service_dir, image, base_image, settings)
    result = deploy_to_kubernetes(service, image or default_tag(service), replicas, device, settings)
    applied = result.applied and image is not None
    reason = result.reason or (f"not applied: {image_reason}" if image is None else "")
    return DeployResult(
        model=service.name,
        version=service.version,
        target="kubernetes",
        endpoint=result.endpoint,
        replicas=replicas,
        service_dir=str(fit.service_dir),
        image=image,
        image_reason=image_reason,
        parts=fit.parts,
        applied=applied,
        reason=reason,
    )


def _markdown(result: DeployResult) -> str:
    rows = [("model", f"{result.model} {result.version}"), ("target", result.target), ("endpoint", result.endpoint),
            ("replicas", result.replicas), ("devices per replica", result.parts), ("image", result.image or result.image_reason),
            ("service", result.service_dir)]
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
    publish_markdown("deployment", _markdown(result), description=f"{result.model} {result.version} on {result.target}")
    return result

