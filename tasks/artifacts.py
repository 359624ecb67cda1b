"""Prefect artifacts for pipeline steps: one stable key per step, published only inside a Prefect run
(the plain step functions stay usable, and testable, without a Prefect API)."""

from __future__ import annotations

import re

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext, TaskRunContext

KEY_PATTERN = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")

# The artifact of each step of `train_and_deploy`, in the order the steps run, for classifiers and detectors alike.
PIPELINE_ARTIFACTS = (
    "data-validation",
    "mlflow-run",
    "featurizer",
    "training-epochs",
    "evaluation",
    "test-metrics-per-class",
    "model-registration",
    "onnx-parity",
    "numerics",
    "service-definition",
    "model-card",
    "image-build",
    "deployment",
    "smoke-test",
)


def in_prefect_run() -> bool:
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def _checked(key: str) -> str:
    if not KEY_PATTERN.match(key):
        raise ValueError(f"artifact key {key!r} must be lowercase letters, digits and dashes")
    return key


def publish_table(key: str, rows: list[dict], description: str) -> str | None:
    if not in_prefect_run():
        return None
    create_table_artifact(key=_checked(key), table=rows, description=description)
    return key


def publish_markdown(key: str, markdown: str, description: str) -> str | None:
    if not in_prefect_run():
        return None
    create_markdown_artifact(key=_checked(key), markdown=markdown, description=description)
    return key


def publish_link(key: str, link: str, link_text: str, description: str) -> str | None:
    if not in_prefect_run():
        return None
    create_link_artifact(key=_checked(key), link=link, link_text=link_text, description=description)
    return key
