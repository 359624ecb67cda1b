"""Our node and gateway: every format's service deployed on one local emulated FPGA cluster of its
own (its own home directory), scored through the gateway with JPEG bytes in, probabilities out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fpgaflow.fpga_runtime.client import PredictionClient
from fpgaflow.tasks.settings import PipelineSettings


@dataclass(frozen=True)
class Deployed:
    numeric_format: str
    model: str
    host: str
    port: int
    devices: int
    service_dir: str


class BenchCluster:
    """Context manager: a local cluster under ``settings.home`` with every service deployed; taken down on exit."""

    def __init__(self, services: dict[str, Path], settings: PipelineSettings) -> None:
        self.services = services
        self.settings = settings
        self.deployed: dict[str, Deployed] = {}

    def __enter__(self) -> BenchCluster:
        from fpgaflow.tasks.deployment.deploy import deploy
        from fpgaflow.tasks.deployment.split import fit_to_device
        from fpgaflow.tasks.deployment.targets import start_cluster

        fits = {name: fit_to_device(path, self.settings.device_profile, self.settings) for name, path in self.services.items()}
        start_cluster(
            "local",
            nodes=sum(fit.devices for fit in fits.values()),
            device=self.settings.device_profile,
            port=0,
            settings=self.settings,
        )
        try:
            for name, fit in fits.items():
                result = deploy(fit.service_dir, target="local", replicas=1, settings=self.settings)
                host, _, port = result.endpoint.rpartition(":")
                self.deployed[name] = Deployed(
                    numeric_format=name,
                    model=result.model,
                    host=host,
                    port=int(port),
                    devices=result.devices,
                    service_dir=result.service_dir,
                )
        except BaseException:
            self._down()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self._down()

    def _down(self) -> None:
        from fpgaflow.fpga_runtime.cluster.daemon import gateway_running, stop_cluster

        if gateway_running(self.settings):
            stop_cluster(self.settings)

    def request(self, name: str, jpeg: bytes) -> Callable[[], np.ndarray]:
        """One gateway call (Predict, JPEG under ``images``) for the service of format ``name``; no retries."""
        deployed = self.deployed[name]
        client = PredictionClient(deployed.host, deployed.port, service_name=deployed.model, retries=0, timeout=60.0)
        return lambda: client.score_image(jpeg)

    def peak_rss_mb(self, name: str) -> float:
        """Largest peak resident set (VmHWM) among the node processes serving format ``name``."""
        from fpgaflow.fpga_runtime.cluster.daemon import running_state

        model = self.deployed[name].model
        pids = [node.pid for node in running_state(self.settings).nodes if node.model == model and node.pid]
        if not pids:
            raise RuntimeError(f"no running node process serves {model}")
        return max(peak_rss_mb(pid) for pid in pids)

    def gateway_peak_rss_mb(self) -> float:
        from fpgaflow.fpga_runtime.cluster.daemon import running_gateway

        return peak_rss_mb(running_gateway(self.settings).pid)


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size (VmHWM) in MB (10^6 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"/proc/{pid}/status has no VmHWM line")
