"""Kubernetes manifests: validated against the API schema of the client's models, probes on gRPC health."""

from __future__ import annotations

import copy

import pytest
import yaml

from fpgaflow.fpga_runtime.errors import InvalidInput
from fpgaflow.fpga_runtime.service import load_service
from fpgaflow.tasks.deployment.kubernetes import (
    ManifestInvalid,
    deploy_to_kubernetes,
    object_name,
    render_manifests,
    validate_manifest,
)
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


def by_kind(manifests):
    return {manifest["kind"]: manifest for manifest in manifests}


def test_a_model_gets_a_deployment_service_and_autoscaler_that_match_the_api(service, settings):
    manifests = render_manifests(service, IMAGE, replicas=2, settings=settings)
    assert [manifest["kind"] for manifest in manifests] == ["Deployment", "Service", "HorizontalPodAutoscaler"]
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
        assert probe.grpc.port == settings.image_grpc_port
    assert container.resources.requests == {"cpu": settings.kubernetes_cpu_request, "memory": settings.kubernetes_memory_request}
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


def test_a_split_model_is_a_chain_of_deployments_each_handing_on_to_the_next_service(tmp_path, settings):
    source = write_residual_service(tmp_path / "deep")
    split_service(source, tmp_path / "split", small_device_profile(tmp_path / "profiles"), settings)
    manifests = render_manifests(load_service(tmp_path / "split"), IMAGE, 1, device_profile="arria10", settings=settings)
    deployments = [validate_manifest(m) for m in manifests if m["kind"] == "Deployment"]
    assert [d.metadata.name for d in deployments] == ["fpgaflow-deep", "fpgaflow-deep-s2"]
    first, second = (d.spec.template.spec.containers[0] for d in deployments)
    assert first.command[-2:] == ["-m", "fpgaflow.fpga_runtime.chain"]
    assert first.args[first.args.index("--next") + 1] == f"fpgaflow-deep-s2:{settings.image_grpc_port}"
    assert "--next" not in second.args and second.args[second.args.index("--segment") + 1] == "2"


def test_a_profile_file_is_refused_for_kubernetes(service, settings, tmp_path):
    with pytest.raises(InvalidInput, match="bundled device profiles only"):
        render_manifests(service, IMAGE, 1, device_profile=str(small_device_profile(tmp_path)), settings=settings)


def test_without_a_kubeconfig_the_manifests_are_written_and_the_result_says_how_to_apply_them(service, settings):
    result = deploy_to_kubernetes(service, IMAGE, 2, settings=settings)
    assert not result.applied and "no kubeconfig" in result.reason and "kubectl apply -f" in result.reason
    assert result.endpoint == f"fpgaflow-tiny-model-v2.inference.svc:{settings.image_grpc_port}"
    written = list(yaml.safe_load_all(result.manifests_path.read_text()))
    assert written == result.manifests and all(validate_manifest(manifest) for manifest in written)


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
    assert summary["endpoint"] == "fpgaflow-tiny.default.svc:8500" and "kubectl apply -f" in summary["deploy_reason"]
    written = get_pipeline_settings().home / "kubernetes" / "fpgaflow-tiny" / "manifests.yaml"
    assert [m["kind"] for m in yaml.safe_load_all(written.read_text())] == ["Deployment", "Service", "HorizontalPodAutoscaler"]
