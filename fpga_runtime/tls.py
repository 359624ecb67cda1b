"""TLS on both sides of a call: server credentials from PEM files (mutual TLS when a client CA is given),
channel credentials for clients, and which interfaces may be served without TLS (loopback only).

Errors name the file and the setting or option it came from, never the content of a key.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import grpc

from fpgaflow.fpga_runtime.errors import FpgaflowError

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


def read_pem(path: Path, what: str) -> bytes:
    """The bytes of a PEM file; an error says which file (``what``) could not be read or is not PEM."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise FpgaflowError(f"cannot read the {what} {path}: {error.strerror or error}") from None
    if b"-----BEGIN " not in data:
        raise FpgaflowError(f"the {what} {path} is not PEM")
    return data


def server_credentials(
    certificate: Path | None, key: Path | None, client_ca: Path | None, who: str
) -> grpc.ServerCredentials | None:
    """TLS credentials of ``who`` (``gateway`` or ``server``, the prefix of its settings); None when neither the
    certificate nor the key is set. With ``client_ca`` every client must present a certificate it signed."""
    if certificate is None and key is None:
        if client_ca is not None:
            raise FpgaflowError(
                f"{who}_tls_client_ca_file asks for mutual TLS, which needs {who}_tls_cert_file and {who}_tls_key_file"
            )
        return None
    if certificate is None or key is None:
        missing = f"{who}_tls_cert_file" if certificate is None else f"{who}_tls_key_file"
        raise FpgaflowError(f"TLS needs both a certificate and a key file: {missing} is not set")
    pair = (read_pem(key, f"{who}'s TLS key"), read_pem(certificate, f"{who}'s TLS certificate"))
    if client_ca is None:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials(
        [pair], root_certificates=read_pem(client_ca, f"{who}'s client CA"), require_client_auth=True
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 optionally in brackets) is this machine's loopback interface."""
    bare = host.strip("[]").lower()
    if bare in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


def channel_credentials(
    ca_cert: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    *,
    root_certificates: bytes | None = None,
) -> grpc.ChannelCredentials:
    """A client's TLS: trust ``ca_cert`` (or the PEM bytes ``root_certificates``; default: the system's roots);
    present ``cert`` and ``key`` for mutual TLS."""
    if (cert is None) != (key is None):
        raise FpgaflowError("a client certificate needs its key and a key its certificate: give both --cert and --key")
    return grpc.ssl_channel_credentials(
        root_certificates=read_pem(ca_cert, "CA certificate") if ca_cert is not None else root_certificates,
        private_key=read_pem(key, "client key") if key is not None else None,
        certificate_chain=read_pem(cert, "client certificate") if cert is not None else None,
    )
