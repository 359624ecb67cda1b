"""The kubernetes target's deploy: manifests written, then applied to a cluster: server-side apply, rollout, smoke test.

Each object is sent whole as a server-side apply (``PATCH`` with ``application/apply-patch+yaml``,
field manager ``fpgaflow``, conflicts forced: fpgaflow owns what it renders), so applying again is a
no-op and fields other managers own (an HPA's replica count) are left alone. Then each Deployment is
watched until its new pods are all updated and available, progress printed as it changes; then the
smoke-test Job scores an image through the entry Service from inside the cluster and its pod's last
line is the result.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from fpgaflow.fpga_runtime.service import ServiceDefinition
from fpgaflow.tasks.deployment.kubernetes import (
    FIELD_MANAGER,
    KubernetesResult,
    entry_endpoint,
    object_name,
    render_manifests,
    render_smoke_job,
    secrets_to_create,
    write_manifests,
)
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.progress import say
from fpgaflow.tasks.settings import PipelineSettings

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"  # set by the Job controller on its pods (Kubernetes >= 1.27)
Report = Callable[[str], None]


class KubernetesApplyFailed(PipelineStepError):
    """The cluster refused a manifest, the rollout did not finish, or the smoke test failed."""


@contextmanager
def api_client(settings: PipelineSettings):
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(kubeconfig_path(settings)))
    try:
        yield client
    finally:
        client.close()


def _patchers(client: k8s.ApiClient) -> dict[str, Callable]:
    core, apps, batch = k8s.CoreV1Api(client), k8s.AppsV1Api(client), k8s.BatchV1Api(client)
    autoscaling, policy, networking = k8s.AutoscalingV2Api(client), k8s.PolicyV1Api(client), k8s.NetworkingV1Api(client)
    return {
        "Deployment": apps.patch_namespaced_deployment,
        "Service": core.patch_namespaced_service,
        "HorizontalPodAutoscaler": autoscaling.patch_namespaced_horizontal_pod_autoscaler,
        "PodDisruptionBudget": policy.patch_namespaced_pod_disruption_budget,
        "NetworkPolicy": networking.patch_namespaced_network_policy,
        "Job": batch.patch_namespaced_job,
    }


def _refused(manifest: dict, error: ApiException) -> KubernetesApplyFailed:
    what = f"{manifest['kind']} {manifest['metadata']['name']}"
    return KubernetesApplyFailed(f"the Kubernetes API refused {what}: {error.status} {error.reason}: {error.body}")


def server_side_apply(client: k8s.ApiClient, manifest: dict):
    """One object, server-side applied by field manager ``fpgaflow``; the object as the API server holds it now."""
    name = manifest["metadata"]["name"]
    try:
        if manifest["kind"] == "Namespace":
            return k8s.CoreV1Api(client).patch_namespace(
                name, manifest, field_manager=FIELD_MANAGER, force=True, _content_type=APPLY_CONTENT_TYPE
            )
        return _patchers(client)[manifest["kind"]](
            name,
            manifest["metadata"]["namespace"],
            manifest,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY_CONTENT_TYPE,
        )
    except ApiException as error:
        raise _refused(manifest, error) from None


def check_secrets(client: k8s.ApiClient, smoke_job: dict, settings: PipelineSettings) -> None:
    """Every Secret the pods mount exists; else the error says how to create them."""
    core = k8s.CoreV1Api(client)
    wanted = sorted(
        {volume["secret"]["secretName"] for volume in smoke_job["spec"]["template"]["spec"]["volumes"] if "secret" in volume}
    )
    missing = []
    for name in wanted:
        try:
            core.read_namespaced_secret(name, settings.kubernetes_namespace)
        except ApiException as error:
            if error.status != 404:
                raise KubernetesApplyFailed(f"cannot read Secret {name}: {error.status} {error.reason}") from None
            missing.append(name)
    if missing:
        raise KubernetesApplyFailed(
            f"the Secrets {', '.join(missing)} are missing in namespace {settings.kubernetes_namespace}: the pods mount "
            "their TLS certificate and API keys from them. Create them, then deploy again: "
            + "; ".join(secrets_to_create(settings))
        )


def rollout_state(deployment: k8s.V1Deployment) -> tuple[bool, str]:
    """(finished, progress line) of a Deployment's rollout, as ``kubectl rollout status`` judges it."""
    wanted = deployment.spec.replicas or 0 if deployment.spec else 0
    metadata = deployment.metadata or k8s.V1ObjectMeta()
    status = deployment.status or k8s.V1DeploymentStatus()
    updated, available = status.updated_replicas or 0, status.available_replicas or 0
    total = status.replicas or 0
    observed = (status.observed_generation or 0) >= (metadata.generation or 0)
    line = f"{metadata.name}: {updated}/{wanted} updated, {available}/{wanted} available"
    if total > updated:
        line += f", {total - updated} old pod(s) terminating"
    for condition in status.conditions or ():
        if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
            raise KubernetesApplyFailed(f"{metadata.name} did not roll out: {condition.message}")
    return observed and updated == wanted and available == wanted and total == updated, line


