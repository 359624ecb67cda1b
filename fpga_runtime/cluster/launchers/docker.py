"""The ``docker`` target: every node a container of the model's serving image, on the cluster's private network.

The cluster gets a bridge network of its own, ``fpgaflow-<cluster>``; nodes of a split model
reach the next node of their chain there by container name. The gateway (a process on this
machine) reaches each node on the port its container publishes on loopback only. Every network
and container carries the label ``fpgaflow.cluster=<cluster>``, which is how cluster down finds
everything it made. A node is ready when its gRPC health answers SERVING.

The docker SDK is imported when a docker launcher is made: a runtime-only install (the serving
image) has no docker package and never runs this target.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fpgaflow.fpga_runtime.cluster.launcher import NodeProcess, NodeSpec
from fpgaflow.fpga_runtime.cluster.router import RECONNECT_OPTIONS
from fpgaflow.fpga_runtime.cluster.state import NodeRecord
from fpgaflow.fpga_runtime.errors import FpgaflowError
from fpgaflow.fpga_runtime.profiles import known_profiles
from fpgaflow.fpga_runtime.serving_image import node_command
from fpgaflow.fpga_runtime.settings import Settings

log = logging.getLogger(__name__)
CLUSTER_LABEL = "fpgaflow.cluster"
NODE_LABEL = "fpgaflow.node"
LOOPBACK = "127.0.0.1"
PROFILE_MOUNT = "/etc/fpgaflow/device-profile.yaml"
READY_CHECK_SECONDS = 2.0  # one health watch; between two, the container's state is checked


def network_name(cluster: str) -> str:
    return f"fpgaflow-{cluster}"


def engine_address(settings: Settings) -> str:
    """The engine address in force: the setting, else what the docker SDK takes from its environment."""
    import docker

    return settings.docker_host or docker.utils.kwargs_from_env().get("base_url") or "the local default socket"


def engine_client(settings: Settings):
    """A docker client whose engine has answered a ping, or an error saying which engine did not."""
    import docker
    import requests
    from docker.errors import DockerException

    try:
        if settings.docker_host:
            client = docker.DockerClient(base_url=settings.docker_host, timeout=settings.docker_timeout)
        else:
            client = docker.from_env(timeout=settings.docker_timeout)
        client.ping()
    except (DockerException, requests.RequestException) as error:
        raise FpgaflowError(
            f"no Docker engine reachable at {engine_address(settings)}: {error} "
            "(start one with scripts/docker-engine, or set FPGAFLOW_DOCKER_HOST)"
        ) from None
    return client


class DockerLauncher:
    requires_image = True

    def __init__(self, cluster_name: str, settings: Settings, directory: Path) -> None:
        self.cluster = cluster_name
        self.settings = settings
        self.port = settings.image_grpc_port
        self.client = engine_client(settings)
        self.labels = {CLUSTER_LABEL: cluster_name}
        self.network = self._network()

    def _network(self):
        name = network_name(self.cluster)
        existing = self.client.networks.list(names=[name])
        if existing:
            return existing[0]
        return self.client.networks.create(name, driver="bridge", labels=self.labels)

    # -- nodes -----------------------------------------------------------------------------------

    def command(self, spec: NodeSpec) -> tuple[list[str] | None, list[str]]:
        """(entrypoint override, arguments) of a node's container."""
        device = spec.device_profile if spec.device_profile in known_profiles() else PROFILE_MOUNT
        return node_command(spec.segment, spec.next_hop, self.port, device, spec.devices)

    def start(self, spec: NodeSpec) -> NodeProcess:
        from docker.errors import APIError, ImageNotFound

        if not spec.image:
            raise FpgaflowError(f"{spec.node_id}: the docker target needs the serving image of {spec.model} {spec.version}")
        entrypoint, command = self.command(spec)
        volumes = {}
        if spec.device_profile not in known_profiles():
            volumes[str(Path(spec.device_profile).resolve())] = {"bind": PROFILE_MOUNT, "mode": "ro"}
        name = f"fpgaflow-{self.cluster}-{spec.node_id}-{uuid.uuid4().hex[:6]}"
        try:
            container = self.client.containers.run(
                spec.image,
                command,
                entrypoint=entrypoint,
                name=name,
                detach=True,
                network=self.network.name,
                ports={f"{self.port}/tcp": (LOOPBACK, None)},
                labels={**self.labels, NODE_LABEL: spec.node_id, "fpgaflow.model": spec.model, "fpgaflow.version": spec.version},
                volumes=volumes,
            )
        except ImageNotFound:
            raise FpgaflowError(f"{spec.node_id}: image {spec.image} is not on the engine; build it first") from None
        except APIError as error:
            raise FpgaflowError(f"{spec.node_id}: the engine refused to run {spec.image}: {error.explanation or error}") from None
        try:
            address = self._wait_ready(container, spec)
        except BaseException:
            container.remove(force=True)
            raise
        return NodeProcess(address=address, container=container.name)

    def _wait_ready(self, container, spec: NodeSpec) -> str:
        deadline = time.monotonic() + self.settings.cluster_node_start_timeout_seconds
        container.reload()
        bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get(f"{self.port}/tcp") or []
        if not bindings:
            raise FpgaflowError(f"{spec.node_id}: container {container.name} published no port: {self._logs(container)}")
        address = f"{LOOPBACK}:{bindings[0]['HostPort']}"
        with grpc.insecure_channel(address, options=RECONNECT_OPTIONS) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                try:
                    for reply in stub.Watch(health_pb2.HealthCheckRequest(), timeout=READY_CHECK_SECONDS, wait_for_ready=True):
                        if reply.status == health_pb2.HealthCheckResponse.SERVING:
                            return address
                except grpc.RpcError:
                    pass
                container.reload()
                if container.status not in ("created", "running"):
                    raise FpgaflowError(
                        f"{spec.node_id}: container {container.name} {container.status} before it was ready:\n"
                        f"{self._logs(container)}"
                    )
        raise FpgaflowError(
            f"{spec.node_id}: container {container.name} was not ready within "
            f"{self.settings.cluster_node_start_timeout_seconds:g} s:\n{self._logs(container)}"
        )

    @staticmethod
    def _logs(container) -> str:
        from docker.errors import DockerException

        try:
            return container.logs(tail=20).decode("utf-8", "replace")
        except DockerException:
            return "(no logs)"

    def next_hop_address(self, process: NodeProcess) -> str:
        return f"{process.container}:{self.port}"

    def alive(self, node: NodeRecord) -> bool:
        from docker.errors import NotFound

        if not node.container:
            return False
        try:
            container = self.client.containers.get(node.container)
        except NotFound:
            return False
        return container.status == "running"

    def stop(self, node: NodeRecord, grace: float) -> None:
        from docker.errors import NotFound

        if not node.container:
            return
        try:
            container = self.client.containers.get(node.container)
            container.stop(timeout=max(0, round(grace)))
            container.remove(force=True)
        except NotFound:
            return

    # -- the cluster -----------------------------------------------------------------------------

    def close(self) -> None:
        """Remove every container and the network labelled with this cluster."""
        for container in self.client.containers.list(all=True, filters={"label": f"{CLUSTER_LABEL}={self.cluster}"}):
            container.remove(force=True)
        for network in self.client.networks.list(filters={"label": f"{CLUSTER_LABEL}={self.cluster}"}):
            network.remove()
        self.release()

    def release(self) -> None:
        self.client.close()
