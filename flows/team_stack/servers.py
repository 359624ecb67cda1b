"""How the stack's two servers start: the command, its environment, and the URL that answers once it is ready.

Database passwords go to the servers through their environment, never their command lines (``ps`` shows those
to every user of the machine).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from fpgaflow.flows.team_stack.processes import HOST


@dataclass(frozen=True)
class ServerSpec:
    name: str
    command: list[str]
    environment: dict[str, str]
    url: str
    health_url: str
    export: dict[str, str]


def mlflow_server(port: int, database_uri: str, artifacts: Path) -> ServerSpec:
    """The tracking server: runs and registry in PostgreSQL, artifacts proxied (``mlflow-artifacts:/``) into ``artifacts``."""
    url = f"http://{HOST}:{port}"
    command = [
        sys.executable, "-m", "mlflow", "server", "--serve-artifacts", "--artifacts-destination", str(artifacts),
        "--host", HOST, "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    environment = {
        **os.environ,
        "MLFLOW_BACKEND_STORE_URI": database_uri,
        # Its job runner (GenAI evaluation and trace jobs, seven worker processes) is nothing fpgaflow uses.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    return ServerSpec("mlflow", command, environment, url, f"{url}/health", {"FPGAFLOW_MLFLOW_TRACKING_URI": url})


def prefect_server(port: int, database_uri: str, prefect_home: Path) -> ServerSpec:
    """The Prefect server (API, UI, scheduler, automations) on PostgreSQL, its own home in the stack folder."""
    url = f"http://{HOST}:{port}"
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port)]
    outside = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    environment = {
        **outside,
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_API_DATABASE_CONNECTION_URL": database_uri,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    return ServerSpec("prefect", command, environment, f"{url}/", f"{url}/api/health", {"PREFECT_API_URL": f"{url}/api"})
