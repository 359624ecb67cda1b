"""Retraining: the config a retrain runs with, scoring candidate and champion on the same test split,
and the rule that decides whether the candidate replaces the champion.

The rule (setting ``retrain_min_improvement``): the candidate must have passed its gates, and its
quality minus the champion's, both measured now on the current data's test split with the kind's
measure (accuracy for a classifier, mAP@0.5 for a detector), must be greater than the setting. With
no champion yet, a candidate that passed its gates becomes champion.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, get_origin

from pydantic import BaseModel, ConfigDict, Field

from fpgaflow.tasks.config import PipelineConfig, load_config
from fpgaflow.tasks.detection.quality import MeanAPReport
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.operations.quality import QualityMeasure
from fpgaflow.tasks.operations.scoring import AccuracyReport
from fpgaflow.tasks.registry.client import mlflow_client, talks_to_mlflow
from fpgaflow.tasks.registry.lookup import ResolvedVersion, find_champion
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings

RETRAIN_UNTIL = "package"

Report = Annotated[AccuracyReport | MeanAPReport, Field(discriminator="metric")]


class VersionScore(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    report: Report


class RetrainDecision(BaseModel):
    model_config = ConfigDict(frozen=True)

    promote: bool
    reason: str
    candidate: VersionScore
    champion: VersionScore | None
    min_improvement: float
    improvement: float | None


# -- the config a retrain runs with ---------------------------------------------------------------


def _is_tuple_field(model: type[BaseModel], name: str) -> bool:
    return get_origin(model.model_fields[name].annotation) is tuple


def _section(name: str) -> type[BaseModel] | None:
    """The model of a nested config section (``training``, ...), or None for a plain field."""
    annotation = PipelineConfig.model_fields[name].annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _param_value(model: type[BaseModel], name: str, value: str):
    if value == "None":  # how ``runs.flatten`` writes an unset optional field
        return None
    return tuple(part for part in value.split(",") if part) if _is_tuple_field(model, name) else value


def config_from_params(params: Mapping[str, str]) -> dict:
    """The pipeline config recorded as MLflow run params (``runs.flatten`` of the config) → raw config.

    Params that are not config fields (``featurizer.feature_dim``, ``data.train_images`` ...) are ignored.
    """
    raw: dict = {}
    for key, value in params.items():
        name, _, field = key.partition(".")
        if name not in PipelineConfig.model_fields:
            continue
        section = _section(name)
        if section is None and not field:
            raw[name] = _param_value(PipelineConfig, name, value)
        elif section is not None and field in section.model_fields:
            raw.setdefault(name, {})[field] = _param_value(section, field, value)
    return raw


@talks_to_mlflow
def retrain_config(
    data_dir: str = "", model_name: str = "", config_path: str = "", settings: PipelineSettings | None = None
) -> PipelineConfig:
    """What a retrain trains with: the YAML file when given, else the champion's own config (read from its
    MLflow run), else the defaults; ``data_dir`` overrides, and it stops after packaging.

    ``model_name`` is written into a config taken from the champion only when the config would not name
    the model so by itself, so that a retrain of unchanged data with the champion's config is the same
    run as the champion's and comes back from the cache.
    """
    overrides = {"data_dir": data_dir or None, "until": RETRAIN_UNTIL}
    if config_path:
        return load_config(Path(config_path), model_name=model_name or None, **overrides)
    if not model_name and not data_dir:
        raise PipelineStepError("retrain needs a data folder or a model name (the champion's run names its data folder)")
    name = model_name or PipelineConfig(data_dir=Path(data_dir)).resolved_model_name
    champion = find_champion(name, settings)
    base = config_from_params(mlflow_client(settings).get_run(champion.run_id).data.params) if champion else {}
    if not data_dir and "data_dir" not in base:
        raise PipelineStepError(f"model {name!r} has no champion to take the data folder from: give the data folder")
    base.update({key: value for key, value in overrides.items() if value is not None})
    config = PipelineConfig.model_validate(base)
    if config.resolved_model_name != name:
        config = PipelineConfig.model_validate({**base, "model_name": name})
    return config


# -- scoring and the decision ---------------------------------------------------------------------


def score_version(
    version: ResolvedVersion, measure: QualityMeasure, split_path: str | Path, batch_size: int | None = None
) -> VersionScore:
    """The quality of a version's service definition (its ONNX stages, in this process) on the test split of
    ``split_path``, by ``measure`` (the kind's)."""
    batch_size = batch_size or get_pipeline_settings().server_max_batch_size
    report = measure.score_service(version.service_dir, split_path, batch_size)
    return VersionScore(name=version.name, version=version.version, report=report)  # type: ignore[arg-type]


def decide(
    candidate: VersionScore, champion: VersionScore | None, candidate_gates_passed: bool, min_improvement: float
) -> RetrainDecision:
    """Whether the candidate replaces the champion, and why."""

    def decision(promote: bool, improvement: float | None, reason: str) -> RetrainDecision:
        return RetrainDecision(
            promote=promote,
            reason=reason,
            candidate=candidate,
            champion=champion,
            min_improvement=min_improvement,
            improvement=improvement,
        )

    label = f"candidate version {candidate.version}"
    if not candidate_gates_passed:
        return decision(
            promote=False,
            improvement=None,
            reason=f"{label} did not pass its gates (parity or served numeric format); the champion stays",
        )
    if champion is None:
        return decision(
            promote=True,
            improvement=None,
            reason=f"there is no champion yet: {label} passed its gates and becomes champion",
        )
    if champion.version == candidate.version:
        return decision(promote=False, improvement=0.0, reason=f"{label} already is the champion")
    ours, theirs = candidate.report, champion.report
    if ours.images != theirs.images:
        raise ValueError(f"candidate and champion were scored on different image sets ({ours.images} vs {theirs.images} images)")
    improvement = ours.improvement_over(theirs)
    measured = (
        f"on the same {ours.images} test images {label} scores {ours.metric} {ours.value:.4f}, champion version "
        f"{champion.version} {theirs.value:.4f} ({improvement * 100:+.2f} points; required: more than "
        f"{min_improvement * 100:+.2f})"
    )
    if improvement > min_improvement:
        return decision(promote=True, improvement=improvement, reason=f"promoted: {measured}")
    return decision(promote=False, improvement=improvement, reason=f"the champion stays: {measured}")


def decision_markdown(decision: RetrainDecision) -> str:
    candidate, champion = decision.candidate, decision.champion
    verdict = "promote the candidate" if decision.promote else "keep the champion"
    lines = [f"# Retrain decision: {verdict}", "", decision.reason, "", f"Measured: {candidate.report.metric}.", ""]
    header = f"| class | candidate v{candidate.version} |" + (f" champion v{champion.version} |" if champion else "")
    lines += [header, "|---|---|" + ("---|" if champion else "")]
    theirs = champion.report.class_cells() if champion else {}
    for label, cell in candidate.report.class_cells().items():
        lines.append(f"| {label} | {cell} |" + (f" {theirs.get(label, '-')} |" if champion else ""))
    total = f"| **all** | {candidate.report.total_cell()} |"
    if champion:
        total += f" {champion.report.total_cell()} |"
    lines.append(total)
    return "\n".join(lines) + "\n"
