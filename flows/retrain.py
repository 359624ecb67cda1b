"""`retrain`: train a candidate on the current data, compare it with the champion on the same test split by
the kind's metric (accuracy, or mAP@0.5 for a detector), promote and roll it out only if it is better
(setting ``retrain_min_improvement``)."""

from __future__ import annotations

from prefect import flow

from fpgaflow.flows.deploy_model import deploy_model
from fpgaflow.flows.train_and_deploy import train_and_deploy
from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.data.steps import validate_data
from fpgaflow.tasks.kinds import kind_of
from fpgaflow.tasks.operations.steps import decide_task, retrain_config_task, score_version_task
from fpgaflow.tasks.registry.steps import find_champion_task, promote_task, resolve_version_task


@flow(name="retrain", log_prints=True)
def retrain(
    data_dir: str = "",
    model_name: str = "",
    config_path: str = "",
    roll_out: bool = True,
    tags: dict[str, str] | None = None,
    description: str | None = None,
) -> dict:
    """Retrain ``model_name`` on ``data_dir`` (either may be empty: the model name defaults to the folder's
    name, the folder to the one the champion was trained on). The config is the YAML file ``config_path``
    when given, else the champion's own. Artifact ``retrain-decision``: both versions' scores and why.
    ``roll_out`` deploys a promoted candidate to the config's target; ``tags`` and ``description`` label the
    version it registers."""
    config = retrain_config_task(data_dir, model_name, config_path)
    if tags or description:
        config = PipelineConfig.model_validate(
            {**config.model_dump(), "tags": tags or config.tags, "description": description or config.description}
        )
    name = config.resolved_model_name
    kind = kind_of(config)
    intake = validate_data(kind, config.data_dir)
    summary = train_and_deploy(config)
    candidate = resolve_version_task(name, str(summary["model_version"]))
    champion = find_champion_task(name)
    candidate_score = score_version_task(candidate, kind.quality, intake.split_path)
    if champion is None:
        champion_score = None
    elif champion.version == candidate.version:  # unchanged data and config: the cached run made no new version
        champion_score = candidate_score
    else:
        champion_score = score_version_task(champion, kind.quality, intake.split_path)
    decision = decide_task(candidate_score, champion_score, candidate.gates_passed)
    print(decision.reason)
    result = {
        "model_name": name,
        "candidate_version": candidate.version,
        "champion_version": champion.version if champion else None,
        "promoted": decision.promote,
        "reason": decision.reason,
        "metric": kind.quality.metric,
        "candidate_score": candidate_score.report.value,
        "champion_score": champion_score.report.value if champion_score else None,
        "training_flow_run_id": summary.get("flow_run_id"),
    }
    if decision.promote:
        promote_task(name, candidate.version)
        if roll_out:
            result["deployment"] = deploy_model(
                name, candidate.version, target=config.target, replicas=config.replicas, base_image=config.base_image or None
            )
    return result
