"""The ``kubernetes`` target's manifests: what a production cluster asks of a model's pods.

Per model: a Namespace at the restricted Pod Security level, and per segment (a model split across
devices is a chain of segments, each handing its tensors to the next one's Service):

- a Deployment of FPGA-node pods that run as a non-root user with a read-only root file system, no
  privilege escalation, every capability dropped, the runtime's seccomp profile and no service
  account token; CPU and memory requests and limits scaled by the emulated devices the segment
  holds; startup, readiness and liveness probes on gRPC health (at the entry, which serves TLS, a
  plaintext health-only port: the kubelet's gRPC probes speak no TLS); a rolling update that never
  takes a serving pod away before its replacement is ready;
- the entry segment serves TLS (mutual TLS with a client Secret) and checks API keys, certificate
  and keys mounted from Secrets as files, never environment variables or arguments;
- a Service, a HorizontalPodAutoscaler on CPU, a PodDisruptionBudget, and a NetworkPolicy that
  admits the gRPC port of the entry segment only, and of segment k only from segment k-1 (the
  smoke-test pods admit nothing);
- labels from Kubernetes' recommended ``app.kubernetes.io/*`` set.

The smoke test is a Job of its own (:func:`render_smoke_job`), applied after the rollout
(:mod:`fpgaflow.tasks.deployment.kubernetes_deploy` writes and applies). A check
that checkov's policy set makes and these manifests do not meet names its reason in the object's
``checkov.io/skip<N>`` annotation. Every manifest is validated against the client's models of the
Kubernetes API before it is written or applied.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from kubernetes import client as k8s
from pydantic import BaseModel, ValidationError

from fpgaflow.fpga_runtime.errors import InvalidInput
from fpgaflow.fpga_runtime.placement.segments import segment_count
from fpgaflow.fpga_runtime.profiles import known_profiles
from fpgaflow.fpga_runtime.service import ServiceDefinition
from fpgaflow.fpga_runtime.serving_image import VENV, node_command
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.packaging.image_build import RUNTIME_UID, STATE_PATH
from fpgaflow.tasks.settings import PipelineSettings

CONTAINER = "fpga-node"
PORT_NAME = "grpc"
HEALTH_PORT_NAME = "health"
MANIFEST_FILE = "manifests.yaml"
SMOKE_JOB_FILE = "smoke-job.yaml"
FIELD_MANAGER = "fpgaflow"
PART_OF = "fpgaflow"
STARTUP_PERIOD_SECONDS = 5
STARTUP_FAILURES = 120  # up to 10 minutes to load a model before liveness takes over
SECRET_FILE_MODE = 0o440  # owner root, group the pod's fsGroup: the runtime user reads, nobody else
TLS_PATH = "/etc/fpgaflow/tls"
CLIENT_TLS_PATH = "/etc/fpgaflow/client-tls"
API_KEYS_PATH = "/etc/fpgaflow/api-keys"
API_KEYS_ITEM = "api-keys"
SMOKE_MODULE = "fpgaflow.fpga_runtime.endpoint_check"
SMOKE_DEADLINE_SECONDS = 300
SMOKE_TTL_SECONDS = 3600
# checkov checks these manifests do not meet, each with the reason (annotation ``checkov.io/skip<N>``).
WORKLOAD_SKIPS = (
    "CKV_K8S_43=the serving image is built and tagged per model version by fpgaflow; pin a digest with --image NAME@sha256:...",
)
MODEL_CLASSES: dict[tuple[str | None, str | None], type[BaseModel]] = {
    ("v1", "Namespace"): k8s.V1Namespace,
    ("apps/v1", "Deployment"): k8s.V1Deployment,
    ("v1", "Service"): k8s.V1Service,
    ("autoscaling/v2", "HorizontalPodAutoscaler"): k8s.V2HorizontalPodAutoscaler,
    ("policy/v1", "PodDisruptionBudget"): k8s.V1PodDisruptionBudget,
    ("networking.k8s.io/v1", "NetworkPolicy"): k8s.V1NetworkPolicy,
    ("batch/v1", "Job"): k8s.V1Job,
}


class ManifestInvalid(PipelineStepError):
    """A rendered manifest does not match the Kubernetes API schema."""


@dataclass
class KubernetesResult:
    manifests_path: Path
    endpoint: str
    objects: list[str]
    applied: bool
    reason: str = ""
    manifests: list[dict] = field(default_factory=list, repr=False)
    smoke: dict = field(default_factory=dict)


def object_name(model: str, segment: int | None = None) -> str:
    """A DNS-1035 label for a model (and segment): ``fpgaflow-<model>[-s<k>]``, at most 63 characters."""
    base = re.sub(r"[^a-z0-9-]+", "-", model.lower()).strip("-")
    suffix = f"-s{segment}" if segment and segment > 1 else ""
    return f"fpgaflow-{base}"[: 63 - len(suffix)].rstrip("-") + suffix


def entry_endpoint(service: ServiceDefinition, settings: PipelineSettings) -> str:
    """The entry Service inside the cluster: ``NAME.NAMESPACE.svc:PORT``."""
    return f"{object_name(service.name)}.{settings.kubernetes_namespace}.svc:{settings.image_grpc_port}"


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


def _label_value(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:63].strip("-_.") or "none"


def _labels(service: ServiceDefinition, name: str, component: str, segment: int | None) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": "fpgaflow-node",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/version": _label_value(service.version),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": FIELD_MANAGER,
        "fpgaflow/model": _label_value(service.name),
    }
    if segment:
        labels["fpgaflow/segment"] = str(segment)
    return labels


def _skips(reasons: Sequence[str]) -> dict[str, str]:
    return {f"checkov.io/skip{number}": reason for number, reason in enumerate(reasons, start=1)}


def _quantity_times(quantity: str, factor: int) -> str:
    """``quantity`` (``1``, ``500m``, ``2Gi``) times a whole ``factor``, in the same unit."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", quantity)
    if match is None:
        raise InvalidInput(f"{quantity!r} is not a Kubernetes quantity fpgaflow can scale (a number and an optional unit)")
    number = float(match.group(1)) * factor
    return f"{int(number) if number.is_integer() else number}{match.group(2)}"


