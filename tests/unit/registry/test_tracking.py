"""Pure helpers of tracking and the model card: no MLflow server, no files beyond tmp_path."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.registry.client import experiment_artifact_location, redacted_uri
from fpgaflow.tasks.registry.model_card import MAX_DESCRIPTION_CHARS, Gate, ModelCard
from fpgaflow.tasks.registry.run_metrics import FormatOutcome, coerce_outcomes, evaluation_metrics, history_metrics, numerics_gate
from fpgaflow.tasks.registry.runs import flatten, git_commit, prefect_flow_run, split_counts, split_sizes
from fpgaflow.tasks.settings import PipelineSettings
from tests.fixtures.settings import reload_settings


def test_flatten_nests_with_dots_and_joins_sequences():
    assert flatten({"featurizer": "vgg16", "numerics": ("fp32", "int8"), "training": {"epochs": 3, "lr": 0.01}}) == {
        "featurizer": "vgg16",
        "numerics": "fp32,int8",
        "training.epochs": "3",
        "training.lr": "0.01",
    }


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("postgresql://mlflow:s3cret@db:5432/mlflow", "postgresql://mlflow:***@db:5432/mlflow"),
        ("https://user:token@tracking.example/", "https://user:***@tracking.example/"),
        ("sqlite:////home/me/.fpgaflow/mlflow.db", "sqlite:////home/me/.fpgaflow/mlflow.db"),
        ("http://tracking:5000", "http://tracking:5000"),
    ],
)
def test_redacted_uri_hides_only_the_password(uri, expected):
    assert redacted_uri(uri) == expected


def test_artifact_location_is_under_the_home_for_local_backends(tmp_path):
    assert experiment_artifact_location(PipelineSettings(home=tmp_path)) == str(tmp_path / "mlartifacts" / "fpgaflow")
    postgres = PipelineSettings(home=tmp_path, mlflow_tracking_uri="postgresql://u:p@db/mlflow", mlflow_experiment="pets")
    assert experiment_artifact_location(postgres) == str(tmp_path / "mlartifacts" / "pets")


def test_artifact_location_is_left_to_a_tracking_server_unless_set(tmp_path):
    server = PipelineSettings(home=tmp_path, mlflow_tracking_uri="http://tracking:5000")
    assert experiment_artifact_location(server) is None
    explicit = PipelineSettings(
        home=tmp_path, mlflow_tracking_uri="http://tracking:5000", mlflow_artifact_root="s3://bucket/mlflow/"
    )
    assert experiment_artifact_location(explicit) == "s3://bucket/mlflow/fpgaflow"


def test_history_metrics_use_the_epoch_as_step():
    metrics = history_metrics([{"epoch": 4, "loss": 0.5, "val_loss": 0.7}, {"loss": 0.4}])
    assert [(m.key, m.value, m.step) for m in metrics] == [("loss", 0.5, 4), ("val_loss", 0.7, 4), ("loss", 0.4, 1)]


def test_history_metrics_refuse_a_non_number_by_name():
    with pytest.raises(PipelineStepError, match=r"history\[0\]\['lr'\] must be a number, got 'fast'"):
        history_metrics([{"lr": "fast"}])


def test_split_counts_from_the_manifest_and_back_from_params(tmp_path):
    manifest = tmp_path / "splits.csv"
    manifest.write_text("path,label,split\na,x,train\nb,x,train\nc,y,test\nd,y,val\n")
    assert split_counts(manifest) == {"train": 2, "test": 1, "val": 1}
    assert split_sizes({"data.train_images": "2", "data.test_images": "1", "featurizer": "vgg16"}) == {"train": 2, "test": 1}
    no_split = tmp_path / "other.csv"
    no_split.write_text("path,label\na,x\n")
    assert split_counts(no_split) == {}


def test_evaluation_metrics_strip_the_prefix():
    assert evaluation_metrics({"test_accuracy": 0.9, "loss": 0.3, "numerics.int8.delta": -0.01}) == {"accuracy": 0.9}


def test_outcomes_are_accepted_as_models_mappings_or_attribute_objects():
    outcomes = coerce_outcomes(
        {
            "fp32": FormatOutcome(accuracy=0.9, delta=0.0, passed=True),
            "int8": {"accuracy": 0.89, "delta": -0.01, "passed": True},
            "msfp9": SimpleNamespace(accuracy=0.85, delta=-0.05, passed=False, message="too far", block_size=16),
        }
    )
    assert outcomes["int8"] == FormatOutcome(accuracy=0.89, delta=-0.01, passed=True)
    assert outcomes["msfp9"].message == "too far"
    with pytest.raises(PipelineStepError, match="numerics result for 'int8' is not usable: passed: Field required"):
        coerce_outcomes({"int8": {"accuracy": 0.89, "delta": -0.01}})


def test_numerics_gate_keeps_the_numerics_message_or_reads_in_points():
    explained = numerics_gate("msfp8", FormatOutcome(accuracy=0.7, delta=-0.025, passed=False, message="over the 1-point gate"))
    assert explained.tag_value() == "failed: over the 1-point gate"
    plain = numerics_gate("int8", FormatOutcome(accuracy=0.795, delta=-0.005, passed=True))
    assert plain.tag_value() == "passed: accuracy 0.7950, delta to fp32 -0.50 points"


def test_git_commit_is_absent_outside_a_work_tree(tmp_path):
    assert git_commit(tmp_path) is None


def test_git_commit_of_a_work_tree(tmp_path):
    import subprocess

    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "f").write_text("x")
    git("add", "f")
    git("-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-qm", "c")
    assert git_commit(tmp_path) == git("rev-parse", "HEAD")


def test_no_flow_run_outside_a_flow():
    assert prefect_flow_run() == (None, None)


def test_flow_run_id_and_ui_url_become_lineage_tags(monkeypatch):
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    from fpgaflow.tasks.registry.runs import TAG_FLOW_RUN_ID, TAG_FLOW_RUN_URL, lineage_tags

    flow_run_id = "0b1c6f4e-7d0a-4c55-9a53-2f7e1d3c9b10"
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", flow_run_id)
    with temporary_settings(restore_defaults={PREFECT_API_URL, PREFECT_UI_URL}):  # embedded: `fpgaflow ui prefect`
        assert prefect_flow_run() == (flow_run_id, f"http://127.0.0.1:4200/runs/flow-run/{flow_run_id}")
    with temporary_settings({PREFECT_UI_URL: "http://prefect.internal:4200"}):
        tags = lineage_tags("pets", "ab" * 32)
    assert tags[TAG_FLOW_RUN_ID] == flow_run_id
    assert tags[TAG_FLOW_RUN_URL] == f"http://prefect.internal:4200/runs/flow-run/{flow_run_id}"
    monkeypatch.setenv("FPGAFLOW_PREFECT_UI_URL", "http://127.0.0.1:4321/")
    reload_settings()
    assert prefect_flow_run()[1] == f"http://127.0.0.1:4321/runs/flow-run/{flow_run_id}"
    assert tags["fpgaflow.dataset_fingerprint"] == "ab" * 32


def test_model_card_links_the_flow_run_that_produced_the_version():
    url = "http://127.0.0.1:4200/runs/flow-run/0b1c"
    card = ModelCard(name="pets", version="2", dataset_fingerprint="ab" * 32, flow_run_id="0b1c", flow_run_url=url)
    assert f"- produced by Prefect flow run [`0b1c`]({url})" in card.markdown()


def test_model_card_before_numerics_says_pending():
    card = ModelCard(name="pets", version="2", test_metrics={"f1_macro": 0.5, "accuracy": 0.6}, weights="imagenet")
    text = card.markdown()
    assert "- test split: accuracy 0.6000, f1_macro 0.5000" in text
    assert "pending: conversion and numerics have not run" in text
    assert "## Gates" not in text
    assert "randomly initialised" not in text


def test_model_card_fits_the_registry_description_limit():
    gates = tuple(Gate(name=f"gate-{index:03d}", passed=True, detail="a long detail " * 10) for index in range(100))
    text = ModelCard(name="big", version="1", numeric_format="fp32", gates=gates).markdown()
    assert len(text) == MAX_DESCRIPTION_CHARS and text.endswith("…")


def test_a_non_finite_accuracy_is_refused_before_logging(tmp_path):
    from fpgaflow.tasks.registry.run_metrics import log_numerics

    with pytest.raises(PipelineStepError, match="numerics result for 'int8' has a non-finite accuracy: nan"):
        log_numerics("any-run", {"int8": {"accuracy": math.nan, "delta": 0.0, "passed": False}}, PipelineSettings(home=tmp_path))


def test_gate_results_of_the_numerics_step_are_recorded_as_they_are():
    from fpgaflow.tasks.numerics.gate import gate_formats

    outcomes = coerce_outcomes(gate_formats({"fp32": 0.8, "int8": 0.795, "msfp8": 0.7}, max_drop=0.01))
    assert {name: outcome.passed for name, outcome in outcomes.items()} == {"fp32": True, "int8": True, "msfp8": False}
    assert outcomes["msfp8"].delta == pytest.approx(-0.1)
    assert numerics_gate("msfp8", outcomes["msfp8"]).tag_value().startswith("failed: msfp8 fails the accuracy gate")
