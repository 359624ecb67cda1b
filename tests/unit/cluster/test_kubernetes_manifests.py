"""Kubernetes manifests: what production clusters ask of the pods, validated against the client's models of the API.

The strict OpenAPI validation and the checkov policy check of every rendered manifest: test_kubernetes_policy.py.
"""

from __future__ import annotations

import copy

import pytest
import yaml

from fpgaflow.fpga_runtime.errors import InvalidInput
from fpgaflow.fpga_runtime.service import load_service
from fpgaflow.tasks.deployment.kubernetes import (
    ManifestInvalid,
    object_name,
    render_manifests,
    validate_manifest,
)
from fpgaflow.tasks.deployment.kubernetes_deploy import deploy_to_kubernetes
from fpgaflow.tasks.deployment.split import split_service
from fpgaflow.tasks.packaging.image_build import SERVICE_PATH
from fpgaflow.tasks.settings import PipelineSettings
from tests.fixtures.settings import reload_settings
from tests.fixtures.split_service import small_device_profile, write_residual_service
from tests.fixtures.tiny_service import write_tiny_service

IMAGE = "registry.example/fpgaflow/tiny:3"


@pytest.fixture
def settings(tmp_path):
    return PipelineSettings(home=tmp_path / "home", kubeconfig=tmp_path / "no-kubeconfig", kubernetes_namespace="inference")


@pytest.fixture
def service(tmp_path):
    return load_service(write_tiny_service(tmp_path / "svc", name="Tiny_Model.v2", version="3"))


KINDS = ["Namespace", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "NetworkPolicy"]


def by_kind(manifests):
    """The first manifest of each kind."""
    return {manifest["kind"]: manifest for manifest in reversed(manifests)}


def test_a_model_gets_a_deployment_service_and_autoscaler_that_match_the_api(service, settings):
    manifests = render_manifests(service, IMAGE, replicas=2, settings=settings)
    assert [manifest["kind"] for manifest in manifests] == KINDS
    deployment = validate_manifest(by_kind(manifests)["Deployment"])
    assert deployment.metadata.name == "fpgaflow-tiny-model-v2" and deployment.metadata.namespace == "inference"
    assert deployment.spec.replicas == 2
    assert deployment.spec.strategy.rolling_update.max_unavailable == 0
    pod = deployment.spec.template.spec
    assert len(pod.containers) == 1
    container = pod.containers[0]
    assert container.image == IMAGE and container.args[:1] == [SERVICE_PATH]
    assert container.args[container.args.index("--device") + 1] == settings.device_profile
    for probe in (container.readiness_probe, container.liveness_probe, container.startup_probe):
        assert probe.grpc.port == settings.kubernetes_health_port
    assert container.resources.requests == {"cpu": settings.kubernetes_cpu_request, "memory": settings.kubernetes_memory_request}
    assert container.resources.limits == {"cpu": settings.kubernetes_cpu_limit, "memory": settings.kubernetes_memory_request}
    assert deployment.spec.selector.match_labels.items() <= deployment.spec.template.metadata.labels.items()

    service_object = validate_manifest(by_kind(manifests)["Service"])
    assert service_object.spec.selector == deployment.spec.selector.match_labels
    assert service_object.spec.ports[0].port == settings.image_grpc_port and service_object.spec.ports[0].app_protocol == "grpc"

    autoscaler = validate_manifest(by_kind(manifests)["HorizontalPodAutoscaler"])
    assert autoscaler.spec.scale_target_ref.name == deployment.metadata.name
    assert (autoscaler.spec.min_replicas, autoscaler.spec.max_replicas) == (2, settings.kubernetes_max_replicas)
    assert autoscaler.spec.metrics[0].resource.target.average_utilization == settings.kubernetes_target_cpu_percent


def test_the_autoscaler_never_goes_below_the_replicas_asked(service, settings):
    autoscaler = by_kind(render_manifests(service, IMAGE, replicas=12, settings=settings))["HorizontalPodAutoscaler"]
    assert autoscaler["spec"]["minReplicas"] == autoscaler["spec"]["maxReplicas"] == 12


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        (("spec", "template", "spec", "containers", 0, "readinessProbe", "grpcHealth"), {"port": 1}, "Extra inputs"),
        (("spec", "replicas"), "2", "valid integer"),
        (("spec", "template", "spec", "containers", 0, "name"), None, "valid string"),
    ],
)
def test_validation_refuses_unknown_fields_wrong_types_and_missing_required_ones(service, settings, path, value, problem):
    manifest = copy.deepcopy(by_kind(render_manifests(service, IMAGE, 1, settings=settings))["Deployment"])
    target = manifest
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ManifestInvalid, match=problem):
        validate_manifest(manifest)


