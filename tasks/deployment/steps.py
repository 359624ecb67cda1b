"""The deployment stage's smoke-test task: a deployed service of any kind answers as its service definition does offline."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import task
from prefect.cache_policies import NO_CACHE

from fpgaflow.tasks.artifacts import publish_table
from fpgaflow.tasks.settings import get_pipeline_settings

if TYPE_CHECKING:
    from fpgaflow.tasks.kinds import ModelKind
    from fpgaflow.tasks.kinds.protocol import SmokeOutcome


@task(name="smoke-test", cache_policy=NO_CACHE)
def smoke_test_task(kind: ModelKind, endpoint: str, service_dir: Path, images: Sequence) -> SmokeOutcome:
    keys = get_pipeline_settings().server_api_keys
    result = kind.smoke_test(endpoint, service_dir, images, api_key=keys[0] if keys else None)
    publish_table(
        "smoke-test",
        result.rows,
        f"{result.images} held-out images through {endpoint}: max abs diff {result.max_abs_diff:.2g}, "
        f"{kind.smoke_caption(result)}",
    )
    return result
