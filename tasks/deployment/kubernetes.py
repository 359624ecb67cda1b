"""The ``kubernetes`` target: manifests for a model, applied with the Kubernetes Python client.

For users who outgrow one machine. Per model (per segment, for a model split across devices):

- a Deployment whose pods hold one FPGA-node container each (the serving image), with readiness,
  liveness and startup probes on the node's gRPC health, resource requests, and a rolling update
  that never takes a serving pod away before its replacement is ready (``maxUnavailable: 0``);
- a Service (the model's endpoint; segment k > 1 is where segment k-1 hands its tensors on);
- a HorizontalPodAutoscaler on CPU utilisation, never below the replicas asked for.

Every manifest is validated against the Kubernetes API schema the client ships (its models
forbid unknown fields and check types) before it is written or applied. Without a kubeconfig
the manifests are written and the result says how to apply them.

A Service balances gRPC per connection, not per request; put a gRPC-aware proxy or mesh in
front of the entry Service for per-request balancing across pods.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from kubernetes import client as k8s
from pydantic import BaseModel, ValidationError

from fpgaflow.fpga_runtime.errors import InvalidInput
from fpgaflow.fpga_runtime.placement.segments import segment_count
from fpgaflow.fpga_runtime.profiles import known_profiles
from fpgaflow.fpga_runtime.service import ServiceDefinition
from fpgaflow.fpga_runtime.serving_image import node_command
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings

CONTAINER = "fpga-node"
PORT_NAME = "grpc"
MANIFEST_FILE = "manifests.yaml"
FIELD_MANAGER = "fpgaflow"
STARTUP_PERIOD_SECONDS = 5
STARTUP_FAILURES = 120  # up to 10 minutes to load a model before liveness takes over
MODEL_CLASSES: dict[tuple[str | None, str | None], type[BaseModel]] = {
    ("apps/v1", "Deployment"): k8s.V1Deployment,
    ("v1", "Service"): k8s.V1Service,
    ("autoscaling/v2", "HorizontalPodAutoscaler"): k8s.V2HorizontalPodAutoscaler,
}


class ManifestInvalid(PipelineStepError):
    """A rendered manifest does not match the Kubernetes API schema."""


class KubernetesApplyFailed(PipelineStepError):
    """The cluster refused a manifest."""


@dataclass
class KubernetesResult:
    manifests_path: Path
    endpoint: str
    objects: list[str]
    applied: bool
    reason: str = ""
    manifests: list[dict] = field(default_factory=list, repr=False)


def object_name(model: str, segment: int | None = None) -> str:
    """A DNS-1035 label for a model (and segment): ``fpgaflow-<model>[-s<k>]``, at most 63 characters."""
    base = re.sub(r"[^a-z0-9-]+", "-", model.lower()).strip("-")
    suffix = f"-s{segment}" if segment and segment > 1 else ""
    return f"fpgaflow-{base}"[: 63 - len(suffix)].rstrip("-") + suffix


def validate_manifest(manifest: dict):
    """The manifest as the client's model object; unknown fields, wrong types or missing required ones are refused."""
    key = (manifest.get("apiVersion"), manifest.get("kind"))
    model_class = MODEL_CLASSES.get(key)
    if model_class is None:
        raise ManifestInvalid(f"no schema for apiVersion {key[0]!r} kind {key[1]!r}; known: {sorted(MODEL_CLASSES)}")
    try:
        return model_class.model_validate(manifest)
    except ValidationError as error:
        name = manifest.get("metadata", {}).get("name", "?")
        raise ManifestInvalid(f"{key[1]} {name} does not match the Kubernetes API: {error}") from None


def _labels(service: ServiceDefinition, name: str, segment: int | None) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": "fpgaflow-node",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/version": re.sub(r"[^A-Za-z0-9_.-]", "-", service.version)[:63],
        "app.kubernetes.io/managed-by": FIELD_MANAGER,
        "fpgaflow/model": re.sub(r"[^A-Za-z0-9_.-]", "-", service.name)[:63],
    }
    if segment:
        labels["fpgaflow/segment"] = str(segment)
    return labels


