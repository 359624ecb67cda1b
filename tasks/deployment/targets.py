"""The deployment targets side by side, chosen by name: how ``fpgaflow deploy`` puts a service onto each.

- ``local`` and ``docker`` (:class:`ClusterTarget`): onto the running cluster, whose gateway routes by
  model name and starts the nodes with the target's launcher (:mod:`fpgaflow.fpga_runtime.cluster.launchers`);
  when no cluster runs, one is started on the target, large enough for the replicas. The docker
  target runs the service's serving image (built here unless one is given).
- ``kubernetes`` (:class:`KubernetesTarget`): manifests rendered, validated, written, and applied when a
  kubeconfig is present (:mod:`fpgaflow.tasks.deployment.kubernetes`).

On every target, a model whose FPGA stage does not fit one device is split across several first
(:func:`fpgaflow.tasks.deployment.split.fit_to_device`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from fpgaflow.fpga_runtime.cluster.daemon import cluster_client, gateway_running, running_state, start_gateway
from fpgaflow.fpga_runtime.cluster.launchers import LAUNCHERS
from fpgaflow.fpga_runtime.errors import FpgaflowError
from fpgaflow.fpga_runtime.service import load_service
from fpgaflow.tasks.deployment.split import fit_to_device
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.progress import Progress
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings


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
    devices: int = 1
    nodes: list[list[str]] = field(default_factory=list)
    applied: bool = True
    reason: str = ""
    smoke: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """The keys the deploy step adds to ``fpgaflow run --json``."""
        summary: dict[str, object] = {
            "endpoint": self.endpoint,
            "image": self.image,
            "target": self.target,
            "replicas": self.replicas,
            "devices_per_replica": self.devices,
        }
        if self.image is None and self.image_reason:
            summary["image_reason"] = self.image_reason
        if not self.applied:
            summary["deploy_reason"] = self.reason
        if self.smoke:
            summary["smoke_test"] = self.smoke
        return summary


class DeploymentTarget(Protocol):
    def deploy(
        self,
        service_dir: Path,
        replicas: int,
        image: str | None,
        base_image: str | None,
        device: str | None,
        settings: PipelineSettings,
    ) -> DeployResult:
        """Put ``replicas`` replicas of the service in ``service_dir`` onto the target.

        A model already there is scaled or rolled over.
        """


def start_cluster(
    target: str,
    nodes: int | None = None,
    device: str | None = None,
    port: int | None = None,
    settings: PipelineSettings | None = None,
):
    """``fpgaflow cluster up``: the gateway process of a new (or the saved) cluster on ``target``."""
    settings = settings or get_pipeline_settings()
    if target not in LAUNCHERS:
        raise DeployFailed(f"a cluster runs on the targets {sorted(LAUNCHERS)}, not {target!r}")
    return start_gateway(settings, nodes=nodes, device=device, target=target, port=port)


def serving_image(
    service_dir: Path, image: str | None, base_image: str | None, settings: PipelineSettings
) -> tuple[str | None, str]:
    """The given image, else the one built for the service (None and the reason when none could be built)."""
    if image:
        return image, ""
    from fpgaflow.tasks.packaging.image_build import build_image

    result = build_image(service_dir, base_image=base_image, settings=settings)
    return result.image, result.reason


@dataclass(frozen=True)
class ClusterTarget:
    name: str

    def deploy(
        self,
        service_dir: Path,
        replicas: int,
        image: str | None,
        base_image: str | None,
        device: str | None,
        settings: PipelineSettings,
    ) -> DeployResult:
        running = gateway_running(settings)
        if running:
            state = running_state(settings)
            if self.name != state.target:
                raise DeployFailed(f"the running cluster is on the {state.target} target, not {self.name}: take it down first")
            device = state.device_profile
        device = device or settings.device_profile
        fit = fit_to_device(service_dir, device, settings)
        service = load_service(fit.service_dir)
        needs_image = LAUNCHERS[self.name].requires_image
        steps = 2 + needs_image + (not running)
        with Progress(f"deploy {service.name} v{service.version}", steps, "steps", interval=0) as progress:
            progress.update(1, f"{fit.devices} x {fit.device_profile} per replica")
            image_reason = ""
            if needs_image:
                image, image_reason = serving_image(fit.service_dir, image, base_image, settings)
                if image is None:
                    raise DeployFailed(f"the {self.name} target needs a serving image: {image_reason}")
                progress.update(1, f"image {image}")
            if not running:
                nodes = max(settings.cluster_nodes, replicas * fit.devices)
                start_cluster(self.name, nodes, device, settings=settings)
                progress.update(1, f"{self.name} cluster of {nodes} nodes started")
            with cluster_client(settings) as client:
                try:
                    placed = client.deploy(str(fit.service_dir), replicas, image)
                except FpgaflowError as error:
                    raise DeployFailed(f"deploying {service.name} version {service.version}: {error}") from None
            progress.update(1, f"{placed['replicas']} replica(s) serving at {placed['endpoint']}")
        return DeployResult(
            model=service.name,
            version=service.version,
            target=self.name,
            endpoint=placed["endpoint"],
            replicas=placed["replicas"],
            service_dir=str(fit.service_dir),
            image=image,
            image_reason=image_reason,
            parts=fit.parts,
            devices=fit.devices,
            nodes=[replica["nodes"] for replica in placed["placement"]],
        )


class KubernetesTarget:
    name = "kubernetes"

    def deploy(
        self,
        service_dir: Path,
        replicas: int,
        image: str | None,
        base_image: str | None,
        device: str | None,
        settings: PipelineSettings,
        render_dir: Path | None = None,
    ) -> DeployResult:
        """Render the manifests (into ``render_dir`` only, building no image, when given); else apply them too."""
        from fpgaflow.fpga_runtime.placement.fit import SegmentDevices
        from fpgaflow.tasks.deployment.kubernetes_deploy import deploy_to_kubernetes
        from fpgaflow.tasks.packaging.image_build import default_tag

        device = device or settings.device_profile
        fit = fit_to_device(service_dir, device, settings)
        service = load_service(fit.service_dir)
        # one device per segment unless a segment holds a layer cut over several (then ask each segment's graph)
        one_each = fit.devices == fit.parts
        devices = (1,) * fit.parts if one_each else SegmentDevices().per_segment(service, fit.service_dir, device)
        image_reason = ""
        if render_dir is not None:
            image = image or default_tag(service)
        else:
            image, image_reason = serving_image(fit.service_dir, image, base_image, settings)
        result = deploy_to_kubernetes(
            service,
            image or default_tag(service),
            replicas,
            device,
            settings,
            devices_per_segment=devices,
            render_dir=render_dir,
        )
        applied = result.applied and image is not None
        reason = result.reason or (f"not applied: {image_reason}" if image is None else "")
        return DeployResult(
            model=service.name,
            version=service.version,
            target=self.name,
            endpoint=result.endpoint,
            replicas=replicas,
            service_dir=str(fit.service_dir),
            image=image,
            image_reason=image_reason,
            parts=fit.parts,
            devices=sum(devices),
            applied=applied,
            reason=reason,
            smoke=result.smoke,
        )


KUBERNETES = KubernetesTarget()
TARGETS: dict[str, DeploymentTarget] = {**{name: ClusterTarget(name) for name in LAUNCHERS}, KUBERNETES.name: KUBERNETES}
