"""The security settings of the gateway and of a node made real: API keys from settings and a key file, TLS credentials.

The key file holds one key per line (primary first, then secondary; blank lines and ``#`` lines
are skipped). Rotating a key: write the new pair to the file (keep the key clients still use as
the other one), ``fpgaflow cluster reload-keys``; the gateway swaps the accepted set at once,
calls in flight are not touched. Key text is never logged nor put in an error message.
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import grpc

from fpgaflow.fpga_runtime import tls
from fpgaflow.fpga_runtime.errors import FpgaflowError
from fpgaflow.fpga_runtime.settings import Settings

log = logging.getLogger(__name__)
MAX_KEY_LENGTH = 512


def read_api_keys(path: Path) -> tuple[str, ...]:
    """The keys of a key file, in order; an error names the file and the line, never a key."""
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as error:
        raise FpgaflowError(
            f"cannot read the API key file {path}: {getattr(error, 'strerror', None) or type(error).__name__}"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the API key file %s can be read by other users (mode %o); chmod 600 it", path, stat.S_IMODE(mode))
    keys: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        if len(key) > MAX_KEY_LENGTH or any(character.isspace() or not character.isprintable() for character in key):
            raise FpgaflowError(
                f"line {number} of the API key file {path} is not a key: printable characters without spaces, "
                f"at most {MAX_KEY_LENGTH} of them"
            )
        keys.append(key)
    if not keys:
        raise FpgaflowError(f"the API key file {path} holds no key; an empty file would switch authentication off")
    return tuple(keys)


def accepted_api_keys(settings: Settings) -> tuple[str, ...]:
    """The keys the gateway accepts: ``server_api_keys`` and those of ``gateway_api_keys_file``."""
    return _keys(settings.server_api_keys, settings.gateway_api_keys_file)


def node_api_keys(settings: Settings) -> tuple[str, ...]:
    """The keys a node accepts: ``server_api_keys`` and those of ``server_api_keys_file`` (a mounted Secret)."""
    return _keys(settings.server_api_keys, settings.server_api_keys_file)


def _keys(listed: tuple[str, ...], keys_file: Path | None) -> tuple[str, ...]:
    keys = list(listed)
    if keys_file is not None:
        keys += [key for key in read_api_keys(keys_file) if key not in keys]
    return tuple(keys)


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials of the gateway from its certificate, key and (mutual TLS) client CA files; None when unset."""
    return tls.server_credentials(
        settings.gateway_tls_cert_file, settings.gateway_tls_key_file, settings.gateway_tls_client_ca_file, "gateway"
    )


def node_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials of a node (its ``server_tls_*`` settings); None when unset."""
    return tls.server_credentials(
        settings.server_tls_cert_file, settings.server_tls_key_file, settings.server_tls_client_ca_file, "server"
    )
