"""Every manifest the kubernetes target renders, for a classifier (mutual TLS) and a split model whose second segment
holds a layer cut over three devices: valid against a current Kubernetes release's OpenAPI schemas (strict, offline,
``kubernetes-validate``) and passing checkov's Kubernetes policies (one run over both), each skip with its reason.

checkov lives in a virtual environment of its own (``.venv/checkov``, made by ``scripts/setup``): pip cannot
install it beside the pipeline's pinned packages without downgrading some of them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from fpgaflow.fpga_runtime.service import load_service
from fpgaflow.tasks.deployment.kubernetes_deploy import deploy_to_kubernetes
from fpgaflow.tasks.deployment.split import split_service
from fpgaflow.tasks.settings import PipelineSettings
from tests.fixtures.split_service import small_device_profile, write_residual_service
from tests.fixtures.tiny_service import write_tiny_service

IMAGE = "registry.example/fpgaflow/tiny:3"
CHECKOV = Path(sys.executable).parent.parent / "checkov" / "bin" / "checkov"
SKIP_ANNOTATION = "checkov.io/skip"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """The manifests of both models, each in a folder of its own under one root."""
    root = tmp_path_factory.mktemp("rendered")
    work = tmp_path_factory.mktemp("models")
    settings = PipelineSettings(home=work / "home", kubeconfig=work / "none", kubernetes_client_tls_secret="fpgaflow-clients")
    classifier = load_service(write_tiny_service(work / "tiny", name="tiny", version="3"))
    deploy_to_kubernetes(classifier, IMAGE, 2, settings=settings, render_dir=root / "classifier")
    split_service(write_residual_service(work / "deep"), work / "split", small_device_profile(work / "profiles"), settings)
    split = load_service(work / "split")
    server_tls_only = settings.model_copy(update={"kubernetes_client_tls_secret": ""})
    deploy_to_kubernetes(split, IMAGE, 1, "arria10", server_tls_only, devices_per_segment=(1, 3), render_dir=root / "split-model")
    return root


@pytest.fixture(scope="module")
def checkov_report(rendered):
    """checkov started over the rendered manifests now (it runs while the schema validation does); a function that
    waits for its JSON report."""
    if not CHECKOV.is_file():
        pytest.fail(f"checkov is not installed at {CHECKOV}: run scripts/setup")
    command = [str(CHECKOV), "-d", str(rendered), "--framework", "kubernetes", "--compact", "-o", "json", "--skip-download"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=rendered)

    def report() -> str:
        stdout, stderr = process.communicate(timeout=300)
        assert stdout.strip(), f"checkov printed no report: {stderr[-2000:]}"
        return stdout

    yield report
    if process.poll() is None:
        process.kill()
        process.communicate()


def documents(root: Path) -> list[dict]:
    return [document for path in sorted(root.rglob("*.yaml")) for document in yaml.safe_load_all(path.read_text())]


def test_every_manifest_is_valid_against_the_kubernetes_openapi_schema_strictly(rendered, checkov_report):
    version = kubernetes_validate.latest_version()
    manifests = documents(rendered)
    assert {m["kind"] for m in manifests} >= {"Namespace", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "Job"}
    assert sum(m["kind"] == "Deployment" for m in manifests) == 3  # the classifier's and both segments
    problems = []
    for manifest in manifests:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{manifest['kind']} {manifest['metadata']['name']}: {error.message}")
    assert problems == []


def test_checkov_finds_no_failed_check_and_every_skip_names_its_reason(rendered, checkov_report):
    stdout = checkov_report()
    report = json.loads(stdout)
    results, summary = report["results"], report["summary"]
    failed = [f"{check['check_id']} {check['check_name']} in {check['resource']}" for check in results.get("failed_checks", [])]
    assert failed == [] and summary["parsing_errors"] == 0
    assert summary["passed"] > 100

    annotated = {
        value.split("=", 1)[0]: value.split("=", 1)[1]
        for manifest in documents(rendered)
        for key, value in manifest["metadata"].get("annotations", {}).items()
        if key.startswith(SKIP_ANNOTATION)
    }
    skipped = results.get("skipped_checks", [])
    assert {check["check_id"] for check in skipped} == set(annotated)  # each skip annotated is one checkov made
    for check in skipped:
        assert check["check_id"] in annotated and annotated[check["check_id"]].strip()
        assert check["check_result"]["suppress_comment"] == annotated[check["check_id"]]
