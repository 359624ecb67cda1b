"""What a deployment target provides to the cluster: starting, watching and stopping nodes.

The controller decides which node runs what; a launcher makes it happen on its target. The
targets' launchers sit side by side in :mod:`fpgaflow.fpga_runtime.cluster.launchers`, chosen by target name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fpgaflow.fpga_runtime.cluster.state import NodeRecord
from fpgaflow.fpga_runtime.settings import Settings


@dataclass(frozen=True)
class NodeSpec:
    """What one node is to run: a whole service, or segment ``segment`` of a split one.

    ``devices``: the emulated devices the node may run its service or segment over: one, or the several a layer
    larger than one device is cut over by output columns (the cluster counts each node as one device and holds
    the others for it, :attr:`fpgaflow.fpga_runtime.cluster.state.NodeRecord.host`).
    """

    node_id: str
    model: str
    version: str
    service_dir: str
    image: str | None
    device_profile: str
    segment: int | None = None
    next_hop: str | None = None
    devices: int = 1


@dataclass(frozen=True)
class NodeProcess:
    """A started node: ``address`` is where the gateway reaches it; ``pid`` or ``container`` identify it."""

    address: str
    pid: int | None = None
    container: str | None = None
    log: str | None = None


class Launcher(Protocol):
    requires_image: bool

    def __init__(self, cluster_name: str, settings: Settings, directory: Path) -> None: ...

    def start(self, spec: NodeSpec) -> NodeProcess:
        """Start the node and return once it answers (its model loaded); raise with the node's own error otherwise."""

    def next_hop_address(self, process: NodeProcess) -> str:
        """Where the node before it in a chain reaches this node."""

    def alive(self, node: NodeRecord) -> bool:
        """The node's process or container is still running (it may be a node started by an earlier gateway)."""

    def stop(self, node: NodeRecord, grace: float) -> None:
        """Stop the node: up to ``grace`` seconds for in-flight calls, then forcibly."""

    def close(self) -> None:
        """The cluster is going down: remove everything this target made for it (networks ...)."""

    def release(self) -> None:
        """The gateway exits but the cluster stays: let go of clients and handles, leave the nodes running."""