def _container(
    service: ServiceDefinition,
    image: str,
    device: str,
    port: int,
    segment: int | None,
    next_hop: str | None,
    settings: PipelineSettings,
) -> dict:
    entrypoint, arguments = node_command(segment, next_hop, port, device)
    container: dict = {"name": CONTAINER, "image": image}
    if entrypoint is not None:
        container["command"] = entrypoint
    container["args"] = arguments
    probe = {"grpc": {"port": port}}
    container.update(
        {
            "ports": [{"name": PORT_NAME, "containerPort": port, "protocol": "TCP"}],
            "startupProbe": {**probe, "periodSeconds": STARTUP_PERIOD_SECONDS, "failureThreshold": STARTUP_FAILURES},
            "readinessProbe": {**probe, "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 2},
            "livenessProbe": {**probe, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
            "resources": {
                "requests": {"cpu": settings.kubernetes_cpu_request, "memory": settings.kubernetes_memory_request},
                "limits": {"memory": settings.kubernetes_memory_request},
            },
        }
    )
    return container


def render_manifests(
    service: ServiceDefinition,
    image: str,
    replicas: int,
    device_profile: str | None = None,
    settings: PipelineSettings | None = None,
) -> list[dict]:
    """Deployment, Service and HorizontalPodAutoscaler of every segment of ``service``, validated."""
    settings = settings or get_pipeline_settings()
    if replicas < 1:
        raise InvalidInput(f"replicas must be at least 1, got {replicas}")
    device = device_profile or settings.device_profile
    if device not in known_profiles():
        raise InvalidInput(
            f"the kubernetes target runs bundled device profiles only ({', '.join(known_profiles())}), not {device!r}"
        )
    namespace, port = settings.kubernetes_namespace, settings.image_grpc_port
    segments = segment_count(service)
    manifests: list[dict] = []
    for segment in range(1, segments + 1):
        position = segment if segments > 1 else None
        name = object_name(service.name, position)
        next_hop = f"{object_name(service.name, segment + 1)}:{port}" if segment < segments else None
        labels = _labels(service, name, position)
        selector = {"app.kubernetes.io/instance": name}
        metadata = {"name": name, "namespace": namespace, "labels": labels}
        manifests.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": metadata,
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": selector},
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "containers": [_container(service, image, device, port, position, next_hop, settings)],
                            "terminationGracePeriodSeconds": int(settings.server_shutdown_grace_seconds) + 5,
                        },
                    },
                },
            }
        )
        manifests.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": metadata,
                "spec": {
                    "type": "ClusterIP",
                    "selector": selector,
                    "ports": [
                        {"name": PORT_NAME, "port": port, "targetPort": PORT_NAME, "protocol": "TCP", "appProtocol": "grpc"}
                    ],
                },
            }
        )
        manifests.append(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": metadata,
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                    "minReplicas": replicas,
                    "maxReplicas": max(replicas, settings.kubernetes_max_replicas),
                    "metrics": [
                        {
                            "type": "Resource",
                            "resource": {
                                "name": "cpu",
                                "target": {"type": "Utilization", "averageUtilization": settings.kubernetes_target_cpu_percent},
                            },
                        }
                    ],
                },
            }
        )
    for manifest in manifests:
        validate_manifest(manifest)
    return manifests


def kubeconfig_path(settings: PipelineSettings) -> Path:
    return (settings.kubeconfig or Path("~/.kube/config")).expanduser()


def _apis(api_client) -> dict[str, tuple]:
    apps, core, autoscaling = k8s.AppsV1Api(api_client), k8s.CoreV1Api(api_client), k8s.AutoscalingV2Api(api_client)
    return {
        "Deployment": (apps.read_namespaced_deployment, apps.create_namespaced_deployment, apps.replace_namespaced_deployment),
        "Service": (core.read_namespaced_service, core.create_namespaced_service, core.replace_namespaced_service),
        "HorizontalPodAutoscaler": (
            autoscaling.read_namespaced_horizontal_pod_autoscaler,
            autoscaling.create_namespaced_horizontal_pod_autoscaler,
            autoscaling.replace_namespaced_horizontal_pod_autoscaler,
        ),
    }


def apply_manifests(manifests: list[dict], settings: PipelineSettings) -> None:
    """Create each object, or replace it when it exists (keeping its resourceVersion and a Service's clusterIP)."""
    from kubernetes import config
    from kubernetes.client.rest import ApiException

    api_client = config.new_client_from_config(config_file=str(kubeconfig_path(settings)))
    apis = _apis(api_client)
    try:
        for manifest in manifests:
            read, create, replace = apis[manifest["kind"]]
            name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
            try:
                current = read(name, namespace)
            except ApiException as error:
                if error.status != 404:
                    raise
                create(namespace, manifest, field_manager=FIELD_MANAGER)
                continue
            body = {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": current.metadata.resource_version}}
            if manifest["kind"] == "Service":
                body["spec"] = {**manifest["spec"], "clusterIP": current.spec.cluster_ip}
            replace(name, namespace, body, field_manager=FIELD_MANAGER)
    except ApiException as error:
        raise KubernetesApplyFailed(
            f"the Kubernetes API refused {manifest['kind']} {name}: {error.status} {error.reason}: {error.body}"
        ) from None
    finally:
        api_client.close()


def deploy_to_kubernetes(
    service: ServiceDefinition,
    image: str,
    replicas: int,
    device_profile: str | None = None,
    settings: PipelineSettings | None = None,
) -> KubernetesResult:
    """Render and write the manifests under ``<home>/kubernetes/<name>/``; apply them when a kubeconfig is present."""
    settings = settings or get_pipeline_settings()
    manifests = render_manifests(service, image, replicas, device_profile, settings)
    directory = settings.home / "kubernetes" / object_name(service.name)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / MANIFEST_FILE
    path.write_text(yaml.safe_dump_all(manifests, sort_keys=False))
    endpoint = f"{object_name(service.name)}.{settings.kubernetes_namespace}.svc:{settings.image_grpc_port}"
    objects = [f"{manifest['kind']}/{manifest['metadata']['name']}" for manifest in manifests]
    kubeconfig = kubeconfig_path(settings)
    if not kubeconfig.is_file():
        return KubernetesResult(
            manifests_path=path,
            endpoint=endpoint,
            objects=objects,
            applied=False,
            reason=f"no kubeconfig at {kubeconfig} (set FPGAFLOW_KUBECONFIG): the manifests are in {path}; "
            f"apply them with `kubectl apply -f {path}`",
            manifests=manifests,
        )
    apply_manifests(manifests, settings)
    return KubernetesResult(manifests_path=path, endpoint=endpoint, objects=objects, applied=True, manifests=manifests)
