"""Run one node from the command line: ``fpgaflow serve`` and ``python -m fpgaflow.fpga_runtime`` share this.

Prints ``listening on HOST:PORT`` on stdout once the model is loaded and calls are answered, then
what it serves on (``serving digits v1 in fp32 over 4 × stratix10, modelled device latency ...``: a
featurizer too large for one device is split as the cluster splits it and chained over as many
emulated devices as it needs, at most ``--devices``), and ``metrics on http://HOST:PORT/metrics``
when metrics are on; SIGTERM or SIGINT stop it
gracefully: in-flight calls finish (up to the shutdown grace), then exit code 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("service_dir", type=Path, help="Service directory (service.json and its ONNX files).")
    parser.add_argument("--host", default=None, help="Interface to bind (default: the server_host setting).")
    parser.add_argument(
        "--port", type=int, default=None, help="gRPC port; 0 picks a free one (default: the server_port setting)."
    )
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="Prometheus /metrics HTTP port; 0 picks a free one (default: off)."
    )
    parser.add_argument("--device", default=None, help="Device profile name or YAML path (default: the device_profile setting).")
    parser.add_argument(
        "--devices",
        type=positive_count,
        default=None,
        metavar="N",
        help="Most emulated devices to chain the model over (default: the server_devices setting, else as many as it needs).",
    )


def run(args: argparse.Namespace) -> int:
    from fpgaflow.fpga_runtime.server import create_server
    from fpgaflow.fpga_runtime.settings import get_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    host = args.host or settings.server_host
    port = settings.server_port if args.port is None else args.port
    metrics_port = settings.server_metrics_port if args.metrics_port is None else args.metrics_port
    stop_requested = threading.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda *_: stop_requested.set())

    server, bound_port = create_server(
        args.service_dir,
        _address(host, port),
        device_profile=args.device,
        metrics_port=metrics_port,
        settings=settings,
        max_devices=args.devices,
    )
    server.start()
    try:
        server.wait_until_ready()
    except BaseException:
        server.stop(0).wait()
        raise
    print(f"listening on {_address(host, bound_port)}", flush=True)
    for executor in server.data_plane.executors():
        print(executor.describe(), flush=True)
    if server.health_port is not None:
        print(f"health on {_address(host, server.health_port)} (plaintext, gRPC health only)", flush=True)
    if server.metrics_port is not None:
        print(f"metrics on http://{_address(host, server.metrics_port)}/metrics", flush=True)
    stop_requested.wait()
    logging.getLogger(__name__).info("stopping: draining in-flight calls for up to %s s", settings.server_shutdown_grace_seconds)
    server.stop().wait()
    return 0


def positive_count(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {value!r}")
    return int(value)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
