"""``fpgaflow deploy --target kubernetes`` with a kubeconfig: server-side apply, rollout, smoke test through the Service.

Against :mod:`tests.fixtures.kubernetes_api`, a stand-in API server on a free port (no kube-apiserver can be
started on these machines): it records every request and advances each rollout one step per status read.
"""

from __future__ import annotations

import json

import pytest

from fpgaflow.flows.cli import main
from tests.fixtures.kubernetes_api import fake_kubernetes
from tests.fixtures.settings import reload_settings
from tests.fixtures.tiny_service import write_tiny_service

IMAGE = "registry.example/fpgaflow/tiny:4"
TOKEN = "stand-in-token"
SMOKE_LINE = json.dumps({"endpoint": "fpgaflow-tiny.fpgaflow.svc:8500", "model": "tiny", "outputs": {"probabilities": [1, 3]}})
SECRETS = {"fpgaflow-tls", "fpgaflow-api-keys"}


@pytest.fixture
def deploy_with_kubeconfig(tmp_path, monkeypatch):
    service_dir = write_tiny_service(tmp_path / "svc", name="tiny", version="4")

    def deploy(fake) -> int:
        monkeypatch.setenv("FPGAFLOW_KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig", TOKEN)))
        monkeypatch.setenv("FPGAFLOW_KUBERNETES_POLL_SECONDS", "0.01")
        reload_settings()
        return main(["deploy", str(service_dir), "--target", "kubernetes", "--image", IMAGE, "--replicas", "2", "--json"])

    yield deploy
    monkeypatch.undo()
    reload_settings()


def test_apply_is_server_side_waits_for_the_rollout_and_smoke_tests_through_the_service(deploy_with_kubeconfig, capsys):
    with fake_kubernetes(secrets=SECRETS, smoke_log=f"connecting\n{SMOKE_LINE}\n") as api:
        assert deploy_with_kubeconfig(api) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["smoke_test"] == json.loads(SMOKE_LINE) and "deploy_reason" not in summary

    applies = api.applied()
    assert {call.content_type for call in applies} == {"application/apply-patch+yaml"}
    assert all(call.query["fieldManager"] == ["fpgaflow"] and call.query["force"] == ["true"] for call in applies)
    assert {call.authorization for call in api.calls} == {f"Bearer {TOKEN}"}
    kinds = [call.body["kind"] for call in applies]
    assert kinds[0] == "Namespace" and kinds[-1] == "Job"
    assert sorted(kinds[1:-1]) == sorted(
        ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "NetworkPolicy"]
    )
    assert applies[0].path == "/api/v1/namespaces/fpgaflow"
    assert "/apis/apps/v1/namespaces/fpgaflow/deployments/fpgaflow-tiny" in [call.path for call in applies]
    methods = [(call.method, call.path.rsplit("/", 2)[-2:]) for call in api.calls]
    secret_reads = [index for index, (method, path) in enumerate(methods) if path[0] == "secrets"]
    assert len(secret_reads) == 2 and secret_reads[0] > 0  # after the Namespace, before any workload
    job_delete = methods.index(("DELETE", ["jobs", "fpgaflow-tiny-smoke"]))  # the last run's Job goes first
    assert api.calls[job_delete + 1].method == "PATCH" and api.calls[job_delete + 1].body["kind"] == "Job"

    progress = [line for line in captured.err.splitlines() if "rollout" in line]
    assert progress == [
        "kubernetes: rollout fpgaflow-tiny: 0/2 updated, 0/2 available",
        "kubernetes: rollout fpgaflow-tiny: 2/2 updated, 0/2 available",
        "kubernetes: rollout fpgaflow-tiny: 2/2 updated, 2/2 available",
    ]
    assert "smoke test: Job fpgaflow-tiny-smoke scores an image through the entry Service" in captured.err


def test_missing_secrets_stop_the_apply_with_the_commands_that_create_them(deploy_with_kubeconfig, capsys):
    with fake_kubernetes(secrets={"fpgaflow-tls"}) as api:
        assert deploy_with_kubeconfig(api) == 1
    error = capsys.readouterr().err
    assert "the Secrets fpgaflow-api-keys are missing in namespace fpgaflow" in error
    assert "kubectl -n fpgaflow create secret generic fpgaflow-api-keys --from-file=api-keys=KEYS_FILE" in error
    assert [call.body["kind"] for call in api.applied()] == ["Namespace"]  # no workload without its Secrets


def test_a_failed_smoke_test_fails_the_deploy_with_what_the_job_said(deploy_with_kubeconfig, capsys):
    refusal = "endpoint check of fpgaflow-tiny.fpgaflow.svc:8500: UNAUTHENTICATED: the API key is not valid"
    with fake_kubernetes(secrets=SECRETS, smoke_log=refusal, smoke_succeeds=False) as api:
        assert deploy_with_kubeconfig(api) == 1
    assert f"the smoke test through the entry Service failed: {refusal}" in capsys.readouterr().err