def pod_security_context() -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUNTIME_UID,
        "runAsGroup": RUNTIME_UID,
        "fsGroup": RUNTIME_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUNTIME_UID,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _writable_volumes() -> tuple[list[dict], list[dict]]:
    """emptyDirs for the only paths a node writes (its state directory and /tmp): the root file system stays read-only."""
    volumes = [
        {"name": "state", "emptyDir": {"sizeLimit": "256Mi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    mounts = [{"name": "state", "mountPath": STATE_PATH}, {"name": "tmp", "mountPath": "/tmp"}]
    return volumes, mounts


def _secret_volume(name: str, secret: str, items: Sequence[str] | None = None) -> dict:
    source: dict = {"secretName": secret, "defaultMode": SECRET_FILE_MODE}
    if items:
        source["items"] = [{"key": item, "path": item} for item in items]
    return {"name": name, "secret": source}


def _entry_security(settings: PipelineSettings) -> tuple[list[dict], list[dict], list[dict]]:
    """(volumes, mounts, environment) of the entry pods: TLS and API keys from Secrets, as file paths only."""
    volumes = [
        _secret_volume("tls", settings.kubernetes_tls_secret, ["tls.crt", "tls.key"]),
        _secret_volume("api-keys", settings.kubernetes_api_keys_secret, [API_KEYS_ITEM]),
    ]
    mounts = [
        {"name": "tls", "mountPath": TLS_PATH, "readOnly": True},
        {"name": "api-keys", "mountPath": API_KEYS_PATH, "readOnly": True},
    ]
    environment = {
        "FPGAFLOW_SERVER_TLS_CERT_FILE": f"{TLS_PATH}/tls.crt",
        "FPGAFLOW_SERVER_TLS_KEY_FILE": f"{TLS_PATH}/tls.key",
        "FPGAFLOW_SERVER_API_KEYS_FILE": f"{API_KEYS_PATH}/{API_KEYS_ITEM}",
    }
    if settings.kubernetes_client_tls_secret:
        volumes.append(_secret_volume("client-ca", settings.kubernetes_client_tls_secret, ["ca.crt"]))
        mounts.append({"name": "client-ca", "mountPath": CLIENT_TLS_PATH, "readOnly": True})
        environment["FPGAFLOW_SERVER_TLS_CLIENT_CA_FILE"] = f"{CLIENT_TLS_PATH}/ca.crt"
    return volumes, mounts, [{"name": key, "value": value} for key, value in environment.items()]


def _node_pod(
    image: str,
    device: str,
    devices: int,
    position: int | None,
    next_hop: str | None,
    entry: bool,
    settings: PipelineSettings,
) -> dict:
    entrypoint, arguments = node_command(position, next_hop, settings.image_grpc_port, device, devices if devices > 1 else None)
    volumes, mounts = _writable_volumes()
    ports = [{"name": PORT_NAME, "containerPort": settings.image_grpc_port, "protocol": "TCP"}]
    environment: list[dict] = []
    health_port = settings.image_grpc_port  # an inner segment speaks plaintext: health on its gRPC port
    if entry:  # TLS: health on a plaintext port of its own, for the kubelet
        health_port = settings.kubernetes_health_port
        ports.append({"name": HEALTH_PORT_NAME, "containerPort": health_port, "protocol": "TCP"})
        secret_volumes, secret_mounts, secret_environment = _entry_security(settings)
        volumes, mounts = volumes + secret_volumes, mounts + secret_mounts
        environment = [{"name": "FPGAFLOW_SERVER_HEALTH_PORT", "value": str(health_port)}, *secret_environment]
    probe = {"grpc": {"port": health_port}}
    container: dict = {"name": CONTAINER, "image": image, "imagePullPolicy": settings.kubernetes_image_pull_policy}
    if entrypoint is not None:
        container["command"] = entrypoint
    container.update(
        {
            "args": arguments,
            **({"env": environment} if environment else {}),
            "ports": ports,
            "startupProbe": {**probe, "periodSeconds": STARTUP_PERIOD_SECONDS, "failureThreshold": STARTUP_FAILURES},
            "readinessProbe": {**probe, "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 2},
            "livenessProbe": {**probe, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
            "resources": {
                "requests": {
                    "cpu": _quantity_times(settings.kubernetes_cpu_request, devices),
                    "memory": _quantity_times(settings.kubernetes_memory_request, devices),
                },
                "limits": {
                    "cpu": _quantity_times(settings.kubernetes_cpu_limit, devices),
                    "memory": _quantity_times(settings.kubernetes_memory_request, devices),
                },
            },
            "securityContext": container_security_context(),
            "volumeMounts": mounts,
        }
    )
    return {
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": volumes,
        "terminationGracePeriodSeconds": int(settings.server_shutdown_grace_seconds) + 5,
    }


def _network_policy(metadata: dict, selector: dict, admitted_from: dict | None, closed: bool = False) -> dict:
    """Ingress to the pods of ``selector``: their gRPC port from the pods of ``admitted_from`` (None: from anywhere),
    or nothing at all when ``closed``."""
    rule: dict = {"ports": [{"port": PORT_NAME, "protocol": "TCP"}]}
    if admitted_from is not None:
        rule["from"] = [{"podSelector": {"matchLabels": admitted_from}}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata,
        "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": ["Ingress"], "ingress": [] if closed else [rule]},
    }


def _check_inputs(replicas: int, device: str, segments: int, devices_per_segment: Sequence[int] | None) -> tuple[int, ...]:
    if replicas < 1:
        raise InvalidInput(f"replicas must be at least 1, got {replicas}")
    if device not in known_profiles():
        raise InvalidInput(
            f"the kubernetes target runs bundled device profiles only ({', '.join(known_profiles())}), not {device!r}"
        )
    devices = tuple(devices_per_segment or (1,) * segments)
    if len(devices) != segments or min(devices) < 1:
        raise InvalidInput(f"devices per segment must be {segments} counts of at least 1, got {list(devices)}")
    return devices


def render_manifests(
    service: ServiceDefinition,
    image: str,
    replicas: int,
    device_profile: str | None = None,
    settings: PipelineSettings | None = None,
    devices_per_segment: Sequence[int] | None = None,
) -> list[dict]:
    """Namespace, then per segment Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget and
    NetworkPolicy of ``service``, validated; a segment holding several emulated devices asks for as many times
    the resources (``devices_per_segment``, default one each)."""
    from fpgaflow.tasks.settings import get_pipeline_settings

    settings = settings or get_pipeline_settings()
    device = device_profile or settings.device_profile
    segments = segment_count(service)
    devices = _check_inputs(replicas, device, segments, devices_per_segment)
    namespace, port = settings.kubernetes_namespace, settings.image_grpc_port
    manifests: list[dict] = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": namespace,
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "app.kubernetes.io/part-of": PART_OF,
                    "app.kubernetes.io/managed-by": FIELD_MANAGER,
                },
            },
        }
    ]
    for segment in range(1, segments + 1):
        position = segment if segments > 1 else None
        name = object_name(service.name, position)
        next_hop = f"{object_name(service.name, segment + 1)}:{port}" if segment < segments else None
        component = "entry" if segment == 1 else "segment"
        labels = _labels(service, name, component, position)
        selector = {"app.kubernetes.io/instance": name}
        metadata = {"name": name, "namespace": namespace, "labels": labels}
        annotations = {"fpgaflow/devices-per-pod": str(devices[segment - 1]), **_skips(WORKLOAD_SKIPS)}
        pod = _node_pod(image, device, devices[segment - 1], position, next_hop, segment == 1, settings)
        manifests.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {**metadata, "annotations": annotations},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": selector},
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                    "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod},
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
        manifests.append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": metadata,
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
            }
        )
        previous = None if segment == 1 else {"app.kubernetes.io/instance": object_name(service.name, segment - 1)}
        manifests.append(_network_policy(metadata, selector, previous))
    smoke = smoke_job_name(service)
    smoke_metadata = {"name": smoke, "namespace": namespace, "labels": _labels(service, smoke, "smoke-test", None)}
    manifests.append(_network_policy(smoke_metadata, {"app.kubernetes.io/instance": smoke}, admitted_from=None, closed=True))
    for manifest in manifests:
        validate_manifest(manifest)
    return manifests


