"""TLS and mutual TLS of a node and of the gateway, with a CA, server and client certificates made here.

A node serving TLS (a Kubernetes pod) answers plaintext health on a port of its own for probes; the
gateway refuses to listen beyond loopback without TLS.
"""

from __future__ import annotations

import json

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fpgaflow.flows.cli import main
from fpgaflow.fpga_runtime import endpoint_check
from fpgaflow.fpga_runtime.client import PredictionClient
from fpgaflow.fpga_runtime.cluster.gateway import Gateway
from fpgaflow.fpga_runtime.errors import FpgaflowError, PredictionError
from fpgaflow.fpga_runtime.server import create_server
from fpgaflow.fpga_runtime.settings import Settings
from fpgaflow.fpga_runtime.tls import channel_credentials
from fpgaflow.tasks.operations.monitoring import monitor_endpoint
from fpgaflow.tasks.operations.scoring import ACCURACY
from tests.fixtures.certificates import make_certificates
from tests.fixtures.labelled_images import HOLDOUT_CORRECT, HOLDOUT_IMAGES, write_labelled_folder
from tests.integration.runtime.conftest import READY_TIMEOUT

KEY = "primary-key-0123456789"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("certificates"))


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "api-keys"
    path.write_text(f"# primary, then secondary\n{KEY}\nsecondary-key-0123456789\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def mutual_tls_node(service_dir, certificates, keys_file, tmp_path_factory):
    """A node as a Kubernetes pod runs it: mutual TLS and API keys from files, plaintext health on its own port."""
    settings = Settings(
        home=tmp_path_factory.mktemp("home"),
        server_api_keys_file=keys_file,
        server_tls_cert_file=certificates.server_cert,
        server_tls_key_file=certificates.server_key,
        server_tls_client_ca_file=certificates.ca,
        server_health_port=0,
    )
    node, _port = create_server(service_dir, "127.0.0.1:0", device_profile="arria10", settings=settings)
    node.start()
    node.wait_until_ready(READY_TIMEOUT)
    yield node
    node.stop(0).wait()


def client(node, **tls) -> PredictionClient:
    return PredictionClient("127.0.0.1", node.port, access_token=KEY, retries=0, timeout=10, **tls)


def health_status(channel: grpc.Channel) -> str:
    response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def test_mutual_tls_scores_with_a_client_certificate_and_refuses_a_client_without_one(mutual_tls_node, certificates, images):
    with client(mutual_tls_node, ca_cert=certificates.ca, cert=certificates.client_cert, key=certificates.client_key) as good:
        assert good.score_images(images).shape == (len(images), 3)
    no_certificate = "requires mutual TLS, present a client certificate: --cert and --key"
    with (
        client(mutual_tls_node, ca_cert=certificates.ca) as without,
        pytest.raises(PredictionError, match=no_certificate) as refused,
    ):
        without.score_images(images)
    assert refused.value.status is grpc.StatusCode.UNAVAILABLE
    with client(mutual_tls_node) as plaintext, pytest.raises(PredictionError, match="if the server speaks TLS"):
        plaintext.score_images(images)


def test_probes_get_plaintext_health_on_their_own_port(mutual_tls_node):
    with grpc.insecure_channel(f"127.0.0.1:{mutual_tls_node.health_port}") as channel:
        assert health_status(channel) == "SERVING"
        with pytest.raises(grpc.RpcError) as no_scoring:  # the health port answers health only
            channel.unary_unary("/tensorflow.serving.PredictionService/Predict")(b"", timeout=10)
    assert no_scoring.value.code() is grpc.StatusCode.UNIMPLEMENTED


def test_score_takes_the_ca_and_a_client_certificate(mutual_tls_node, certificates, images, tmp_path, capsys):
    image, token = tmp_path / "digit.jpg", tmp_path / "token"
    image.write_bytes(images[0])
    token.write_text(KEY)
    address = f"127.0.0.1:{mutual_tls_node.port}"
    tls = ["--ca-cert", str(certificates.ca), "--cert", str(certificates.client_cert), "--key", str(certificates.client_key)]
    assert main(["score", str(image), "--address", address, "--retries", "0", "--token-file", str(token), *tls]) == 0
    assert str(image) in capsys.readouterr().out
    assert (
        main(
            [
                "score",
                str(image),
                "--address",
                address,
                "--ca-cert",
                str(certificates.ca),
                "--cert",
                str(certificates.client_cert),
            ]
        )
        == 2
    )
    assert "--cert and --key go together" in capsys.readouterr().err
    assert main(["score", str(image), "--address", address, "--ca-cert", str(tmp_path / "absent.pem")]) == 2
    assert "--ca-cert" in capsys.readouterr().err


def test_the_kubernetes_smoke_job_command_scores_through_mutual_tls_with_a_key_file(
    mutual_tls_node, certificates, keys_file, capsys
):
    address = f"localhost:{mutual_tls_node.port}"
    tls = ["--ca-cert", str(certificates.ca), "--cert", str(certificates.client_cert), "--key", str(certificates.client_key)]
    assert endpoint_check.main([address, "--model", "tiny", "--keys-file", str(keys_file), *tls]) == 0
    assert json.loads(capsys.readouterr().out) == {"endpoint": address, "model": "tiny", "outputs": {"probabilities": [1, 3]}}
    assert endpoint_check.main([address, "--model", "tiny", *tls]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err


def test_the_monitor_scores_its_holdout_over_mutual_tls(mutual_tls_node, service_dir, certificates, tmp_path):
    holdout = write_labelled_folder(tmp_path / "holdout", service_dir)
    tls = {"ca_cert": str(certificates.ca), "cert": str(certificates.client_cert), "key": str(certificates.client_key)}
    address = f"localhost:{mutual_tls_node.port}"
    result = monitor_endpoint(address, holdout, "tiny", 0.5, access_token=KEY, tls=tls, measure_of=lambda task: ACCURACY)
    assert (result.report.images, result.report.correct) == (HOLDOUT_IMAGES, HOLDOUT_CORRECT)


def test_the_gateway_refuses_to_listen_beyond_loopback_without_tls(tmp_path):
    with pytest.raises(FpgaflowError, match="refuses to listen on 0.0.0.0 without TLS.*gateway_tls_cert_file"):
        Gateway("0.0.0.0:0", Settings(home=tmp_path))


def test_the_gateway_serves_mutual_tls_on_all_interfaces(certificates, tmp_path):
    settings = Settings(
        home=tmp_path,
        gateway_tls_cert_file=certificates.server_cert,
        gateway_tls_key_file=certificates.server_key,
        gateway_tls_client_ca_file=certificates.ca,
    )
    gateway = Gateway("0.0.0.0:0", settings)
    gateway.start()
    try:
        address = f"localhost:{gateway.port}"
        trusted = channel_credentials(certificates.ca, certificates.client_cert, certificates.client_key)
        with grpc.secure_channel(address, trusted) as channel:
            assert health_status(channel) == "NOT_SERVING"  # answered over mutual TLS; no model placed yet
        untrusted = channel_credentials(certificates.ca)
        with grpc.secure_channel(address, untrusted) as channel, pytest.raises(grpc.RpcError) as refused:
            health_status(channel)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        gateway.stop(0)
