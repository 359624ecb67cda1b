"""How a run's featurizer weights were chosen reaches the MLflow run (a tag) and the model card."""

from __future__ import annotations

from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.registry.model_card import ModelCard
from fpgaflow.tasks.registry.runs import TAG_WEIGHTS

NOTE = "weights auto: ImageNet weights could not be had, so the featurizer starts from seeded random initialisation (...)"


def test_the_note_is_a_tag_of_the_mlflow_run(tmp_path):
    from fpgaflow.tasks.registry.client import mlflow_client
    from fpgaflow.tasks.registry.runs import start_pipeline_run
    from fpgaflow.tasks.settings import PipelineSettings

    settings = PipelineSettings(home=tmp_path / "home")
    config = PipelineConfig(data_dir=tmp_path, model_name="pets", weights="none")
    run_id = start_pipeline_run(config, "ab" * 32, settings, weights_note=NOTE)
    run = mlflow_client(settings).get_run(run_id)
    assert run.data.tags[TAG_WEIGHTS] == NOTE and run.data.params["weights"] == "none"


def test_the_model_card_says_how_the_weights_were_chosen():
    card = ModelCard(name="pets", version="1", featurizer="resnet50", weights="none", weights_note=NOTE).markdown()
    assert f"- featurizer weights: {NOTE}" in card
    assert "randomly initialised (weights `none`), not pretrained" in card