def smoke_job_name(service: ServiceDefinition) -> str:
    return object_name(service.name)[:57].rstrip("-") + "-smoke"


def render_smoke_job(service: ServiceDefinition, image: str, settings: PipelineSettings) -> dict:
    """A Job that scores one image through the entry Service with the clients' TLS and an API key (files from
    the Secrets) and prints what came back as one JSON line: the smoke test from inside the cluster."""
    name = smoke_job_name(service)
    labels = _labels(service, name, "smoke-test", None)
    volumes, mounts = _writable_volumes()
    tls_volume = _secret_volume("tls", settings.kubernetes_tls_secret, ["ca.crt"])
    volumes += [tls_volume, _secret_volume("api-keys", settings.kubernetes_api_keys_secret, [API_KEYS_ITEM])]
    mounts += [
        {"name": "tls", "mountPath": TLS_PATH, "readOnly": True},
        {"name": "api-keys", "mountPath": API_KEYS_PATH, "readOnly": True},
    ]
    arguments = [
        entry_endpoint(service, settings),
        "--model",
        service.name,
        "--ca-cert",
        f"{TLS_PATH}/ca.crt",
        "--keys-file",
        f"{API_KEYS_PATH}/{API_KEYS_ITEM}",
    ]
    if settings.kubernetes_client_tls_secret:
        volumes.append(_secret_volume("client-tls", settings.kubernetes_client_tls_secret, ["tls.crt", "tls.key"]))
        mounts.append({"name": "client-tls", "mountPath": CLIENT_TLS_PATH, "readOnly": True})
        arguments += ["--cert", f"{CLIENT_TLS_PATH}/tls.crt", "--key", f"{CLIENT_TLS_PATH}/tls.key"]
    container = {
        "name": "smoke-test",
        "image": image,
        "imagePullPolicy": settings.kubernetes_image_pull_policy,
        "command": [f"{VENV}/bin/python", "-m", SMOKE_MODULE],
        "args": arguments,
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        },
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": settings.kubernetes_namespace,
            "labels": labels,
            "annotations": _skips(WORKLOAD_SKIPS),
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": SMOKE_DEADLINE_SECONDS,
            "ttlSecondsAfterFinished": SMOKE_TTL_SECONDS,
            "template": {
                "metadata": {"labels": labels, "annotations": _skips(WORKLOAD_SKIPS)},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security_context(),
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }
    validate_manifest(job)
    return job


