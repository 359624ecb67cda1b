"""The layout of the serving image, and how a node runs in it (the docker and kubernetes targets start nodes so).

The image's entrypoint runs a whole service, ``python -m fpgaflow.fpga_runtime SERVICE_PATH ...`` (over up to
``--devices N`` emulated devices when its featurizer needs several); a node of a split service overrides it to run
one segment, ``python -m fpgaflow.fpga_runtime.chain SERVICE_PATH --segment K``, on its devices (one, or the several
that hold the column slices of a layer larger than a device).
"""

from __future__ import annotations

VENV = "/opt/fpgaflow"
SERVICE_PATH = "/srv/service"
CHAIN_MODULE = "fpgaflow.fpga_runtime.chain"


def node_command(
    segment: int | None, next_hop: str | None, port: int, device: str, devices: int | None = None
) -> tuple[list[str] | None, list[str]]:
    """(entrypoint override, arguments) of a node's container, listening on all interfaces at ``port``; the node runs
    its service (or segment) over at most ``devices`` emulated devices (None: as many as it needs)."""
    where = ["--host", "0.0.0.0", "--port", str(port), "--device", device, *(["--devices", str(devices)] if devices else [])]
    if segment is None:
        return None, [SERVICE_PATH, *where]
    hop = ["--next", next_hop] if next_hop else []
    return [f"{VENV}/bin/python", "-m", CHAIN_MODULE], [SERVICE_PATH, "--segment", str(segment), *hop, *where]
