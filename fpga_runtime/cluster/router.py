"""The gateway's routing core: replicas by model, least-outstanding balancing, health, retries, stats.

A request for a model goes to the healthy replica of that model (of the asked version, if one was
asked) with the fewest requests in flight. Requests are forwarded as the serialized bytes the
client sent, so tensors are never decoded or re-encoded on the way. A replica is healthy while
every node of it answers gRPC health with SERVING; a health thread checks every node each
``cluster_health_interval_seconds``, taking failed nodes out of rotation and putting them back
once they answer again. When a node fails mid-request with UNAVAILABLE (killed, draining, not
loaded) the request -- Predict and ModelInfer are idempotent -- is retried on another replica,
waiting for one to become healthy if none is, within the request's deadline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fpgaflow.fpga_runtime.errors import ModelNotFound, ModelNotReady, UpstreamError
from fpgaflow.fpga_runtime.server import grpc_options
from fpgaflow.fpga_runtime.settings import Settings

log = logging.getLogger(__name__)
RETRIED = frozenset({grpc.StatusCode.UNAVAILABLE})
# Reply to the client a little before its own deadline, so it gets our status rather than its timeout.
DEADLINE_MARGIN_SECONDS = 0.05
RECONNECT_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000)]


@dataclass(frozen=True)
class ReplicaSpec:
    """One replica as the controller places it: requests go to ``entry``; it is healthy while all ``nodes`` are.

    ``ready`` says the controller just saw every node load its model (no need to wait for a health round).
    """

    key: str
    model: str
    version: str
    entry: str
    nodes: tuple[str, ...]
    ready: bool = False


@dataclass(eq=False)
class _Replica:
    spec: ReplicaSpec
    outstanding: int = 0
    forwarded: int = 0
    draining: bool = False


@dataclass
class _ModelStats:
    window: deque = field(default_factory=deque)  # (monotonic time, seconds, ok)
    requests: int = 0
    failures: int = 0
    retries: int = 0


class Router:
    """Routes forwarded calls to replicas; ``on_change()`` is called when routes or health change."""

    def __init__(self, settings: Settings, on_change: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self._on_change = on_change
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._routes: dict[str, list[_Replica]] = {}
        self._node_health: dict[str, bool] = {}
        self._channels: dict[str, grpc.Channel] = {}
        self._stats: dict[str, _ModelStats] = {}
        self._options = grpc_options(settings.server_max_message_bytes) + RECONNECT_OPTIONS
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._health_thread = threading.Thread(target=self._check_health_forever, name="fpgaflow-health", daemon=True)

    # -- routes ----------------------------------------------------------------------------------

    def start(self) -> None:
        self._health_thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._health_thread.is_alive():
            self._health_thread.join()
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()

    def set_replicas(self, model: str, specs: Sequence[ReplicaSpec]) -> None:
        """Make ``specs`` the replicas of ``model``; a replica kept (same key and entry) keeps its in-flight count.

        A model with no replica running (all restarting, say) stays known: its requests wait for one.
        """
        with self._lock:
            current = {replica.spec.key: replica for replica in self._routes.get(model, [])}
            replicas = []
            for spec in specs:
                kept = current.get(spec.key)
                if kept is not None and kept.spec.entry == spec.entry and kept.spec.nodes == spec.nodes:
                    kept.spec = spec
                    replicas.append(kept)
                else:
                    replicas.append(_Replica(spec))
                for address in spec.nodes:
                    if spec.ready or address not in self._node_health:
                        self._node_health[address] = spec.ready
            self._routes[model] = replicas
            self._forget_unused_nodes()
            self._changed.notify_all()
        self._wake.set()
        self._notify()

    def remove(self, model: str) -> None:
        """The model is no longer deployed: its requests get NOT_FOUND."""
        with self._lock:
            self._routes.pop(model, None)
            self._forget_unused_nodes()
            self._changed.notify_all()
        self._notify()

    def drain(self, keys: Iterable[str], timeout: float) -> bool:
        """Take replicas out of rotation and wait until their in-flight requests finished; False on timeout."""
        keys = set(keys)
        deadline = time.monotonic() + timeout
        with self._lock:
            draining = [replica for replicas in self._routes.values() for replica in replicas if replica.spec.key in keys]
            for replica in draining:
                replica.draining = True
            self._changed.notify_all()
            while any(replica.outstanding for replica in draining):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        self._notify()
        return True

    def node_healthy(self, address: str | None) -> bool | None:
        with self._lock:
            return self._node_health.get(address) if address else None

    def has_healthy(self, model: str, version: str = "") -> bool:
        with self._lock:
            return any(self._usable(replica, version) for replica in self._routes.get(model, []))

    def replicas(self, model: str) -> list[dict]:
        with self._lock:
            return [
                {
                    "key": replica.spec.key,
                    "version": replica.spec.version,
                    "healthy": self._healthy(replica),
                    "draining": replica.draining,
                    "outstanding": replica.outstanding,
                    "forwarded": replica.forwarded,
                }
                for replica in self._routes.get(model, [])
            ]

    def _healthy(self, replica: _Replica) -> bool:
        return all(self._node_health.get(address, False) for address in replica.spec.nodes)

    def _usable(self, replica: _Replica, version: str) -> bool:
        return not replica.draining and self._healthy(replica) and (not version or replica.spec.version == version)

    def _forget_unused_nodes(self) -> None:
        used = {address for replicas in self._routes.values() for replica in replicas for address in replica.spec.nodes}
        for address in [address for address in self._node_health if address not in used]:
            del self._node_health[address]
        for address in [address for address in self._channels if address not in used]:
            self._channels.pop(address).close()

    def _channel(self, address: str) -> grpc.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.insecure_channel(address, options=self._options)
        return channel

    def _notify(self) -> None:
        if self._on_change is not None:
            self._on_change()

    # -- forwarding ------------------------------------------------------------------------------

    def forward(
        self,
        method: str,
        request: bytes,
        model: str,
        version: str,
        timeout: float | None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> bytes:
        """Send the serialized ``request`` to a replica of ``model`` and return the serialized response."""
        started = time.monotonic()
        timeout = self.settings.cluster_request_timeout_seconds if timeout is None else timeout
        deadline = started + max(0.0, timeout - DEADLINE_MARGIN_SECONDS)
        stats = self._model_stats(model)
        attempts = 0
        ok = False
        try:
            while True:
                replica, channel = self._acquire(model, version, deadline)
                attempts += 1
                call = channel.unary_unary(method)
                try:
                    response = call(request, timeout=max(0.001, deadline - time.monotonic()), metadata=metadata)
                except grpc.RpcError as error:
                    code = error.code()
                    if code in RETRIED and time.monotonic() < deadline:
                        log.warning(
                            "%s on %s (%s) failed: %s %s; retrying on another replica",
                            method,
                            replica.spec.key,
                            replica.spec.entry,
                            code.name,
                            error.details(),
                        )
                        self._mark_down(replica.spec.entry)
                        continue
                    raise UpstreamError(code, error.details() or f"{code.name} from a replica of {model!r}") from None
                finally:
                    self._release(replica)
                ok = True
                return response
        finally:
            with self._lock:
                stats.requests += 1
                stats.failures += 0 if ok else 1
                stats.retries += max(0, attempts - 1)
                stats.window.append((time.monotonic(), time.monotonic() - started, ok))
                self._trim(stats)

    def _acquire(self, model: str, version: str, deadline: float) -> tuple[_Replica, grpc.Channel]:
        with self._lock:
            while True:
                replicas = self._routes.get(model)
                if replicas is None:
                    known = sorted(self._routes)
                    raise ModelNotFound(f"model {model!r} is not deployed on this cluster; models: {known}")
                if version and replicas and not any(replica.spec.version == version for replica in replicas):
                    versions = sorted({replica.spec.version for replica in replicas})
                    raise ModelNotFound(f"model {model!r} has no version {version!r} deployed; versions: {versions}")
                usable = [replica for replica in replicas if self._usable(replica, version)]
                if usable:
                    # Fewest requests in flight; among equals, the one that was sent the fewest so far.
                    chosen = min(usable, key=lambda replica: (replica.outstanding, replica.forwarded))
                    chosen.outstanding += 1
                    chosen.forwarded += 1
                    return chosen, self._channel(chosen.spec.entry)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ModelNotReady(
                        f"no healthy replica of model {model!r}{f' version {version}' if version else ''} "
                        f"({len(replicas)} placed, none answering health checks)"
                    )
                self._changed.wait(remaining)

    def _release(self, replica: _Replica) -> None:
        with self._lock:
            replica.outstanding -= 1
            self._changed.notify_all()

    def _mark_down(self, address: str) -> None:
        with self._lock:
            if self._node_health.get(address):
                self._node_health[address] = False
                self._changed.notify_all()
        self._wake.set()
        self._notify()

    # -- health ----------------------------------------------------------------------------------

    def check_health(self) -> None:
        """One round: ask every node's gRPC health at once; update who is in rotation."""
        with self._lock:
            addresses = list(self._node_health)
            channels = {address: self._channel(address) for address in addresses}
        pending = {
            address: health_pb2_grpc.HealthStub(channel).Check.future(
                health_pb2.HealthCheckRequest(), timeout=self.settings.cluster_health_timeout_seconds
            )
            for address, channel in channels.items()
        }
        results = {}
        for address, future in pending.items():
            try:
                results[address] = future.result().status == health_pb2.HealthCheckResponse.SERVING
            except grpc.RpcError:
                results[address] = False
        changed = False
        with self._lock:
            for address, serving in results.items():
                if address in self._node_health and self._node_health[address] != serving:
                    self._node_health[address] = serving
                    changed = True
                    log.info("node %s is %s", address, "back in rotation" if serving else "out of rotation")
            if changed:
                self._changed.notify_all()
        if changed:
            self._notify()

    def _check_health_forever(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.check_health()
            except Exception:  # the health loop must outlive any one bad round
                log.exception("health check round failed")
            self._wake.wait(self.settings.cluster_health_interval_seconds)

    # -- statistics ------------------------------------------------------------------------------

    def _model_stats(self, model: str) -> _ModelStats:
        with self._lock:
            return self._stats.setdefault(model, _ModelStats())

    def _trim(self, stats: _ModelStats) -> None:
        horizon = time.monotonic() - self.settings.cluster_stats_window_seconds
        while stats.window and stats.window[0][0] < horizon:
            stats.window.popleft()

    def stats(self, model: str) -> dict:
        """Totals, and over the last ``cluster_stats_window_seconds``: requests per second and p50/p99 latency."""
        with self._lock:
            stats = self._stats.get(model) or _ModelStats()
            self._trim(stats)
            window = list(stats.window)
            totals = {"requests": stats.requests, "failed": stats.failures, "retried": stats.retries}
        latencies = np.array([seconds for _, seconds, _ in window]) if window else np.zeros(0)
        span = self.settings.cluster_stats_window_seconds
        return {
            **totals,
            "rate_per_second": round(len(window) / span, 3),
            "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 3) if window else None,
            "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 3) if window else None,
        }