def wait_for_rollout(client: k8s.ApiClient, names: list[str], settings: PipelineSettings, report: Report) -> None:
    """Block until every Deployment in ``names`` has rolled out, reporting each change of its progress."""
    apps = k8s.AppsV1Api(client)
    deadline = time.monotonic() + settings.kubernetes_rollout_timeout_seconds
    last: dict[str, str] = {}
    pending = list(names)
    while pending:
        for name in list(pending):
            finished, line = rollout_state(apps.read_namespaced_deployment_status(name, settings.kubernetes_namespace))
            if line != last.get(name):
                report(f"rollout {line}")
                last[name] = line
            if finished:
                pending.remove(name)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise KubernetesApplyFailed(
                f"the rollout did not finish within {settings.kubernetes_rollout_timeout_seconds:g} s: "
                + "; ".join(last[name] for name in pending)
            )
        time.sleep(settings.kubernetes_poll_seconds)


def run_smoke_job(client: k8s.ApiClient, job: dict, settings: PipelineSettings, report: Report) -> dict:
    """Replace the previous smoke Job with ``job``, wait for it, and return the JSON line its pod printed."""
    batch, core = k8s.BatchV1Api(client), k8s.CoreV1Api(client)
    name, namespace = job["metadata"]["name"], settings.kubernetes_namespace
    try:
        batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
        report(f"smoke test: removed the previous Job {name}")
    except ApiException as error:
        if error.status != 404:
            raise _refused(job, error) from None
    uid = server_side_apply(client, job).metadata.uid  # pods of an earlier run of the Job may linger: select this one's
    report(f"smoke test: Job {name} scores an image through the entry Service")
    deadline = time.monotonic() + settings.kubernetes_rollout_timeout_seconds
    while True:
        status = batch.read_namespaced_job_status(name, namespace).status or k8s.V1JobStatus()
        if status.succeeded or status.failed:
            break
        if time.monotonic() > deadline:
            raise KubernetesApplyFailed(
                f"the smoke-test Job {name} did not finish within {settings.kubernetes_rollout_timeout_seconds:g} s"
            )
        time.sleep(settings.kubernetes_poll_seconds)
    pod_names = [
        pod.metadata.name
        for pod in core.list_namespaced_pod(namespace, label_selector=f"{JOB_UID_LABEL}={uid}").items
        if pod.metadata
    ]
    log = core.read_namespaced_pod_log(str(pod_names[-1]), namespace) if pod_names else ""
    last_line = log.strip().splitlines()[-1] if log.strip() else ""
    if not status.succeeded:
        raise KubernetesApplyFailed(f"the smoke test through the entry Service failed: {last_line or 'its pod left no log'}")
    try:
        return json.loads(last_line)
    except json.JSONDecodeError:
        raise KubernetesApplyFailed(f"the smoke-test Job {name} succeeded but printed no result: {last_line!r}") from None


def apply_and_check(manifests: list[dict], smoke_job: dict, settings: PipelineSettings, report: Report) -> dict:
    """Apply ``manifests`` (Namespace first), wait for the rollout, run the smoke test; its result."""
    with api_client(settings) as client:
        namespaces = [manifest for manifest in manifests if manifest["kind"] == "Namespace"]
        for manifest in namespaces:
            server_side_apply(client, manifest)
        check_secrets(client, smoke_job, settings)
        for manifest in manifests:
            if manifest["kind"] != "Namespace":
                server_side_apply(client, manifest)
                report(f"applied {manifest['kind']}/{manifest['metadata']['name']}")
        wait_for_rollout(client, [m["metadata"]["name"] for m in manifests if m["kind"] == "Deployment"], settings, report)
        return run_smoke_job(client, smoke_job, settings, report)


def kubeconfig_path(settings: PipelineSettings) -> Path:
    return (settings.kubeconfig or Path("~/.kube/config")).expanduser()


def report_progress(line: str) -> None:
    """Progress of an apply, said like every long step's (stdout stays the command's result)."""
    say(f"kubernetes: {line}")


def deploy_to_kubernetes(
    service: ServiceDefinition,
    image: str,
    replicas: int,
    device_profile: str | None = None,
    settings: PipelineSettings | None = None,
    *,
    devices_per_segment: Sequence[int] | None = None,
    render_dir: Path | None = None,
    report: Callable[[str], None] = report_progress,
) -> KubernetesResult:
    """Render the manifests into ``render_dir`` (default ``<home>/kubernetes/<name>/``); unless rendering only, apply
    them when a kubeconfig is present, wait for the rollout and smoke-test through the entry Service."""
    from fpgaflow.tasks.settings import get_pipeline_settings

    settings = settings or get_pipeline_settings()
    manifests = render_manifests(service, image, replicas, device_profile, settings, devices_per_segment)
    smoke_job = render_smoke_job(service, image, settings)
    directory = render_dir or settings.home / "kubernetes" / object_name(service.name)
    path = write_manifests(directory, manifests, smoke_job)
    objects = [f"{manifest['kind']}/{manifest['metadata']['name']}" for manifest in manifests]
    result = KubernetesResult(
        manifests_path=path, endpoint=entry_endpoint(service, settings), objects=objects, applied=False, manifests=manifests
    )
    secrets = "; ".join(secrets_to_create(settings))
    kubeconfig = kubeconfig_path(settings)
    if render_dir is not None:
        result.reason = f"rendered into {directory}; create the Secrets ({secrets}), then `kubectl apply -f {path}`"
        return result
    if not kubeconfig.is_file():
        result.reason = (
            f"no kubeconfig at {kubeconfig} (set FPGAFLOW_KUBECONFIG): the manifests are in {path}; "
            f"create the Secrets ({secrets}), then apply them with `kubectl apply -f {path}`"
        )
        return result
    result.smoke = apply_and_check(manifests, smoke_job, settings, report)
    result.applied = True
    return result
