"""Security of the serving side: TLS and rotating API keys at the gateway, names that never become paths,
build contexts without credentials or user data.

Containers running as a non-root user are tested where the image is made:
tests/unit/image/test_dockerfile.py (USER in the Dockerfile) and tests/integration/image (the built image).
"""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fpgaflow.fpga_runtime.client import PredictionClient
from fpgaflow.fpga_runtime.cluster.daemon import cluster_client
from fpgaflow.fpga_runtime.cluster.security import read_api_keys
from fpgaflow.fpga_runtime.errors import FpgaflowError, PredictionError
from fpgaflow.fpga_runtime.service import check_name, load_service
from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.packaging.image_build import default_tag, write_build_context
from fpgaflow.tasks.packaging.service_dir import default_service_dir
from fpgaflow.tasks.settings import PipelineSettings
from tests.fixtures.tiny_service import encoded_images, write_tiny_service
from tests.integration.cluster.conftest import eventually, running_cluster, status
from tests.reliability.conftest import MODEL

PRIMARY, SECONDARY, NEXT_PRIMARY, NEXT_SECONDARY = (
    f"key-{word}-0123456789abcdef" for word in ("alpha", "bravo", "charlie", "delta")
)
BAD_NAMES = ["../x", "a/b", "/etc/passwd", "", "x" * 64, "..", "a\\b", "name with space", "-leading-dash", "a/../../b"]


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    certificate_path, key_path = directory / "gateway.crt", directory / "gateway.key"
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return certificate_path, key_path


def write_keys(path: Path, *keys: str) -> None:
    path.write_text("# primary, then secondary\n" + "\n".join(keys) + "\n")
    path.chmod(0o600)


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """A 1-node cluster whose gateway serves TLS and takes keys from a key file; tiny deployed."""
    directory = tmp_path_factory.mktemp("secured")
    certificate, key = self_signed_certificate(directory)
    keys_file = directory / "api-keys"
    write_keys(keys_file, PRIMARY, SECONDARY)
    service = write_tiny_service(directory / "tiny", name=MODEL, version="7")
    patch = pytest.MonkeyPatch()
    patch.setenv("FPGAFLOW_GATEWAY_TLS_CERT_FILE", str(certificate))
    patch.setenv("FPGAFLOW_GATEWAY_TLS_KEY_FILE", str(key))
    patch.setenv("FPGAFLOW_GATEWAY_API_KEYS_FILE", str(keys_file))
    try:
        with running_cluster(directory / "home", nodes=1) as settings:
            with cluster_client(settings) as client:
                client.deploy(str(service), 1)
            eventually(lambda: status(settings)["models"][0]["healthy_replicas"] == 1, what="tiny healthy")
            yield settings, certificate.read_bytes(), keys_file
    finally:
        patch.undo()


def tls_client(settings, token: str | None, root_certificates: bytes | None, use_ssl: bool = True) -> PredictionClient:
    host, port = status(settings)["gateway"]["address"].rsplit(":", 1)
    return PredictionClient(
        host,
        int(port),
        use_ssl=use_ssl,
        access_token=token,
        service_name=MODEL,
        retries=0,
        timeout=10,
        root_certificates=root_certificates,
    )


def score_status(settings, token: str | None, root: bytes, use_ssl: bool = True) -> str:
    with tls_client(settings, token, root, use_ssl) as client:
        try:
            client.score_images(encoded_images(1))
        except PredictionError as error:
            return error.status.name
    return "OK"


def reload_keys_with_the_cli(settings: PipelineSettings) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "fpgaflow.flows", "cluster", "reload-keys"],
        capture_output=True,
        text=True,
        env={**_environment(), "FPGAFLOW_HOME": str(settings.home)},
        timeout=120,
        check=True,
    )
    return done.stdout


def _environment() -> dict[str, str]:
    import os

    return dict(os.environ)


def test_the_gateway_speaks_tls_and_the_client_verifies_it(secured):
    settings, root, _ = secured
    assert score_status(settings, PRIMARY, root) == "OK"
    assert score_status(settings, PRIMARY, root, use_ssl=False) == "UNAVAILABLE"  # plaintext to a TLS port
    other_root = self_signed_certificate(settings.home)[0].read_bytes()
    assert score_status(settings, PRIMARY, other_root) == "UNAVAILABLE"  # a certificate the client does not trust


def test_a_missing_or_wrong_key_is_unauthenticated(secured):
    settings, root, _ = secured
    assert score_status(settings, None, root) == "UNAUTHENTICATED"
    assert score_status(settings, "not-a-key", root) == "UNAUTHENTICATED"
    assert score_status(settings, SECONDARY, root) == "OK"


