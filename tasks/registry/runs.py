"""One MLflow run per pipeline run, holding everything a reviewer needs.

Opening it with the config and lineage, the data it saw, closing it.

Every function takes the run id explicitly (steps may run in different processes or task runs).

What lands where in a run:

- params: the pipeline config (``featurizer``, ``weights``, ``training.epochs`` ...) and the
  featurizer's facts (``featurizer.feature_dim`` ...);
- tags: ``fpgaflow.dataset_fingerprint``, ``mlflow.source.git.commit``,
  ``fpgaflow.prefect.flow_run_id`` / ``fpgaflow.prefect.flow_run_url`` (inside a flow run),
  ``fpgaflow.gate.<format>`` (numerics gate outcome);
- metrics: training curves (``loss``, ``val_accuracy`` ..., step = epoch), evaluation
  (``test_accuracy`` ...), parity (``parity.<stage>.<measure>``) and numerics
  (``numerics.<format>.accuracy`` / ``.delta``), see :mod:`fpgaflow.tasks.registry.run_metrics`;
- artifacts: ``data/`` (validation report, split manifest), ``evaluation/`` (confusion
  matrix, per-class table, featurizer facts), ``conversion/conversion_report.json``,
  ``model_card.md`` and ``service/`` (the service definition package).
"""

from __future__ import annotations

import csv
import subprocess
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Param

from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.registry.client import ensure_experiment, mlflow_client, talks_to_mlflow
from fpgaflow.tasks.settings import DEFAULT_UI_PORTS, PipelineSettings, get_pipeline_settings

TAG_MODEL_NAME = "fpgaflow.model_name"


TAG_DATASET_FINGERPRINT = "fpgaflow.dataset_fingerprint"


TAG_GIT_COMMIT = "mlflow.source.git.commit"


TAG_FLOW_RUN_ID = "fpgaflow.prefect.flow_run_id"


TAG_FLOW_RUN_URL = "fpgaflow.prefect.flow_run_url"

# How the featurizer's weights were chosen: ImageNet, or why a run fell back to seeded random initialisation.
TAG_WEIGHTS = "fpgaflow.weights"


SPLIT_PARAM = "data.{split}_images"


FEATURIZER_PARAM_PREFIX = "featurizer."


ARTIFACT_DATA_DIR = "data"


ARTIFACT_EVALUATION_DIR = "evaluation"


ARTIFACT_CONVERSION_REPORT = "conversion/conversion_report.json"


ARTIFACT_MODEL_CARD = "model_card.md"


ARTIFACT_SERVICE_DIR = "service"


ARTIFACT_SMOKE_TEST_DIR = "smoke-test"


