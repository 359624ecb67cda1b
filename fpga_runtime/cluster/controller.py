"""The cluster's control plane: placement, deploy, scale, rolling update, undeploy, supervision.

One operation runs at a time. Every change is saved (:class:`~fpgaflow.fpga_runtime.cluster.state.StateStore`)
and pushed to the gateway's routes. Replicas are taken out of rotation and drained (their in-flight
requests finish) before their nodes are stopped, and new replicas join the rotation only once their
nodes have loaded the model, so deploys, scaling and updates fail no request. The supervisor
restarts the nodes of a replica when one of them dies (a chain restarts whole: its nodes know
each other's addresses), with a growing back-off when a restart fails.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fpgaflow.fpga_runtime.cluster.gateway import Gateway
from fpgaflow.fpga_runtime.cluster.launcher import Launcher, NodeSpec
from fpgaflow.fpga_runtime.cluster.router import ReplicaSpec
from fpgaflow.fpga_runtime.cluster.state import ClusterState, NodeRecord, PlacementRecord, ReplicaRecord, StateStore
from fpgaflow.fpga_runtime.errors import FpgaflowError, InvalidInput, ModelNotFound, ResourceExhausted
from fpgaflow.fpga_runtime.placement.fit import SegmentDevices
from fpgaflow.fpga_runtime.service import ServiceDefinition, load_service
from fpgaflow.fpga_runtime.settings import Settings

log = logging.getLogger(__name__)
RESTART_BACKOFF_SECONDS = (1.0, 60.0)  # first wait after a failed restart, and the most it grows to


class Controller:
    def __init__(self, state: ClusterState, store: StateStore, launcher: Launcher, gateway: Gateway, settings: Settings) -> None:
        self.state = state
        self.store = store
        self.launcher = launcher
        self.gateway = gateway
        self.settings = settings
        self._operation = threading.RLock()
        self._state_lock = threading.Lock()
        self._services: dict[str, ServiceDefinition] = {}
        self._segment_devices = SegmentDevices()
        self._retry_at: dict[str, tuple[float, float]] = {}
        self._stop = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise_forever, name="fpgaflow-supervisor", daemon=True)

    # -- lifecycle -------------------------------------------------------------------------------

    def restore_routes(self) -> None:
        """Before a (re)started gateway takes calls: serve the placed models' metadata and route their
        replicas (the health checks decide which answer), so no call finds its model missing."""
        with self._operation:
            for placement in self.state.placements.values():
                for replica in placement.replicas:
                    try:
                        self.gateway.publish(self._service(replica.service_dir))
                    except FpgaflowError as error:
                        log.error("model %s: cannot read its service definition: %s", placement.name, error)
                self._route(placement.name)

    def start_supervising(self) -> None:
        """Start the supervisor, which restarts the nodes that died meanwhile."""
        self._supervisor.start()

    def stop_supervising(self) -> None:
        self._stop.set()
        if self._supervisor.is_alive() and threading.current_thread() is not self._supervisor:
            self._supervisor.join()

    def forget_gateway(self) -> None:
        """The gateway exits, the cluster stays: save the state without a gateway address."""
        with self._state_lock:
            self.state.gateway = None
            self.store.save(self.state)

    def shutdown(self) -> dict:
        """Cluster down: stop every node, remove what the target made, forget the state."""
        self.stop_supervising()
        with self._operation:
            names = list(self.state.placements)
            nodes = [node for node in self.state.nodes if not node.free and node.host is None]
            for name in names:
                self.gateway.router.remove(name)
            self._in_parallel(lambda node: self.launcher.stop(node, self.settings.server_shutdown_grace_seconds), nodes)
            self.launcher.close()
            self.store.remove()
        return {"stopped_nodes": [node.id for node in nodes], "undeployed": names}

    # -- operations ------------------------------------------------------------------------------

    def deploy(self, service_dir: str, replicas: int, image: str | None = None) -> dict:
        """Place ``replicas`` of a service; a placed model with another version (or build) is rolled over to it."""
        if replicas < 1:
            raise InvalidInput(f"replicas must be at least 1, got {replicas}")
        with self._operation:
            service_dir = str(Path(service_dir).resolve())
            service = self._service(service_dir, reload=True)
            self._devices_per_segment(service, service_dir)
            if self.launcher.requires_image and not image:
                raise InvalidInput(
                    f"the {self.state.target} target runs nodes from a serving image; build one for {service_dir} "
                    "(`fpgaflow image build`) and deploy with it"
                )
            placement = self.state.placements.get(service.name)
            if placement is None:
                self._place(service, service_dir, image, replicas)
            elif (placement.version, placement.service_dir, placement.image) == (service.version, service_dir, image):
                self._scale(placement, replicas)
            else:
                self._update(placement, service, service_dir, image, replicas)
            return self.model_status(service.name)

    def scale(self, name: str, replicas: int) -> dict:
        if replicas < 1:
            raise InvalidInput(f"replicas must be at least 1 (to stop serving {name!r}, undeploy it), got {replicas}")
        with self._operation:
            self._scale(self._placement(name), replicas)
            return self.model_status(name)

    def undeploy(self, name: str) -> dict:
        with self._operation:
            placement = self._placement(name)
            freed = [node.id for replica in placement.replicas for node in self.state.with_held(replica.nodes)]
            versions = {replica.version for replica in placement.replicas} | {placement.version}
            self._retire(placement, list(placement.replicas))
            with self._state_lock:
                del self.state.placements[name]
            for version in versions:
                self.gateway.forget(name, version)
            self.gateway.router.remove(name)
            self._save()
            return {"name": name, "freed_nodes": freed}

    # -- status ----------------------------------------------------------------------------------

    def status(self) -> dict:
        with self._state_lock:
            state = self.state.model_copy(deep=True)
        router = self.gateway.router
        nodes = [
            {
                "id": node.id,
                "address": node.address,
                "pid": node.pid,
                "container": node.container,
                "model": node.model,
                "version": node.version,
                "segment": node.segment,
                "host": node.host,
                "healthy": True if node.free else bool(router.node_healthy(state.node(node.host or node.id).address)),
                "restarts": node.restarts,
                "log": node.log,
            }
            for node in state.nodes
        ]
        return {
            "name": state.name,
            "target": state.target,
            "device": state.device_profile,
            "gateway": state.gateway.model_dump() if state.gateway else None,
            "nodes": nodes,
            "models": [self.model_status(name) for name in sorted(state.placements)],
        }

    def model_status(self, name: str) -> dict:
        with self._state_lock:
            placement = self.state.placements[name].model_copy(deep=True)
        replicas = self.gateway.router.replicas(name)
        routed = {replica["key"]: replica for replica in replicas}
        return {
            "name": name,
            "version": placement.version,
            "service_dir": placement.service_dir,
            "image": placement.image,
            "replicas": len(placement.replicas),
            "healthy_replicas": sum(1 for replica in replicas if replica["healthy"] and not replica["draining"]),
            "nodes_per_replica": len(placement.replicas[0].nodes) if placement.replicas else 0,
            "devices_per_replica": len(self.state.with_held(placement.replicas[0].nodes)) if placement.replicas else 0,
            "versions": sorted({replica.version for replica in placement.replicas}),
            "placement": [
                {
                    "version": replica.version,
                    "nodes": replica.nodes,
                    "requests": routed.get(self._key(name, replica), {}).get("forwarded", 0),
                }
                for replica in placement.replicas
            ],
            "endpoint": self.gateway.address,
            **self.gateway.router.stats(name),
        }

    # -- placement -------------------------------------------------------------------------------

    def _place(self, service: ServiceDefinition, service_dir: str, image: str | None, replicas: int) -> None:
        placement = PlacementRecord(name=service.name, version=service.version, service_dir=service_dir, image=image)
        records = self._reserve(service, service_dir, image, replicas)
        self.gateway.publish(service)
        with self._state_lock:
            self.state.placements[service.name] = placement
        try:
            self._start_all(records)
        except BaseException:
            with self._state_lock:
                del self.state.placements[service.name]
            self.gateway.forget(service.name, service.version)
            self._save()
            raise
        placement.replicas.extend(records)
        self._save()
        self._route(service.name, ready=records)

    def _scale(self, placement: PlacementRecord, replicas: int) -> None:
        current = len(placement.replicas)
        if replicas > current:
            service = self._service(placement.service_dir)
            records = self._reserve(service, placement.service_dir, placement.image, replicas - current)
            self._start_all(records)
            placement.replicas.extend(records)
            self._save()
            self._route(placement.name, ready=records)
        elif replicas < current:
            self._retire(placement, placement.replicas[replicas:])

    def _update(
        self, placement: PlacementRecord, service: ServiceDefinition, service_dir: str, image: str | None, replicas: int
    ) -> None:
        """Rolling update: start the new version on free (or freed) nodes, route to it once ready, drain and stop the old."""
        name, per_replica = placement.name, sum(self._devices_per_segment(service, service_dir))
        old = list(placement.replicas)
        free = len(self.state.free_nodes())
        capacity = free + sum(len(self.state.with_held(replica.nodes)) for replica in old)
        if capacity < replicas * per_replica:
            raise ResourceExhausted(
                f"cannot update {name} to version {service.version}: {replicas} replica(s) x {per_replica} node(s) "
                f"= {replicas * per_replica} nodes asked, {capacity} available (its {len(old)} replica(s) and {free} free)"
            )
        if free < per_replica and len(old) < 2:
            raise ResourceExhausted(
                f"cannot update {name} to version {service.version} without failing requests: the new version needs "
                f"{per_replica} free node(s) to start beside the one running replica, {free} of {len(self.state.nodes)} are free"
            )
        previous = (placement.version, placement.service_dir, placement.image)
        self.gateway.publish(service)
        started: list[ReplicaRecord] = []
        try:
            while len(started) < replicas:
                startable = min(len(self.state.free_nodes()) // per_replica, replicas - len(started))
                if startable == 0:
                    if not started and len(old) < 2:
                        raise ResourceExhausted(
                            f"cannot update {name} to version {service.version} without stopping its last running replica"
                        )
                    self._retire(placement, [old.pop()])
                    continue
                records = self._reserve(service, service_dir, image, startable)
                self._start_all(records)
                placement.replicas.extend(records)
                placement.version, placement.service_dir, placement.image = service.version, service_dir, image
                started.extend(records)
                self._save()
                self._route(name, ready=records)
        except BaseException:
            log.error("update of %s to version %s failed; going back to version %s", name, service.version, previous[0])
            self._retire(placement, started)
            placement.version, placement.service_dir, placement.image = previous
            self._save()
            if service.version != previous[0]:
                self.gateway.forget(name, service.version)
            raise
        self._retire(placement, old)
        for version in {replica.version for replica in old} - {service.version}:
            self.gateway.forget(name, version)
        self._save()

    def _reserve(self, service: ServiceDefinition, service_dir: str, image: str | None, replicas: int) -> list[ReplicaRecord]:
        """Nodes for ``replicas`` chains: per segment, the node that runs it and the nodes it holds for its other devices."""
        devices = self._devices_per_segment(service, service_dir)
        per_replica = sum(devices)
        what = f"{replicas} replica(s) of {service.name} version {service.version}" + (
            f" (split across {per_replica} devices each)" if per_replica > 1 else ""
        )
        with self._state_lock:
            free = iter(self.state.reserve(replicas * per_replica, what))
            records = []
            for _ in range(replicas):
                runners = []
                for position, count in enumerate(devices, start=1):
                    runner, *held = (next(free) for _ in range(count))
                    for node in (runner, *held):
                        node.model, node.version = service.name, service.version
                        node.segment = position if len(devices) > 1 else None
                        node.host = runner.id if node is not runner else None
                    runners.append(runner.id)
                records.append(ReplicaRecord(version=service.version, service_dir=service_dir, image=image, nodes=runners))
        return records

    def _devices_per_segment(self, service: ServiceDefinition, service_dir: str) -> tuple[int, ...]:
        return self._segment_devices.per_segment(service, service_dir, self.state.device_profile)

    def _start_all(self, records: list[ReplicaRecord]) -> None:
        """Start replicas side by side; if any fails, stop the others, free every node, raise the first error."""
        errors: list[BaseException] = []

        def start(record: ReplicaRecord) -> None:
            try:
                self._start_replica(record)
            except BaseException as error:
                errors.append(error)

        self._in_parallel(start, records)
        if errors:
            for record in records:
                for node in self.state.with_held(record.nodes):
                    if node.address is not None:
                        self.launcher.stop(node, 0)
                    with self._state_lock:
                        node.clear()
            raise errors[0]

    def _start_replica(self, record: ReplicaRecord) -> None:
        """Start a replica's nodes, the last segment first, so each node is given the address of the next."""
        service = self._service(record.service_dir)
        chained = len(record.nodes) > 1
        next_hop = None
        started: list[NodeRecord] = []
        try:
            for position in range(len(record.nodes), 0, -1):
                node = self.state.node(record.nodes[position - 1])
                spec = NodeSpec(
                    node_id=node.id,
                    model=service.name,
                    version=record.version,
                    service_dir=record.service_dir,
                    image=record.image,
                    device_profile=self.state.device_profile,
                    segment=position if chained else None,
                    next_hop=next_hop,
                    devices=1 + len(self.state.held_by(node.id)),
                )
                process = self.launcher.start(spec)
                with self._state_lock:
                    node.address, node.pid, node.container, node.log = (
                        process.address,
                        process.pid,
                        process.container,
                        process.log,
                    )
                started.append(node)
                next_hop = self.launcher.next_hop_address(process)
        except BaseException:
            for node in started:
                self.launcher.stop(node, 0)
                with self._state_lock:
                    node.detach()
            raise

    def _retire(self, placement: PlacementRecord, records: list[ReplicaRecord]) -> None:
        """Take replicas out of rotation, let their in-flight requests finish, stop their nodes, free them."""
        if not records:
            return
        keys = [self._key(placement.name, record) for record in records]
        if not self.gateway.router.drain(keys, self.settings.cluster_drain_timeout_seconds):
            log.warning("replicas %s still had requests in flight after %s s", keys, self.settings.cluster_drain_timeout_seconds)
        with self._state_lock:
            for record in records:
                placement.replicas.remove(record)
        self._route(placement.name)
        nodes = [self.state.node(node_id) for record in records for node_id in record.nodes]
        self._in_parallel(lambda node: self.launcher.stop(node, self.settings.server_shutdown_grace_seconds), nodes)
        with self._state_lock:
            for node in self.state.with_held([node.id for node in nodes]):
                node.clear()
        self._save()

    # -- supervision -----------------------------------------------------------------------------

    def supervise_once(self) -> None:
        """Restart every replica that has a dead node (when its back-off allows)."""
        with self._operation:
            for placement in list(self.state.placements.values()):
                for record in list(placement.replicas):
                    dead = [node_id for node_id in record.nodes if not self.launcher.alive(self.state.node(node_id))]
                    key = self._key(placement.name, record)
                    if dead and time.monotonic() >= self._retry_at.get(key, (0.0, 0.0))[0]:
                        self._restart(placement, record, key, dead)

    def _restart(self, placement: PlacementRecord, record: ReplicaRecord, key: str, dead: list[str]) -> None:
        log.warning("replica %s: node(s) %s died; restarting it", key, dead)
        nodes = [self.state.node(node_id) for node_id in record.nodes]
        with self._state_lock:
            for node in nodes:
                if node.id in dead:
                    node.restarts += 1
        for node in nodes:
            if node.id not in dead:
                self.launcher.stop(node, 0)
            with self._state_lock:
                node.detach()
        self._route(placement.name)
        try:
            self._start_replica(record)
        except Exception as error:
            wait = min(RESTART_BACKOFF_SECONDS[1], 2 * self._retry_at.get(key, (0.0, RESTART_BACKOFF_SECONDS[0] / 2))[1])
            self._retry_at[key] = (time.monotonic() + wait, wait)
            log.error("restarting replica %s failed (next attempt in %.0f s): %s", key, wait, error)
        else:
            self._retry_at.pop(key, None)
            self._route(placement.name, ready=[record])
        self._save()

    def _supervise_forever(self) -> None:
        while not self._stop.wait(self.settings.cluster_health_interval_seconds):
            try:
                self.supervise_once()
            except Exception:  # the supervisor must outlive any one bad pass
                log.exception("supervisor pass failed")

    # -- helpers ---------------------------------------------------------------------------------

    def _placement(self, name: str) -> PlacementRecord:
        placement = self.state.placements.get(name)
        if placement is None:
            raise ModelNotFound(f"model {name!r} is not deployed on this cluster; models: {sorted(self.state.placements)}")
        return placement

    @staticmethod
    def _key(name: str, record: ReplicaRecord) -> str:
        return f"{name}/{record.nodes[0]}"

    def _route(self, name: str, ready: Sequence[ReplicaRecord] = ()) -> None:
        """Push a model's replicas to the gateway: those whose nodes all run; ``ready`` ones just loaded."""
        placement = self.state.placements.get(name)
        if placement is None:
            self.gateway.router.remove(name)
            return
        specs = []
        for record in placement.replicas:
            addresses = [address for node_id in record.nodes if (address := self.state.node(node_id).address)]
            if len(addresses) == len(record.nodes):
                specs.append(
                    ReplicaSpec(
                        key=self._key(name, record),
                        model=name,
                        version=record.version,
                        entry=addresses[0],
                        nodes=tuple(addresses),
                        ready=any(record is candidate for candidate in ready),
                    )
                )
        self.gateway.router.set_replicas(name, specs)

    def _service(self, service_dir: str, reload: bool = False) -> ServiceDefinition:
        if reload or service_dir not in self._services:
            self._services[service_dir] = load_service(service_dir)
        return self._services[service_dir]

    def _save(self) -> None:
        with self._state_lock:
            self.store.save(self.state)

    @staticmethod
    def _in_parallel(function, items: list) -> None:
        if len(items) <= 1:
            for item in items:
                function(item)
            return
        with ThreadPoolExecutor(max_workers=len(items)) as pool:
            for future in [pool.submit(function, item) for item in items]:
                future.result()
