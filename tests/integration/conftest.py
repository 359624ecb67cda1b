"""Integration fixtures shared across folders: one Prefect test harness for the whole session."""

from __future__ import annotations

import pytest

HARNESS_STARTUP_SECONDS = 180


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect database behind an ephemeral API, started once for every flow-run test."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=HARNESS_STARTUP_SECONDS):
        yield
