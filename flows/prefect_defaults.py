"""Process defaults under fpgaflow: Prefect's home inside the project home, no telemetry, and
TensorFlow's C++ start-up chatter kept out of the run log.

Set before Prefect is imported and only where the user has not set them already, so an existing
Prefect profile or a `PREFECT_API_URL` of a real server always wins.
"""

from __future__ import annotations

import os

from fpgaflow.tasks.settings import get_pipeline_settings


def apply_prefect_defaults() -> None:
    if "PREFECT_HOME" not in os.environ:
        prefect_home = get_pipeline_settings().home / "prefect"
        prefect_home.mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(prefect_home)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # A first start creates the database; on a busy 2-core machine that can take longer than 20 s.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