def git_commit(directory: Path | None = None) -> str | None:
    """The commit checked out in ``directory`` (default: the working directory), if it is a git work tree."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=directory or Path.cwd(),
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


def prefect_ui_url(settings: PipelineSettings | None = None) -> str:
    """Where people open the Prefect UI: the configured URL, Prefect's ``PREFECT_UI_URL`` (a real server), or
    `fpgaflow ui prefect` at its default port (the embedded runs' database)."""
    from prefect.settings import PREFECT_UI_URL

    settings = settings or get_pipeline_settings()
    url = settings.prefect_ui_url or PREFECT_UI_URL.value() or f"http://127.0.0.1:{DEFAULT_UI_PORTS['prefect']}"
    return str(url).rstrip("/")


def prefect_flow_run() -> tuple[str | None, str | None]:
    """(flow run id, its page in the Prefect UI) of the Prefect flow run this code runs in; (None, None) outside a flow."""
    from prefect.runtime import flow_run

    run_id = flow_run.id
    if run_id is None:
        return None, None
    return str(run_id), f"{prefect_ui_url()}/runs/flow-run/{run_id}"


def lineage_tags(model_name: str, dataset_fingerprint: str) -> dict[str, str]:
    tags = {TAG_MODEL_NAME: model_name, TAG_DATASET_FINGERPRINT: dataset_fingerprint}
    commit = git_commit()
    if commit:
        tags[TAG_GIT_COMMIT] = commit
    flow_run_id, flow_run_url = prefect_flow_run()
    if flow_run_id:
        tags[TAG_FLOW_RUN_ID] = flow_run_id
    if flow_run_url:
        tags[TAG_FLOW_RUN_URL] = flow_run_url
    return tags


VERSION_LABELS = {"tags", "description"}  # labels of the model version the run registers, not run parameters


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → MLflow params: ``{"training": {"epochs": 3}}`` → ``{"training.epochs": "3"}``."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = ",".join(str(item) for item in value)
        else:
            flat[name] = str(value)
    return flat


@talks_to_mlflow
def start_pipeline_run(
    config: PipelineConfig,
    dataset_fingerprint: str,
    settings: PipelineSettings | None = None,
    run_name: str | None = None,
    weights_note: str = "",
) -> str:
    """Open the MLflow run of one pipeline run: config as params, lineage (and how the featurizer's weights
    were chosen) as tags. Returns the run id."""
    settings = settings or get_pipeline_settings()
    if not dataset_fingerprint:
        raise PipelineStepError(
            "dataset_fingerprint is empty: the intake step must fingerprint the dataset before tracking starts"
        )
    client = mlflow_client(settings)
    experiment_id = ensure_experiment(client, settings)
    run = client.create_run(
        experiment_id,
        run_name=run_name,
        tags=lineage_tags(config.resolved_model_name, dataset_fingerprint)
        | ({TAG_WEIGHTS: weights_note} if weights_note else {}),
    )
    params = flatten(config.model_dump(mode="json", exclude=VERSION_LABELS))
    client.log_batch(run.info.run_id, params=[Param(key, value) for key, value in params.items()])
    return run.info.run_id


def artifact_path(path: str | Path, artifact_dir: str | None) -> str:
    """Where :func:`log_file` puts ``path`` among the run's artifacts."""
    name = Path(path).name
    return f"{artifact_dir}/{name}" if artifact_dir else name


def log_file(run_id: str, path: Path, artifact_dir: str | None, settings: PipelineSettings | None = None) -> str:
    """Log one file into the run's artifacts; returns its artifact path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cannot log {path} to MLflow run {run_id}: no such file")
    mlflow_client(settings).log_artifact(run_id, str(path), artifact_dir)
    return artifact_path(path, artifact_dir)


def split_counts(split_manifest: Path) -> dict[str, int]:
    """Images per split from a split manifest CSV with a ``split`` column ({} without one)."""
    with Path(split_manifest).open(newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "split" not in reader.fieldnames:
            return {}
        return dict(Counter(row["split"] for row in reader))


@talks_to_mlflow
def log_data_lineage(
    run_id: str, validation_report: Path, split_manifest: Path, settings: PipelineSettings | None = None
) -> None:
    """The data the run trained on: the validation report, the split manifest and split sizes."""
    log_file(run_id, validation_report, ARTIFACT_DATA_DIR, settings)
    log_file(run_id, split_manifest, ARTIFACT_DATA_DIR, settings)
    counts = split_counts(split_manifest)
    if counts:
        mlflow_client(settings).log_batch(
            run_id, params=[Param(SPLIT_PARAM.format(split=split), str(count)) for split, count in sorted(counts.items())]
        )


def split_sizes(params: Mapping[str, str]) -> dict[str, int]:
    """Images per split as :func:`log_data_lineage` recorded them in a run's params."""
    prefix, suffix = SPLIT_PARAM.split("{split}")
    return {
        key.removeprefix(prefix).removesuffix(suffix): int(value)
        for key, value in params.items()
        if key.startswith(prefix) and key.endswith(suffix)
    }


@talks_to_mlflow
def finish_run(run_id: str, succeeded: bool = True, settings: PipelineSettings | None = None) -> None:
    mlflow_client(settings).set_terminated(run_id, "FINISHED" if succeeded else "FAILED")
