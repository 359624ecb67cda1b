"""`fpgaflow ui mlflow|prefect` and `mlflow/start-local-ui`: the server answers at the printed URL and stops with the command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from fpgaflow.flows.cli.ui import answers

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
STARTUP_SECONDS = 240


def start(command: list[str], home: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    environment = {**(env if env is not None else os.environ), "FPGAFLOW_HOME": str(home)}
    environment.pop("PREFECT_API_URL", None)
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=environment, start_new_session=True
    )


def printed_url(process: subprocess.Popen) -> str:
    """The URL of the command's one line of output; reading blocks until the server answered or the command ended."""
    assert process.stdout is not None
    line = process.stdout.readline()
    assert " UI: http://127.0.0.1:" in line, f"unexpected output {line!r} (exit code {process.poll()})"
    return line.split(" UI: ", 1)[1].split()[0]


def stop(process: subprocess.Popen) -> int:
    """SIGTERM to the command's process group, as a terminal's Ctrl-C reaches all of it."""
    os.killpg(process.pid, signal.SIGTERM)
    return process.wait(timeout=60)


def stops_answering(url: str, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while answers(url):
        if time.monotonic() > deadline:
            return False
        pause.wait(0.2)
    return True


def test_the_prefect_ui_answers_at_the_printed_url_until_the_command_stops(tmp_path):
    process = start([sys.executable, "-m", "fpgaflow.flows", "ui", "prefect", "--port", "0"], tmp_path / "home")
    try:
        url = printed_url(process)
        with urllib.request.urlopen(url + "/api/health", timeout=30) as response:
            assert "true" in response.read().decode()
        with urllib.request.urlopen(url + "/ui-settings", timeout=30) as response:
            assert json.load(response)["api_url"] == url + "/api"  # the UI's pages call this server, not port 4200
    finally:
        code = stop(process)
    assert code == 0
    assert not answers(url + "/api/health")


def test_start_local_ui_runs_the_mlflow_ui_with_the_projects_environment_not_the_systems_python(tmp_path):
    """`mlflow/start-local-ui` is `fpgaflow ui mlflow` run by the project's environment, so this covers both."""
    plain_path = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", str(tmp_path))}
    process = start([str(REPO / "mlflow" / "start-local-ui"), "0"], tmp_path / "home", env=plain_path)
    try:
        url = printed_url(process)
        with urllib.request.urlopen(url + "/", timeout=30) as response:
            assert "MLflow" in response.read().decode()
    finally:
        stop(process)  # the script's shell may end by the signal; the UI command behind it stops the server
    assert stops_answering(url + "/health")