def test_keys_rotate_without_downtime_and_are_never_logged(secured):
    settings, root, keys_file = secured
    failures: list[str] = []
    done = threading.Event()
    served = [0]

    def keep_scoring_with_the_secondary() -> None:  # a client that keeps its key through the first rotation
        with tls_client(settings, SECONDARY, root) as client:
            while not done.is_set():
                try:
                    client.score_images(encoded_images(1))
                    served[0] += 1
                except PredictionError as error:
                    failures.append(str(error))

    scorer = threading.Thread(target=keep_scoring_with_the_secondary)
    scorer.start()
    try:
        eventually(lambda: served[0] >= 10, what="10 requests with the secondary key")
        write_keys(keys_file, NEXT_PRIMARY, SECONDARY)  # regenerate the primary; clients on the secondary go on
        with cluster_client(settings) as client:
            assert client.reload_keys() == {"api_keys": 2}
        assert score_status(settings, PRIMARY, root) == "UNAUTHENTICATED"
        assert score_status(settings, NEXT_PRIMARY, root) == "OK"
        at_rotation = served[0]
        eventually(lambda: served[0] >= at_rotation + 10, what="10 more requests with the secondary key after the rotation")
    finally:
        done.set()
        scorer.join(30)
    assert failures == []

    write_keys(keys_file, NEXT_PRIMARY, NEXT_SECONDARY)  # then the secondary, through the command line
    assert "2 API key(s)" in reload_keys_with_the_cli(settings)
    assert score_status(settings, SECONDARY, root) == "UNAUTHENTICATED"
    assert score_status(settings, NEXT_SECONDARY, root) == "OK"

    keys_file.write_text("# nothing\n")  # an empty key file would switch authentication off: refused, old keys kept
    with cluster_client(settings) as client, pytest.raises(FpgaflowError, match="holds no key"):
        client.reload_keys()
    assert score_status(settings, None, root) == "UNAUTHENTICATED"
    assert score_status(settings, NEXT_PRIMARY, root) == "OK"

    logs = "".join(path.read_text(errors="replace") for path in settings.home.rglob("*.log"))
    assert "API keys reloaded" in logs
    for key in (PRIMARY, SECONDARY, NEXT_PRIMARY, NEXT_SECONDARY):
        assert key not in logs


def test_a_key_file_line_that_is_no_key_is_refused_without_echoing_it(tmp_path):
    path = tmp_path / "keys"
    path.write_text("good-key\nsecret with spaces\n")
    with pytest.raises(FpgaflowError) as raised:
        read_api_keys(path)
    assert "line 2" in str(raised.value) and "secret" not in str(raised.value)
    with pytest.raises(FpgaflowError, match="cannot read the API key file"):
        read_api_keys(tmp_path / "missing")


# -- names never become paths ----------------------------------------------------------------------


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused_everywhere_a_name_reaches_a_path(name, tmp_path):
    with pytest.raises(ValueError, match="invalid"):
        check_name(name)
    with pytest.raises(ValueError, match="invalid"):
        default_service_dir(name, "1", PipelineSettings(home=tmp_path))
    with pytest.raises(ValueError, match="invalid"):
        default_service_dir("tiny", name, PipelineSettings(home=tmp_path))
    if name:  # an empty model name means "the data folder's name", itself checked
        with pytest.raises(ValueError, match="invalid"):
            PipelineConfig(data_dir=tmp_path, model_name=name)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_service_json_with_a_bad_name_is_refused_before_a_node_or_an_image_uses_it(name, tmp_path):
    service_dir = write_tiny_service(tmp_path / "service")
    text = (service_dir / "service.json").read_text().replace('"name": "tiny"', f'"name": {name!r}'.replace("'", '"'), 1)
    (service_dir / "service.json").write_text(text.replace("\\", "\\\\"))
    with pytest.raises(FpgaflowError):
        load_service(service_dir)


def test_image_tags_come_from_validated_names_only(tmp_path):
    service = load_service(write_tiny_service(tmp_path / "service", name="tiny.model_2", version="3"))
    assert default_tag(service) == "fpgaflow/tiny-model-2:3"  # one repository path component, Docker's characters


def test_a_stage_file_outside_the_service_directory_is_refused(tmp_path):
    service_dir = write_tiny_service(tmp_path / "service")
    text = (service_dir / "service.json").read_text().replace('"featurizer.onnx"', '"../../etc/passwd"', 1)
    (service_dir / "service.json").write_text(text)
    with pytest.raises(FpgaflowError):
        load_service(service_dir)


# -- build context hygiene -------------------------------------------------------------------------


def test_the_build_context_never_holds_credentials_or_user_data(tmp_path, image_home):
    project = tmp_path / "project"
    service_dir = write_tiny_service(project / "services" / "tiny" / "7", name="tiny", version="7")
    (project / ".env").write_text("AWS_SECRET_ACCESS_KEY=do-not-ship-me\n")
    (project / "services" / "tiny" / "credentials.json").write_text('{"token": "do-not-ship-me"}')
    (project / "data" / "cats").mkdir(parents=True)
    (project / "data" / "cats" / "cat-0.jpg").write_bytes(encoded_images(1)[0])
    (image_home / "mlflow.db").write_bytes(b"SQLite format 3\0do-not-ship-me")
    (image_home / "api-keys").write_text("do-not-ship-me\n")

    context = tmp_path / "context"
    write_build_context(service_dir, context, base_image="python:3.11-slim", settings=PipelineSettings(home=image_home))
    shipped = [path for path in context.rglob("*") if path.is_file()]
    assert not {path.name for path in shipped} & {".env", "credentials.json", "cat-0.jpg", "mlflow.db", "api-keys"}
    assert not any(b"do-not-ship-me" in path.read_bytes() for path in shipped)
    assert {path.relative_to(context).parts[0] for path in shipped} == {"service", "runtime", "wheels", "Dockerfile"}
    assert sorted(path.name for path in (context / "service").iterdir()) == sorted(path.name for path in service_dir.iterdir())
