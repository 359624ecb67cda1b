"""Promotion: ``champion`` for a completely published version whose gates passed, a clear refusal for any other."""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict

from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.registry.client import mlflow_client, talks_to_mlflow
from fpgaflow.tasks.registry.run_metrics import GATE_TAG_PREFIX
from fpgaflow.tasks.registry.version_state import CHAMPION_ALIAS, GATES_PASSED, TAG_GATES, TAG_STATUS, VersionStatus, get_version
from fpgaflow.tasks.settings import PipelineSettings


class PromotionRefused(PipelineStepError):
    """A version that may not become ``champion`` (gates failed or never recorded, publication incomplete)."""


class Promotion(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    previous_champion: str | None


@talks_to_mlflow
def promote(model_name: str, version: str | int, settings: PipelineSettings | None = None) -> Promotion:
    """Give ``champion`` to a completely published version whose gates passed; refuse any other with the reason."""
    client = mlflow_client(settings)
    model_version = get_version(client, model_name, version)
    version = str(model_version.version)
    refused = f"{model_name} version {version} cannot become {CHAMPION_ALIAS}"
    gates = model_version.tags.get(TAG_GATES)
    status = model_version.tags.get(TAG_STATUS)
    if gates is None:
        raise PromotionRefused(f"{refused}: it has no gate results (conversion, numerics and packaging never completed for it)")
    if status != VersionStatus.PUBLISHED:
        raise PromotionRefused(
            f"{refused}: its publication did not complete ({TAG_STATUS} is {status or 'missing'}); "
            "a re-run of the pipeline completes it"
        )
    if gates != GATES_PASSED:
        details = "; ".join(
            f"{key.removeprefix(GATE_TAG_PREFIX)} {value}"
            for key, value in sorted(model_version.tags.items())
            if key.startswith(GATE_TAG_PREFIX) and value.startswith("failed")
        )
        raise PromotionRefused(f"{refused}: gates {gates} ({details})")
    try:
        previous = client.get_model_version_by_alias(model_name, CHAMPION_ALIAS).version
    except MlflowException:
        previous = None
    client.set_registered_model_alias(model_name, CHAMPION_ALIAS, version)
    return Promotion(name=model_name, version=version, previous_champion=str(previous) if previous is not None else None)
