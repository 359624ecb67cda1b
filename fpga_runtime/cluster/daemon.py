"""The gateway process of a cluster, and how commands start, find and stop it.

``python -m fpgaflow.fpga_runtime.cluster.daemon`` runs the gateway (the nodes' gRPC APIs, routing), the
control service and the controller in one process, holding ``<home>/cluster/gateway.lock`` for
its lifetime (one gateway per cluster). It loads the saved state, re-adopts the nodes that still
run and has the supervisor restart the others, then prints ``listening on HOST:PORT``. SIGTERM
stops the gateway but leaves the nodes running (a later start re-adopts them); the control
service's Shutdown takes the whole cluster down.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import sys
import threading
import uuid
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path

import grpc

from fpgaflow.fpga_runtime.cluster.control import ClusterClient, control_handler
from fpgaflow.fpga_runtime.cluster.controller import Controller
from fpgaflow.fpga_runtime.cluster.gateway import Gateway
from fpgaflow.fpga_runtime.cluster.launchers import LAUNCHERS, build_launcher, launcher_name
from fpgaflow.fpga_runtime.cluster.processes import command_line, spawn, terminate, wait_for_exit, wait_until_listening
from fpgaflow.fpga_runtime.cluster.state import ClusterState, GatewayRecord, StateStore, cluster_dir, new_state
from fpgaflow.fpga_runtime.errors import FpgaflowError
from fpgaflow.fpga_runtime.profiles import load_profile
from fpgaflow.fpga_runtime.settings import Settings, get_settings

log = logging.getLogger(__name__)
LOCK_FILE = "gateway.lock"
GATEWAY_LOG = "gateway.log"
CONTROL_HOST = "127.0.0.1"
CONTROL_WORKERS = 4


class GatewayLock:
    """An exclusive lock on ``gateway.lock``, held by the running gateway (released when it exits, however)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / LOCK_FILE
        self._file = open(self.path, "a+")  # noqa: SIM115  (held open while the gateway runs: the lock lives on it)

    def try_acquire(self) -> bool:
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def release(self) -> None:
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()


def gateway_running(settings: Settings) -> bool:
    lock = GatewayLock(cluster_dir(settings))
    try:
        return not lock.try_acquire()
    finally:
        lock.release()


# -- the commands' side ----------------------------------------------------------------------------


def running_state(settings: Settings) -> ClusterState:
    """The state of the running cluster, or an error saying there is none (and how to start it)."""
    directory = cluster_dir(settings)
    state = StateStore(directory).load()
    if state is None:
        raise FpgaflowError(f"no cluster in {directory}: start one with `fpgaflow cluster up`")
    if not gateway_running(settings) or state.gateway is None:
        raise FpgaflowError(
            f"the gateway of the cluster in {directory} is not running ({len(state.placements)} placement(s) saved); "
            "`fpgaflow cluster up` restarts it and re-adopts the nodes that still run"
        )
    return state


def running_gateway(settings: Settings) -> GatewayRecord:
    """The running cluster's gateway, or the error :func:`running_state` gives."""
    gateway = running_state(settings).gateway
    assert gateway is not None  # running_state raises when the gateway is not running
    return gateway


def cluster_client(settings: Settings) -> ClusterClient:
    return ClusterClient(running_gateway(settings).control_address)


def start_gateway(
    settings: Settings,
    *,
    nodes: int | None = None,
    device: str | None = None,
    target: str | None = None,
    host: str | None = None,
    port: int | None = None,
) -> ClusterState:
    """Start the gateway process of the cluster in ``<home>/cluster`` (a new one, or the saved one again)."""
    directory = cluster_dir(settings)
    if gateway_running(settings):
        state = StateStore(directory).load()
        where = state.gateway.address if state and state.gateway else "an unknown address"
        raise FpgaflowError(
            f"a gateway already runs for the cluster in {directory} (at {where}); `fpgaflow cluster down` stops it"
        )
    module = (
        "fpgaflow.fpga_runtime.cluster.watchdog" if settings.cluster_gateway_watchdog else "fpgaflow.fpga_runtime.cluster.daemon"
    )
    command = [sys.executable, "-m", module, "--home", str(settings.home)]
    for flag, value in (("--nodes", nodes), ("--device", device), ("--target", target), ("--host", host), ("--port", port)):
        if value is not None:
            command += [flag, str(value)]
    log_path = directory / GATEWAY_LOG
    process = spawn(command, log_path)
    wait_until_listening(process, settings.cluster_node_start_timeout_seconds, log_path, "the cluster gateway")
    return running_state(settings)


def stop_cluster(settings: Settings) -> dict:
    """Cluster down: every node stopped, the target's networks removed, the gateway exited, the state forgotten."""
    gateway = running_gateway(settings)
    with ClusterClient(gateway.control_address) as client:
        result = client.shutdown()
    if not wait_for_exit(gateway.pid, settings.server_shutdown_grace_seconds + 30):
        kill_gateway(gateway)
    return result


