"""The whole registry chain against a throwaway SQLite MLflow: track → register → convert → package → publish → promote.

Registry content is asserted through MlflowClient, the way a reviewer's tools would see it.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fpgaflow.fpga_runtime.errors import ModelNotFound
from fpgaflow.fpga_runtime.service import load_service
from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.conversion.onnx_stages import FEATURES, FPGA_INPUT, convert_stages, run_onnx
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.kinds import CLASSIFIER
from fpgaflow.tasks.packaging.service_dir import package_service
from fpgaflow.tasks.packaging.tensor_names import classifier_tensor_names, detector_tensor_names
from fpgaflow.tasks.registry.promotion import PromotionRefused, promote
from fpgaflow.tasks.registry.publication import pipeline_summary, publish_version
from fpgaflow.tasks.registry.registration import RegisteredVersion, register_trained_model, tensor_name_tags
from fpgaflow.tasks.registry.run_metrics import FormatOutcome, log_conversion, log_numerics, log_training
from fpgaflow.tasks.registry.runs import finish_run, log_data_lineage, start_pipeline_run
from fpgaflow.tasks.registry.steps import register_task
from fpgaflow.tasks.registry.version_state import CANDIDATE_ALIAS, CHAMPION_ALIAS
from fpgaflow.tasks.settings import PipelineSettings
from mlflow import MlflowClient
from tests.fixtures.keras_stages import CLASS_NAMES, INPUT_SIZE
from tests.fixtures.settings import reload_settings

FINGERPRINT = "ab" * 32
HISTORY = [
    {"epoch": 0, "loss": 1.2, "accuracy": 0.41, "val_loss": 1.3, "val_accuracy": 0.38},
    {"epoch": 1, "loss": 0.9, "accuracy": 0.62, "val_loss": 1.0, "val_accuracy": 0.55},
    {"epoch": 2, "loss": 0.7, "accuracy": 0.74, "val_loss": 0.9, "val_accuracy": 0.61},
]
TEST_METRICS = {"accuracy": 0.8, "precision_macro": 0.79, "recall_macro": 0.8, "f1_macro": 0.78, "auc_ovr": 0.9}
PASSING = {
    "fp32": {"accuracy": 0.8, "delta": 0.0, "passed": True},
    "int8": FormatOutcome(accuracy=0.795, delta=-0.005, passed=True),
    "msfp8": SimpleNamespace(accuracy=0.7, delta=-0.1, passed=False, message="drop of 10.0 points exceeds 1.0"),
}
TENSOR_NAMES = classifier_tensor_names("resnet50")


def write_inputs(directory: Path) -> SimpleNamespace:
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    report = directory / "validation_report.json"
    report.write_text(json.dumps({"success": True, "results": []}))
    splits = directory / "splits.csv"
    rows = ["path,label,split"] + [
        f"/data/{i}.png,{CLASS_NAMES[i % 3]},{('train', 'train', 'val', 'test')[i % 4]}" for i in range(20)
    ]
    splits.write_text("\n".join(rows) + "\n")
    confusion = directory / "confusion_matrix.png"
    Image.new("RGB", (8, 8), (255, 255, 255)).save(confusion)
    return SimpleNamespace(report=report, splits=splits, confusion=confusion)


def run_pipeline_until_registration(settings, inputs, stage_files, preprocess_spec, data_dir) -> RegisteredVersion:
    config = PipelineConfig(data_dir=data_dir, model_name="pets", featurizer="resnet50", weights="none", input_size=INPUT_SIZE)
    run_id = start_pipeline_run(config, FINGERPRINT, settings)
    log_data_lineage(run_id, inputs.report, inputs.splits, settings)
    log_training(
        run_id,
        HISTORY,
        TEST_METRICS,
        per_class=[{"class": name, "f1": 0.8} for name in CLASS_NAMES],
        pictures=[inputs.confusion],
        featurizer_info={
            "name": "resnet50",
            "feature_dim": 8,
            "parameter_count": 1234567,
            "mac_count": 98765432,
            "preprocessing": preprocess_spec,
        },
        settings=settings,
    )
    return register_trained_model(run_id, "pets", *stage_files, CLASS_NAMES, settings, tensor_names=TENSOR_NAMES)


def package_and_publish(settings, registered, report, preprocess_spec, outcomes, numeric_format):
    service_dir = package_service(
        name="pets",
        version=registered.version,
        class_names=CLASS_NAMES,
        preprocessing=preprocess_spec,
        numeric_format=numeric_format,
        fpga_onnx=report.fpga_onnx,
        cpu_onnx=report.cpu_onnx,
        source=registered.service_source(FINGERPRINT),
        tensor_names=TENSOR_NAMES,
        settings=settings,
    )
    return publish_version("pets", registered.version, service_dir, report, outcomes, settings)


@pytest.fixture(scope="module")
def registry_settings(tmp_path_factory) -> PipelineSettings:
    return PipelineSettings(home=tmp_path_factory.mktemp("registry-home"))


@pytest.fixture(scope="module")
def client(registry_settings) -> MlflowClient:
    uri = registry_settings.mlflow_tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture(scope="module")
def chain(registry_settings, stage_files, held_out_images, preprocess_spec, tmp_path_factory):
    """One complete pipeline run that passes every gate, registered twice to prove idempotency."""
    work = tmp_path_factory.mktemp("chain")
    inputs = write_inputs(work / "inputs")
    registered = run_pipeline_until_registration(registry_settings, inputs, stage_files, preprocess_spec, work / "pets")
    run_id, version = registered.run_id, registered.version
    retried = register_trained_model(run_id, "pets", *stage_files, CLASS_NAMES, registry_settings)
    report = convert_stages(*stage_files, held_out_images, work / "onnx", registry_settings)
    log_conversion(run_id, report, registry_settings)
    log_numerics(run_id, PASSING, registry_settings)
    published = package_and_publish(registry_settings, registered, report, preprocess_spec, PASSING, "int8")
    finish_run(run_id, settings=registry_settings)
    return SimpleNamespace(run_id=run_id, version=version, retried=retried, report=report, published=published, work=work)


def test_registration_is_idempotent_per_run(chain, client, registry_settings):
    versions = client.search_model_versions("name = 'pets'")
    assert [str(v.version) for v in versions if v.run_id == chain.run_id] == [chain.version]
    assert chain.retried.version == chain.version
    source = client.get_model_version("pets", chain.version).source
    assert source.startswith("models:/m-") and source == chain.retried.source
    logged = client.get_logged_model(source.removeprefix("models:/"))
    assert logged.source_run_id == chain.run_id
    assert logged.artifact_location.startswith(str(registry_settings.home / "mlartifacts"))


def test_version_carries_lineage_service_and_gate_tags(chain, client):
    tags = client.get_model_version("pets", chain.version).tags
    assert tags["fpgaflow.run_id"] == chain.run_id
    assert tags["fpgaflow.dataset_fingerprint"] == FINGERPRINT
    assert tags["fpgaflow.featurizer"] == "resnet50"
    assert tags["fpgaflow.numeric_format"] == "int8"
    assert tags["fpgaflow.service_uri"] == f"runs:/{chain.run_id}/service"
    assert tags["fpgaflow.service_artifacts"].endswith(f"{chain.run_id}/artifacts/service")
    assert Path(tags["fpgaflow.service_dir"]) == chain.published.service_dir
    assert tags["fpgaflow.gates"] == "passed"
    assert tags["fpgaflow.status"] == "published"
    assert tags["fpgaflow.gate.parity"].startswith("passed: onnxruntime matches Keras on 12 held-out images (fpga scaled diff ")
    assert tags["fpgaflow.gate.int8"] == "passed: accuracy 0.7950, delta to fp32 -0.50 points"
    assert tags["fpgaflow.gate.msfp8"] == "failed: drop of 10.0 points exceeds 1.0"


def test_version_and_service_carry_the_tensor_names_clients_use(chain, client):
    tags = client.get_model_version("pets", chain.version).tags
    assert tags["fpgaflow.input_tensors"] == "Placeholder:0"
    assert tags["fpgaflow.output_tensors"] == "classifier/resnet_v1_50/predictions/Softmax:0"
    assert load_service(chain.published.service_dir).tensor_names == TENSOR_NAMES


def test_the_register_step_prints_the_tensor_names_and_tags_them(registry_settings, client, stage_files, monkeypatch, capsys):
    monkeypatch.setenv("FPGAFLOW_HOME", str(registry_settings.home))
    reload_settings()
    config = PipelineConfig(data_dir=registry_settings.home, model_name="pets-named", featurizer="resnet50", weights="none")
    run_id = start_pipeline_run(config, FINGERPRINT, registry_settings)
    registered = register_task.fn(
        CLASSIFIER, run_id, "pets-named", *stage_files, CLASS_NAMES, CLASSIFIER.tensor_names("resnet50")
    )
    printed = capsys.readouterr().out
    assert f"registered pets-named version {registered.version}; its service's tensor names:" in printed
    assert "input_tensors = 'Placeholder:0'\noutput_tensors = 'classifier/resnet_v1_50/predictions/Softmax:0'\n" in printed
    tags = client.get_model_version("pets-named", registered.version).tags
    assert tags["fpgaflow.output_tensors"] == "classifier/resnet_v1_50/predictions/Softmax:0"


def test_a_detector_version_tags_its_output_tensors_as_a_json_list():
    tags = tensor_name_tags(detector_tensor_names("ssd_vgg"))
    assert tags["fpgaflow.input_tensors"] == "Placeholder:0"
    assert json.loads(tags["fpgaflow.output_tensors"]) == detector_tensor_names("ssd_vgg").output_tensors


def test_candidate_alias_goes_to_the_version_whose_gates_passed(chain, client):
    assert chain.published.gates_passed
    assert str(client.get_model_version_by_alias("pets", CANDIDATE_ALIAS).version) == chain.version
    assert CANDIDATE_ALIAS in chain.published.aliases


def test_description_is_a_model_card(chain, client):
    description = client.get_model_version("pets", chain.version).description
    assert description.startswith(f"# pets version {chain.version}\n")
    assert f"dataset fingerprint: `{FINGERPRINT}`" in description
    assert "images per split: test 5, train 10, val 5" in description
    assert "3 classes: cat, dog, fox" in description
    assert "test split: accuracy 0.8000, auc_ovr 0.9000" in description
    assert "served in `int8`" in description
    assert "`int8`: accuracy 0.7950, delta to fp32 -0.50 points" in description
    assert "msfp8 FAILED: drop of 10.0 points exceeds 1.0" in description
    assert "randomly initialised" in description
    assert "- featurizer `resnet50` (weights `none`, input 32x32, 1.23 M parameters, 0.099 GMAC per image)" in description


def test_run_holds_params_curves_metrics_and_lineage(chain, client):
    run = client.get_run(chain.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["featurizer"] == "resnet50"
    assert run.data.params["training.epochs"] == "16"
    assert run.data.params["numerics"] == "fp32,int8,msfp8,msfp9"
    assert run.data.params["featurizer.feature_dim"] == "8"
    assert run.data.params["data.train_images"] == "10"
    assert run.data.tags["fpgaflow.dataset_fingerprint"] == FINGERPRINT
    assert "fpgaflow.prefect.flow_run_id" not in run.data.tags
    history = client.get_metric_history(chain.run_id, "val_accuracy")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(0, 0.38), (1, 0.55), (2, 0.61)]
    metrics = run.data.metrics
    assert metrics["test_f1_macro"] == 0.78
    assert metrics["numerics.int8.delta"] == pytest.approx(-0.005)
    assert metrics["numerics.msfp8.accuracy"] == pytest.approx(0.7)
    assert metrics["parity.end_to_end.top1_agreement"] == 1.0
    assert metrics["parity.fpga.max_abs_diff"] == pytest.approx(chain.report.stages["fpga"].max_abs_diff)
    assert run.data.tags["fpgaflow.gate.msfp8"].startswith("failed: ")


def test_run_artifacts_hold_data_evaluation_conversion_card_and_service(chain, client, registry_settings):
    def names(path):
        return sorted(item.path for item in client.list_artifacts(chain.run_id, path))

    assert names("data") == ["data/splits.csv", "data/validation_report.json"]
    assert names("evaluation") == ["evaluation/confusion_matrix.png", "evaluation/featurizer.json", "evaluation/per_class.json"]
    assert names("conversion") == ["conversion/conversion_report.json"]
    assert names("service") == ["service/cpu_stage.onnx", "service/fpga_stage.onnx", "service/service.json"]
    assert "model_card.md" in names("")
    artifact_uri = client.get_run(chain.run_id).info.artifact_uri
    assert artifact_uri.startswith(str(registry_settings.home / "mlartifacts" / registry_settings.mlflow_experiment))


def test_service_downloaded_from_mlflow_loads_and_scores(chain, client, held_out_images, tmp_path):
    local = Path(client.download_artifacts(chain.run_id, "service", str(tmp_path)))
    service = load_service(local)
    assert (service.name, service.version, service.numeric_format) == ("pets", chain.version, "int8")
    assert service.source == {
        "model_uri": f"models:/pets/{chain.version}",
        "logged_model": chain.retried.source,
        "mlflow_run_id": chain.run_id,
        "dataset_fingerprint": FINGERPRINT,
    }
    features = run_onnx(local / service.stages[0].file, FPGA_INPUT, held_out_images[:2])
    probabilities = run_onnx(local / service.stages[1].file, FEATURES, features)
    assert probabilities.shape == (2, len(CLASS_NAMES))


def test_registered_model_is_the_trained_classifier(chain, registry_settings, held_out_images):
    import mlflow.keras

    from fpgaflow.tasks.registry.client import mlflow_client

    mlflow_client(registry_settings)
    classifier = mlflow.keras.load_model(f"models:/pets@{CANDIDATE_ALIAS}")
    expected = run_onnx(chain.report.cpu_onnx, FEATURES, run_onnx(chain.report.fpga_onnx, FPGA_INPUT, held_out_images))
    np.testing.assert_allclose(classifier.predict(held_out_images, verbose=0), expected, atol=1e-5)


def test_promote_sets_champion_and_reports_the_previous_one(chain, client, registry_settings):
    first = promote("pets", chain.version, registry_settings)
    again = promote("pets", chain.version, registry_settings)
    assert (first.version, again.previous_champion) == (chain.version, chain.version)
    assert str(client.get_model_version_by_alias("pets", CHAMPION_ALIAS).version) == chain.version


def test_summary_has_the_json_keys_of_the_run_command(chain, registry_settings):
    summary = pipeline_summary(chain.published, registry_settings)
    assert summary == {
        "model_name": "pets",
        "model_version": chain.version,
        "mlflow_run_id": chain.run_id,
        "mlflow_tracking_uri": registry_settings.mlflow_tracking_uri,
        "service_dir": str(chain.published.service_dir),
        "numerics": {
            "fp32": {"accuracy": 0.8, "delta": 0.0},
            "int8": {"accuracy": 0.795, "delta": -0.005},
            "msfp8": {"accuracy": 0.7, "delta": -0.1},
        },
    }
    json.dumps(summary)


def test_a_version_whose_gates_fail_gets_no_alias_and_cannot_be_promoted(
    chain, client, registry_settings, stage_files, preprocess_spec, tmp_path, monkeypatch, capsys
):
    inputs = write_inputs(tmp_path / "inputs")
    registered = run_pipeline_until_registration(registry_settings, inputs, stage_files, preprocess_spec, tmp_path / "pets")
    version = registered.version
    assert int(version) > int(chain.version)
    assert client.get_model_version("pets", version).tags["fpgaflow.status"] == "registered"

    with pytest.raises(PromotionRefused, match=f"pets version {version} cannot become champion: it has no gate results"):
        promote("pets", version, registry_settings)
    with pytest.raises(PipelineStepError, match=f"holds service 'pets' version {chain.version}, not 'pets' version {version}"):
        publish_version("pets", version, chain.published.service_dir, chain.report, PASSING, registry_settings)

    published = package_and_publish(registry_settings, registered, chain.report, preprocess_spec, PASSING, "int8")
    assert published.gates_passed
    assert str(client.get_model_version_by_alias("pets", CANDIDATE_ALIAS).version) == version

    published = package_and_publish(registry_settings, registered, chain.report, preprocess_spec, PASSING, "msfp8")
    assert not published.gates_passed
    assert CANDIDATE_ALIAS not in client.get_registered_model("pets").aliases
    tags = client.get_model_version("pets", version).tags
    assert tags["fpgaflow.gates"] == "failed: msfp8"
    with pytest.raises(PromotionRefused) as refusal:
        promote("pets", version, registry_settings)
    assert str(refusal.value) == (
        f"pets version {version} cannot become champion: gates failed: msfp8 (msfp8 failed: drop of 10.0 points exceeds 1.0)"
    )
    assert str(client.get_model_version_by_alias("pets", CHAMPION_ALIAS).version) == chain.version

    from fpgaflow.flows.cli import main

    monkeypatch.setenv("FPGAFLOW_HOME", str(registry_settings.home))
    reload_settings()
    assert main(["promote", "pets", version]) == 1
    assert "fpgaflow promote: refused: pets version" in capsys.readouterr().err
    assert main(["promote", "pets", "999"]) == 2
    assert "model 'pets' has no version 999 in the registry" in capsys.readouterr().err
    assert main(["promote", "pets", chain.version, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"name": "pets", "version": chain.version, "previous_champion": chain.version}

    from fpgaflow.tasks.registry.steps import promote_task

    with pytest.raises(PromotionRefused):
        promote_task.fn("pets", version)
    assert promote_task.fn("pets", chain.version).version == chain.version


def test_a_parity_failure_blocks_the_version(chain, registry_settings, preprocess_spec):
    failing = chain.report.model_copy(
        update={"problems": ("fpga: max abs difference 0.5 (scaled 0.5) exceeds the tolerance 0.0001",)}
    )
    from fpgaflow.tasks.registry.publication import evaluate_gates
    from fpgaflow.tasks.registry.run_metrics import coerce_outcomes

    gates, passed = evaluate_gates(failing, coerce_outcomes(PASSING), "int8")
    assert not passed
    assert gates[0].name == "parity" and gates[0].detail == failing.problems[0]
    _, passed_without_result = evaluate_gates(chain.report, coerce_outcomes(PASSING), "msfp9")
    assert not passed_without_result


def test_unknown_versions_and_wrong_class_counts_are_refused(chain, registry_settings, stage_files):
    with pytest.raises(ModelNotFound, match="model 'pets' has no version 999"):
        promote("pets", "999", registry_settings)
    from fpgaflow.tasks.registry.client import mlflow_client

    run_id = (
        mlflow_client(registry_settings)
        .create_run(mlflow_client(registry_settings).get_experiment_by_name(registry_settings.mlflow_experiment).experiment_id)
        .info.run_id
    )
    with pytest.raises(PipelineStepError, match="the CPU stage scores 3 classes but 2 class names were given"):
        register_trained_model(run_id, "pets", *stage_files, ("cat", "dog"), registry_settings)


def test_a_retry_after_logging_the_model_reuses_it(chain, client, registry_settings, stage_files):
    from fpgaflow.tasks.registry.client import mlflow_client
    from fpgaflow.tasks.registry.registration import log_classifier

    experiment_id = mlflow_client(registry_settings).get_experiment_by_name(registry_settings.mlflow_experiment).experiment_id
    run_id = client.create_run(experiment_id).info.run_id
    model_id = log_classifier(client, experiment_id, run_id, *stage_files, CLASS_NAMES)
    registered = register_trained_model(run_id, "pets-retry", *stage_files, CLASS_NAMES, registry_settings)
    assert registered.source == f"models:/{model_id}"
    assert len(client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'")) == 1


def test_an_experiment_another_run_creates_first_is_used_not_an_error(registry_settings, client):
    from fpgaflow.tasks.registry.client import ensure_experiment

    settings = registry_settings.model_copy(update={"mlflow_experiment": "raced"})
    created_by_the_other_run = client.create_experiment("raced")
    answers = iter([None, client.get_experiment_by_name("raced")])
    looked_up_before_the_other_run = SimpleNamespace(
        get_experiment_by_name=lambda _name: next(answers), create_experiment=client.create_experiment
    )
    assert ensure_experiment(looked_up_before_the_other_run, settings) == created_by_the_other_run