def write_manifests(directory: Path, manifests: list[dict], smoke_job: dict) -> Path:
    """``manifests.yaml`` (everything ``kubectl apply -f`` needs) and ``smoke-job.yaml`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / MANIFEST_FILE
    path.write_text(yaml.safe_dump_all(manifests, sort_keys=False))
    (directory / SMOKE_JOB_FILE).write_text(yaml.safe_dump(smoke_job, sort_keys=False))
    return path


def secrets_to_create(settings: PipelineSettings) -> list[str]:
    """The kubectl commands that create the Secrets the pods mount (fpgaflow never writes key material to a manifest)."""
    namespace = settings.kubernetes_namespace
    commands = [
        f"kubectl -n {namespace} create secret generic {settings.kubernetes_tls_secret} --type kubernetes.io/tls "
        "--from-file=tls.crt=SERVER.crt --from-file=tls.key=SERVER.key --from-file=ca.crt=CA.crt",
        f"kubectl -n {namespace} create secret generic {settings.kubernetes_api_keys_secret} "
        f"--from-file={API_KEYS_ITEM}=KEYS_FILE",
    ]
    if settings.kubernetes_client_tls_secret:
        commands.append(
            f"kubectl -n {namespace} create secret generic {settings.kubernetes_client_tls_secret} --type kubernetes.io/tls "
            "--from-file=tls.crt=CLIENT.crt --from-file=tls.key=CLIENT.key --from-file=ca.crt=CLIENT_CA.crt"
        )
    return commands
