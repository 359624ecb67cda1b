"""Cluster state: nodes, placements and versions, persisted atomically as JSON.

The gateway process owns the state: it writes ``<home>/cluster/state.json`` after every change
(a temporary file, fsync, then rename, so a crash leaves the old or the new state, never half of
one) and reloads it on start, so placements survive a gateway restart.

A node is one emulated FPGA: it holds at most one model (or one segment of a model split across
devices). A placement is a model name with its replicas; a replica is the list of nodes that
serve one copy of the model, the entry node first (one node, or one node per segment). A segment whose
layer is larger than one device (cut by output columns) runs in its node's process over that node and
the nodes it holds: each held node names it as its ``host``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fpgaflow.fpga_runtime.errors import FpgaflowError, ResourceExhausted
from fpgaflow.fpga_runtime.settings import Settings

STATE_FILE = "state.json"
SCHEMA_VERSION: Literal[1] = 1


def cluster_dir(settings: Settings) -> Path:
    """Where the cluster keeps its state, lock, and the logs of the gateway and nodes."""
    return settings.home / "cluster"


class NodeRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    address: str | None = Field(default=None, description="host:port the gateway reaches the node's gRPC at.")
    pid: int | None = Field(default=None, description="Process id (local target).")
    container: str | None = Field(default=None, description="Container name (docker target).")
    model: str | None = None
    version: str | None = None
    segment: int | None = Field(default=None, description="1-based segment of a split model; None = the whole model.")
    host: str | None = Field(
        default=None,
        description="The node whose process runs on this one's device too (a layer cut over several); None: its own.",
    )
    restarts: int = 0
    log: str | None = None

    @property
    def free(self) -> bool:
        return self.model is None

    def detach(self) -> None:
        """Forget the running process or container (the node stays reserved for its model)."""
        self.address = self.pid = self.container = self.log = None

    def clear(self) -> None:
        """Free the node."""
        self.detach()
        self.model = self.version = self.segment = self.host = None


class ReplicaRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str
    service_dir: str
    image: str | None = None
    nodes: list[str] = Field(description="Node ids in chain order: the entry node first.")


class PlacementRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: str = Field(description="The version the placement serves (or is being updated to).")
    service_dir: str
    image: str | None = None
    replicas: list[ReplicaRecord] = Field(default_factory=list)


class GatewayRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str
    control_address: str
    pid: int
    log: str
    watchdog_pid: int | None = Field(default=None, description="The watchdog that restarts this gateway when it dies, if any.")


class ClusterState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = Field(description="Cluster id: names its containers and network on the docker target.")
    target: str
    launcher: str = Field(
        description="Name of the launcher that starts this target's nodes (fpgaflow.fpga_runtime.cluster.launchers.LAUNCHERS); "
        "states written before that table name it module:Class."
    )
    device_profile: str
    nodes: list[NodeRecord]
    placements: dict[str, PlacementRecord] = Field(default_factory=dict)
    gateway: GatewayRecord | None = None

    def node(self, node_id: str) -> NodeRecord:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def with_held(self, node_ids: list[str]) -> list[NodeRecord]:
        """The nodes ``node_ids`` (those running processes) and, after each, the nodes whose devices it holds."""
        return [node for node_id in node_ids for node in (self.node(node_id), *self.held_by(node_id))]

    def held_by(self, node_id: str) -> list[NodeRecord]:
        return [node for node in self.nodes if node.host == node_id]

    def free_nodes(self) -> list[NodeRecord]:
        return [node for node in self.nodes if node.free]

    def reserve(self, count: int, what: str) -> list[NodeRecord]:
        """Pick ``count`` free nodes (lowest ids first) or refuse, naming how many are free and how many were asked."""
        free = self.free_nodes()
        if count > len(free):
            raise ResourceExhausted(
                f"not enough free nodes for {what}: {count} asked, {len(free)} of {len(self.nodes)} free"
                " (undeploy or scale down a model, or start the cluster with more nodes)"
            )
        return free[:count]

    def resize(self, count: int) -> None:
        """Grow to ``count`` nodes, or shrink by dropping free nodes with the highest ids."""
        if count < 1:
            raise FpgaflowError(f"a cluster needs at least one node, got {count}")
        used = len(self.nodes) - len(self.free_nodes())
        if count < used:
            raise ResourceExhausted(f"cannot shrink the cluster to {count} nodes: {used} nodes hold models")
        taken = {node.id for node in self.nodes}
        index = 1
        while len(self.nodes) < count:
            node_id = node_name(index)
            if node_id not in taken:
                self.nodes.append(NodeRecord(id=node_id))
            index += 1
        while len(self.nodes) > count:
            victim = max((node for node in self.nodes if node.free), key=lambda node: _node_number(node.id))
            self.nodes.remove(victim)
        self.nodes.sort(key=lambda node: _node_number(node.id))


def node_name(index: int) -> str:
    return f"node-{index}"


def _node_number(node_id: str) -> int:
    return int(node_id.rsplit("-", 1)[-1])


def new_state(name: str, target: str, device_profile: str, nodes: int) -> ClusterState:
    state = ClusterState(name=name, target=target, launcher=target, device_profile=device_profile, nodes=[])
    state.resize(nodes)
    return state


class StateStore:
    """Reads and atomically writes ``state.json`` in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / STATE_FILE

    def load(self) -> ClusterState | None:
        """The saved state, or None when there is none; a damaged file is an error naming it."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            return ClusterState.model_validate(json.loads(text))
        except (json.JSONDecodeError, ValidationError) as error:
            raise FpgaflowError(f"the cluster state {self.path} is damaged ({error}); remove it to start afresh") from None

    def save(self, state: ClusterState) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        data = state.model_dump_json(indent=2) + "\n"
        handle, temporary = tempfile.mkstemp(prefix=".state-", suffix=".json", dir=self.directory)
        try:
            with os.fdopen(handle, "w") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
