"""The ``local`` target: every node is a process on this machine, on a free loopback port.

A whole service runs as ``python -m fpgaflow.fpga_runtime SERVICE_DIR``, a segment of a split service as
``python -m fpgaflow.fpga_runtime.chain SERVICE_DIR --segment K --next HOST:PORT``, both with ``--devices N``
(the devices the cluster holds for the node); each in a session of its own (nodes outlive the gateway that
started them), its log in ``<cluster>/logs/<node>.log``.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from fpgaflow.fpga_runtime.cluster.launcher import NodeProcess, NodeSpec
from fpgaflow.fpga_runtime.cluster.processes import command_line, pid_alive, spawn, terminate, wait_until_listening
from fpgaflow.fpga_runtime.cluster.state import NodeRecord
from fpgaflow.fpga_runtime.settings import Settings

NODE_HOST = "127.0.0.1"
RUNTIME_MODULE = "fpgaflow.fpga_runtime"


class LocalLauncher:
    requires_image = False

    def __init__(self, cluster_name: str, settings: Settings, directory: Path) -> None:
        self.settings = settings
        self.logs = Path(directory) / "logs"
        self._children: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def command(self, spec: NodeSpec) -> list[str]:
        where = ["--host", NODE_HOST, "--port", "0", "--device", spec.device_profile, "--devices", str(spec.devices)]
        if spec.segment is None:
            return [sys.executable, "-m", RUNTIME_MODULE, spec.service_dir, *where]
        hop = ["--next", spec.next_hop] if spec.next_hop else []
        return [sys.executable, "-m", f"{RUNTIME_MODULE}.chain", spec.service_dir, "--segment", str(spec.segment), *hop, *where]

    def start(self, spec: NodeSpec) -> NodeProcess:
        log_path = self.logs / f"{spec.node_id}.log"
        what = f"{spec.node_id} ({spec.model} {spec.version}{f' segment {spec.segment}' if spec.segment else ''})"
        process = spawn(self.command(spec), log_path)
        address = wait_until_listening(process, self.settings.cluster_node_start_timeout_seconds, log_path, what)
        with self._lock:
            self._children[process.pid] = process
        return NodeProcess(address=address, pid=process.pid, log=str(log_path))

    def next_hop_address(self, process: NodeProcess) -> str:
        return process.address

    def alive(self, node: NodeRecord) -> bool:
        if node.pid is None:
            return False
        with self._lock:
            child = self._children.get(node.pid)
        if child is not None:
            return child.poll() is None
        # A node of an earlier gateway: its pid must still be an fpgaflow node (pids are reused).
        running = command_line(node.pid) if pid_alive(node.pid) else None
        return running is not None and (not running or RUNTIME_MODULE in running)

    def stop(self, node: NodeRecord, grace: float) -> None:
        if node.pid is None:
            return
        with self._lock:
            child = self._children.pop(node.pid, None)
        if child is not None or self.alive(node):
            terminate(node.pid, grace, child)

    def close(self) -> None:
        self.release()

    def release(self) -> None:
        with self._lock:
            self._children.clear()