def kill_gateway(gateway: GatewayRecord) -> None:
    """Stop a gateway and its watchdog (first, so it does not start the gateway again); its nodes keep running."""
    if gateway.watchdog_pid and "fpgaflow.fpga_runtime.cluster.watchdog" in command_line(gateway.watchdog_pid):  # pids are reused
        terminate(gateway.watchdog_pid, 5)
    terminate(gateway.pid, 0)


# -- the gateway process ---------------------------------------------------------------------------


def _load_or_create_state(store: StateStore, args: argparse.Namespace, settings: Settings) -> ClusterState:
    state = store.load()
    if state is None:
        target = args.target or settings.cluster_target
        if target not in LAUNCHERS:
            raise FpgaflowError(f"a cluster runs on the targets {sorted(LAUNCHERS)}, not {target!r}")
        device = args.device or settings.device_profile
        load_profile(device)
        return new_state(uuid.uuid4().hex[:8], target, device, args.nodes or settings.cluster_nodes)
    state.launcher = launcher_name(state.launcher)
    if args.target and args.target != state.target:
        raise FpgaflowError(
            f"the cluster in {store.directory} runs on the {state.target} target, not {args.target}; take it down first"
        )
    if args.device and args.device != state.device_profile:
        if any(not node.free for node in state.nodes):
            raise FpgaflowError(
                f"the cluster in {store.directory} has {state.device_profile} devices holding models; "
                "undeploy them to change the device"
            )
        load_profile(args.device)
        state.device_profile = args.device
    if args.nodes:
        state.resize(args.nodes)
    return state


def serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(home=args.home) if args.home else get_settings()
    directory = cluster_dir(settings)
    lock = GatewayLock(directory)
    if not lock.try_acquire():
        raise FpgaflowError(f"a gateway already runs for the cluster in {directory}")
    store = StateStore(directory)
    state = _load_or_create_state(store, args, settings)
    launcher = build_launcher(state.launcher, state.name, settings, directory)
    host = args.host or settings.cluster_gateway_host
    port = settings.cluster_gateway_port if args.port is None else args.port
    gateway = Gateway(f"{host}:{port}", settings)
    controller = Controller(state, store, launcher, gateway, settings)
    stop_requested, taken_down = threading.Event(), threading.Event()

    def take_down() -> None:
        taken_down.set()
        stop_requested.set()

    control = grpc.server(
        futures.ThreadPoolExecutor(max_workers=CONTROL_WORKERS, thread_name_prefix="fpgaflow-control"),
        handlers=[control_handler(controller, take_down, gateway.metrics)],
    )
    control_port = control.add_insecure_port(f"{CONTROL_HOST}:0")
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda *_: stop_requested.set())

    controller.restore_routes()
    gateway.start()
    control.start()
    state.gateway = GatewayRecord(
        address=gateway.address,
        control_address=f"{CONTROL_HOST}:{control_port}",
        pid=os.getpid(),
        log=str(directory / GATEWAY_LOG),
        watchdog_pid=args.watchdog_pid,
    )
    store.save(state)
    controller.start_supervising()
    log.info(
        "cluster %s (%s target, %d %s nodes): gateway %s, control %s",
        state.name,
        state.target,
        len(state.nodes),
        state.device_profile,
        gateway.address,
        state.gateway.control_address,
    )
    print(f"listening on {gateway.address}", flush=True)

    stop_requested.wait()
    controller.stop_supervising()
    if not taken_down.is_set():
        log.info("stopping the gateway; the nodes keep running")
        controller.forget_gateway()
    gateway.stop()
    control.stop(grace=5).wait()
    launcher.release()
    lock.release()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fpgaflow.fpga_runtime.cluster.daemon", description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=None, help="Project home (default: the home setting).")
    parser.add_argument("--nodes", type=int, default=None, help="Nodes of a new cluster, or the new size of the saved one.")
    parser.add_argument("--device", default=None, help="Device profile of the nodes (default: the device_profile setting).")
    parser.add_argument("--target", default=None, help="local or docker (default: the cluster_target setting).")
    parser.add_argument("--host", default=None, help="Gateway interface (default: the cluster_gateway_host setting).")
    parser.add_argument(
        "--port", type=int, default=None, help="Gateway port; 0 picks a free one (default: the cluster_gateway_port setting)."
    )
    parser.add_argument(
        "--watchdog-pid", type=int, default=None, help="The watchdog running this gateway (it passes its own pid)."
    )
    args = parser.parse_args(argv)
    try:
        return serve(args)
    except FpgaflowError as error:
        print(f"fpgaflow.fpga_runtime.cluster.daemon: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
