"""`fpgaflow ui mlflow|prefect [--port N]`: either UI against the embedded stores, run by this Python.

The server runs as a child process of this command with ``sys.executable`` (the project's own environment,
activated or not); the command prints the URL once the server answers and stops it on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from types import FrameType

from fpgaflow.flows.cli import UsageError
from fpgaflow.flows.team_stack.processes import HOST, answers, free_port
from fpgaflow.tasks.settings import DEFAULT_UI_PORTS

READY_TIMEOUT_SECONDS = 180.0
POLL_SECONDS = 0.25


@dataclass(frozen=True)
class UiServer:
    """How to start one UI: the command, its environment, where it answers when ready and what to open."""

    command: list[str]
    environment: dict[str, str]
    health_url: str
    url: str


def mlflow_ui(port: int) -> UiServer:
    from fpgaflow.tasks.settings import get_pipeline_settings

    uri = get_pipeline_settings().mlflow_tracking_uri
    if not uri.startswith("sqlite:"):
        raise UsageError(
            f"fpgaflow tracks to {uri} (FPGAFLOW_MLFLOW_TRACKING_URI), not to its embedded SQLite store: open that server's UI"
        )
    base = f"http://{HOST}:{port}"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    return UiServer(command, dict(os.environ), f"{base}/health", base)


def prefect_ui(port: int) -> UiServer:
    from fpgaflow.flows.prefect_defaults import apply_prefect_defaults

    apply_prefect_defaults()  # PREFECT_HOME inside the fpgaflow home: the database embedded runs write to
    base = f"http://{HOST}:{port}"
    environment = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    # The UI's own pages call the API at PREFECT_UI_API_URL, which would otherwise name the default port.
    environment["PREFECT_UI_API_URL"] = f"{base}/api"
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port)]
    return UiServer(command, environment, f"{base}/api/health", base)


UIS = {"mlflow": mlflow_ui, "prefect": prefect_ui}


def register(subparsers) -> None:
    ui = subparsers.add_parser(
        "ui", help="Start the MLflow or Prefect UI on the embedded stores (this Python's environment); prints the URL."
    )
    ui.add_argument("which", choices=sorted(UIS), help="Which UI.")
    ui.add_argument(
        "--port", type=int, help="Port on 127.0.0.1 (default: 5000 for mlflow, 4200 for prefect; 0 picks a free one)."
    )
    ui.set_defaults(handler=_ui)


def wait_until_ready(process: subprocess.Popen, server: UiServer, timeout: float = READY_TIMEOUT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not answers(server.health_url):
        if process.poll() is not None:
            raise UsageError(
                f"the UI server exited with code {process.returncode} before it answered ({' '.join(server.command)})"
            )
        if time.monotonic() > deadline:
            raise UsageError(f"the UI server did not answer at {server.health_url} within {timeout:.0f} s")
        time.sleep(POLL_SECONDS)


def _ui(args: argparse.Namespace) -> int:
    port = DEFAULT_UI_PORTS[args.which] if args.port is None else args.port
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {port}")
    server = UIS[args.which](port or free_port())
    # Its own process group: the servers start workers of their own, and stopping the group stops them too.
    process = subprocess.Popen(server.command, env=server.environment, stdout=sys.stderr, start_new_session=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        wait_until_ready(process, server)
        print(f"{args.which} UI: {server.url}   (Ctrl-C stops it)", flush=True)
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_group(process)


def stop_group(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM to the server's process group, SIGKILL after ``grace`` seconds."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