def test_pods_run_locked_down_with_tls_and_keys_from_secrets_as_files(service, settings):
    manifests = render_manifests(
        service, IMAGE, replicas=2, settings=settings.model_copy(update={"kubernetes_client_tls_secret": "clients"})
    )
    pod = by_kind(manifests)["Deployment"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] >= 10000
    container = pod["containers"][0]
    locked = container["securityContext"]
    assert locked["readOnlyRootFilesystem"] and not locked["allowPrivilegeEscalation"] and not locked["privileged"]
    assert locked["capabilities"] == {"drop": ["ALL"]} and locked["seccompProfile"] == {"type": "RuntimeDefault"}
    secrets = {volume["name"]: volume["secret"]["secretName"] for volume in pod["volumes"] if "secret" in volume}
    assert secrets == {
        "tls": settings.kubernetes_tls_secret,
        "api-keys": settings.kubernetes_api_keys_secret,
        "client-ca": "clients",
    }
    mounted = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    environment = {variable["name"]: variable["value"] for variable in container["env"]}
    assert all("valueFrom" not in variable for variable in container["env"])  # never a Secret in a variable
    assert environment["FPGAFLOW_SERVER_TLS_CERT_FILE"] == f"{mounted['tls']}/tls.crt"
    assert environment["FPGAFLOW_SERVER_API_KEYS_FILE"].startswith(mounted["api-keys"])
    assert environment["FPGAFLOW_SERVER_TLS_CLIENT_CA_FILE"] == f"{mounted['client-ca']}/ca.crt"
    assert environment["FPGAFLOW_SERVER_HEALTH_PORT"] == str(settings.kubernetes_health_port)
    labels = by_kind(manifests)["Deployment"]["metadata"]["labels"]
    assert {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version"} <= labels.keys()
    assert labels["app.kubernetes.io/managed-by"] == "fpgaflow" and labels["app.kubernetes.io/component"] == "entry"

    budget = by_kind(manifests)["PodDisruptionBudget"]["spec"]
    assert budget == {"maxUnavailable": 1, "selector": by_kind(manifests)["Deployment"]["spec"]["selector"]}
    entry_policy, smoke_policy = (m["spec"] for m in manifests if m["kind"] == "NetworkPolicy")
    assert entry_policy["ingress"] == [{"ports": [{"port": "grpc", "protocol": "TCP"}]}]  # the gRPC port, from anywhere
    assert smoke_policy["ingress"] == []
    assert by_kind(manifests)["Namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_a_split_model_is_a_chain_of_deployments_each_handing_on_to_the_next_service(tmp_path, settings):
    source = write_residual_service(tmp_path / "deep")
    split_service(source, tmp_path / "split", small_device_profile(tmp_path / "profiles"), settings)
    manifests = render_manifests(
        load_service(tmp_path / "split"), IMAGE, 1, device_profile="arria10", settings=settings, devices_per_segment=(1, 3)
    )
    deployments = [validate_manifest(m) for m in manifests if m["kind"] == "Deployment"]
    assert [d.metadata.name for d in deployments] == ["fpgaflow-deep", "fpgaflow-deep-s2"]
    first, second = (d.spec.template.spec.containers[0] for d in deployments)
    assert first.command[-2:] == ["-m", "fpgaflow.fpga_runtime.chain"]
    assert first.args[first.args.index("--next") + 1] == f"fpgaflow-deep-s2:{settings.image_grpc_port}"
    assert "--next" not in second.args and second.args[second.args.index("--segment") + 1] == "2"
    assert "--devices" not in first.args and second.args[second.args.index("--devices") + 1] == "3"
    assert second.resources.requests["cpu"] == str(3 * int(settings.kubernetes_cpu_request))
    assert second.resources.limits["memory"] == "6Gi" and deployments[1].metadata.annotations["fpgaflow/devices-per-pod"] == "3"
    assert {v.name for v in first.env} >= {"FPGAFLOW_SERVER_TLS_CERT_FILE", "FPGAFLOW_SERVER_API_KEYS_FILE"}
    assert second.env is None and len(second.volume_mounts) == 2  # TLS and keys at the entry only: state and /tmp here
    assert first.readiness_probe.grpc.port == settings.kubernetes_health_port  # the entry's plaintext health port
    assert second.readiness_probe.grpc.port == settings.image_grpc_port  # an inner segment: plaintext, health on gRPC
    inner_policy = next(m for m in manifests if m["kind"] == "NetworkPolicy" and m["metadata"]["name"] == "fpgaflow-deep-s2")
    assert inner_policy["spec"]["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "fpgaflow-deep"}}}
    ]
    with pytest.raises(InvalidInput, match="devices per segment must be 2 counts"):
        render_manifests(load_service(tmp_path / "split"), IMAGE, 1, "arria10", settings, devices_per_segment=(1,))


def test_a_profile_file_is_refused_for_kubernetes(service, settings, tmp_path):
    with pytest.raises(InvalidInput, match="bundled device profiles only"):
        render_manifests(service, IMAGE, 1, device_profile=str(small_device_profile(tmp_path)), settings=settings)


def test_without_a_kubeconfig_the_manifests_are_written_and_the_result_says_how_to_apply_them(service, settings):
    result = deploy_to_kubernetes(service, IMAGE, 2, settings=settings)
    assert not result.applied and "no kubeconfig" in result.reason and "kubectl apply -f" in result.reason
    assert "kubectl -n inference create secret generic fpgaflow-tls --type kubernetes.io/tls" in result.reason
    assert result.endpoint == f"fpgaflow-tiny-model-v2.inference.svc:{settings.image_grpc_port}"
    written = list(yaml.safe_load_all(result.manifests_path.read_text()))
    assert written == result.manifests and all(validate_manifest(manifest) for manifest in written)
    smoke_job = yaml.safe_load((result.manifests_path.parent / "smoke-job.yaml").read_text())
    assert validate_manifest(smoke_job).spec.template.spec.containers[0].args[0] == result.endpoint


def test_object_names_are_dns_labels():
    assert object_name("Resnet_50.cats") == "fpgaflow-resnet-50-cats"
    long = object_name("m" * 80, segment=3)
    assert len(long) <= 63 and long.endswith("-s3")


def test_fpgaflow_deploy_to_kubernetes_without_a_kubeconfig_writes_the_manifests(tmp_path, monkeypatch, capsys):
    import json

    from fpgaflow.flows.cli import main
    from fpgaflow.tasks.settings import get_pipeline_settings

    monkeypatch.setenv("FPGAFLOW_KUBECONFIG", str(tmp_path / "absent"))
    reload_settings()
    service_dir = write_tiny_service(tmp_path / "svc", name="tiny", version="4")
    assert main(["deploy", str(service_dir), "--target", "kubernetes", "--image", IMAGE, "--replicas", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["target"], summary["replicas"], summary["image"]) == ("kubernetes", 2, IMAGE)
    assert summary["endpoint"] == "fpgaflow-tiny.fpgaflow.svc:8500" and "kubectl apply -f" in summary["deploy_reason"]
    written = get_pipeline_settings().home / "kubernetes" / "fpgaflow-tiny" / "manifests.yaml"
    assert [m["kind"] for m in yaml.safe_load_all(written.read_text())] == KINDS

    rendered = tmp_path / "rendered"  # --render: that folder only, nothing applied even with a kubeconfig
    monkeypatch.setenv("FPGAFLOW_KUBECONFIG", str(tmp_path / "svc" / "service.json"))
    reload_settings()
    assert main(["deploy", str(service_dir), "--target", "kubernetes", "--render", str(rendered)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("rendered tiny version 4 on kubernetes") and f"kubectl apply -f {rendered}" in printed
    assert [
        m["image"]
        for m in yaml.safe_load(rendered.joinpath("smoke-job.yaml").read_text())["spec"]["template"]["spec"]["containers"]
    ] == ["fpgaflow/tiny:4"]
    assert main(["deploy", str(service_dir), "--target", "local", "--render", str(rendered)]) == 1
    assert "--render writes Kubernetes manifests: it needs --target kubernetes" in capsys.readouterr().err
