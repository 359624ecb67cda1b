"""The Prefect events fpgaflow emits, and the resources they are about.

``prefect.yaml`` triggers ``retrain`` on both events; their names and payload keys are spelled here
once (and checked against ``prefect.yaml`` by the tests).

- ``fpgaflow.dataset.updated`` (resource ``fpgaflow.dataset.<hash of the folder path>``): a data
  folder's fingerprint changed. Payload: ``data_dir``, ``fingerprint``, ``previous_fingerprint``,
  ``num_images``, ``model_name`` (empty = the folder's name, the pipeline's default).
- ``fpgaflow.model.degraded`` (resource ``fpgaflow.model.<model name>``): the deployed model scored
  below the threshold on a labelled holdout. Payload: ``model_name``, ``accuracy``, ``threshold``,
  ``data_dir`` (the holdout), ``endpoint``, ``images``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DATASET_UPDATED = "fpgaflow.dataset.updated"
MODEL_DEGRADED = "fpgaflow.model.degraded"
DATASET_RESOURCE_PREFIX = "fpgaflow.dataset."
MODEL_RESOURCE_PREFIX = "fpgaflow.model."
RESOURCE_ID = "prefect.resource.id"
RESOURCE_NAME = "prefect.resource.name"


def folder_key(data_dir: Path) -> str:
    """A short stable key of a folder's resolved path (the same folder always gets the same key)."""
    return hashlib.sha256(str(Path(data_dir).expanduser().resolve()).encode()).hexdigest()[:16]


def dataset_resource(data_dir: Path) -> dict[str, str]:
    data_dir = Path(data_dir).expanduser().resolve()
    return {
        RESOURCE_ID: f"{DATASET_RESOURCE_PREFIX}{folder_key(data_dir)}",
        RESOURCE_NAME: data_dir.name,
        "fpgaflow.data_dir": str(data_dir),
    }


def model_resource(model_name: str) -> dict[str, str]:
    return {RESOURCE_ID: f"{MODEL_RESOURCE_PREFIX}{model_name}", RESOURCE_NAME: model_name}


def emit(event: str, resource: Mapping[str, str], payload: Mapping[str, Any]) -> str | None:
    """Send one event to the Prefect API in use; returns its id, or None when Prefect could not take it.

    Prefect sends events in the background and flushes them before the process exits.
    """
    from prefect.events import emit_event

    sent = emit_event(event=event, resource=dict(resource), payload=dict(payload))
    return str(sent.id) if sent is not None else None
