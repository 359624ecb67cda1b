"""The retrain rule, the config a retrain runs with, and scoring two versions on the same images."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from fpgaflow.tasks.config import PipelineConfig, TrainingConfig
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.operations.retraining import (
    RETRAIN_UNTIL,
    VersionScore,
    config_from_params,
    decide,
    decision_markdown,
    retrain_config,
    score_version,
)
from fpgaflow.tasks.operations.scoring import ACCURACY, accuracy_report, folder_images
from fpgaflow.tasks.registry.lookup import find_champion, resolve_version
from fpgaflow.tasks.registry.runs import flatten
from fpgaflow.tasks.registry.version_state import CHAMPION_ALIAS
from fpgaflow.tasks.settings import PipelineSettings
from tests.fixtures.labelled_images import write_labelled_folder
from tests.fixtures.registered_service import register_tiny_service


def scored(version: str, correct: int, images: int = 10) -> VersionScore:
    labels = ["cat"] * images
    return VersionScore(
        name="pets", version=version, report=accuracy_report(labels, ["cat"] * correct + ["dog"] * (images - correct))
    )


def test_no_champion_first_candidate_that_passed_its_gates_becomes_champion():
    decision = decide(scored("1", 3), None, candidate_gates_passed=True, min_improvement=0.0)

    assert decision.promote and decision.improvement is None
    assert "no champion yet" in decision.reason


def test_a_candidate_that_failed_its_gates_is_never_promoted():
    for champion in (None, scored("1", 2)):
        decision = decide(scored("2", 9), champion, candidate_gates_passed=False, min_improvement=0.0)
        assert not decision.promote
        assert "did not pass its gates" in decision.reason


@pytest.mark.parametrize(
    ("candidate_correct", "champion_correct", "min_improvement", "promote"),
    [
        (8, 7, 0.0, True),  # strictly better
        (7, 7, 0.0, False),  # a tie keeps the champion
        (6, 7, 0.0, False),  # worse
        (8, 7, 0.1, False),  # better by exactly the margin is not enough
        (9, 7, 0.1, True),  # better by more than the margin
        (7, 7, -0.05, True),  # a negative margin accepts a tie
        (6, 7, -0.1, False),  # ... but not a drop as large as the margin
    ],
)
def test_the_rule_compares_correct_answers_on_the_same_images(candidate_correct, champion_correct, min_improvement, promote):
    decision = decide(scored("2", candidate_correct), scored("1", champion_correct), True, min_improvement)

    assert decision.promote is promote
    assert decision.improvement == pytest.approx((candidate_correct - champion_correct) / 10)
    assert ("promoted" if promote else "the champion stays") in decision.reason
    assert f"{candidate_correct / 10:.4f}" in decision.reason and f"{champion_correct / 10:.4f}" in decision.reason


def test_scores_on_different_image_sets_are_refused():
    with pytest.raises(ValueError, match="different image sets"):
        decide(scored("2", 5, images=10), scored("1", 5, images=12), True, 0.0)


def test_a_candidate_that_already_is_champion_is_not_promoted_again():
    assert not decide(scored("3", 5), scored("3", 5), True, 0.0).promote


def test_decision_markdown_shows_both_versions_per_class():
    candidate = VersionScore(name="pets", version="2", report=accuracy_report(["cat", "dog", "dog"], ["cat", "dog", "cat"]))
    champion = VersionScore(name="pets", version="1", report=accuracy_report(["cat", "dog", "dog"], ["dog", "dog", "cat"]))

    markdown = decision_markdown(decide(candidate, champion, True, 0.0))

    assert markdown.startswith("# Retrain decision: promote the candidate")
    assert "| class | candidate v2 | champion v1 |" in markdown
    assert "| cat | 1/1 (1.000) | 0/1 (0.000) |" in markdown
    assert "| **all** | 2/3 (0.6667) | 1/3 (0.3333) |" in markdown


def test_config_params_round_trip(tmp_path):
    config = PipelineConfig(
        data_dir=tmp_path,
        model_name="pets",
        featurizer="vgg16",
        input_size=48,
        numerics=("fp32", "msfp8"),
        training=TrainingConfig(epochs=3, learning_rate=0.05, mode="full"),
        target="docker",
        replicas=2,
    )
    params = flatten(config.model_dump(mode="json")) | {"featurizer.feature_dim": "4096", "data.test_images": "12"}

    assert PipelineConfig.model_validate(config_from_params(params)) == config


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Model 'pets' with champion version 1 (trained with 3 epochs at 48 px on its own folder)."""
    settings = PipelineSettings(home=tmp_path_factory.mktemp("home"))
    champion_data = tmp_path_factory.mktemp("champion-data")
    config = PipelineConfig(
        data_dir=champion_data, model_name="pets", weights="none", input_size=48, training=TrainingConfig(epochs=3)
    )
    register_tiny_service(settings, config, tmp_path_factory.mktemp("services"), seed=1, aliases=(CHAMPION_ALIAS,))
    return settings, config


def test_retrain_takes_the_champions_config_and_stops_after_packaging(registry, tmp_path):
    settings, champion_config = registry

    config = retrain_config(model_name="pets", settings=settings)

    assert config.until == RETRAIN_UNTIL
    assert config.model_dump(exclude={"until"}) == champion_config.model_dump(exclude={"until"})


def test_a_new_data_folder_overrides_the_champions(registry, tmp_path):
    settings, _ = registry
    config = retrain_config(data_dir=str(tmp_path), model_name="pets", settings=settings)

    assert config.data_dir == tmp_path and config.input_size == 48 and config.training.epochs == 3


def test_a_config_file_wins_over_the_champions_config(registry, tmp_path):
    settings, _ = registry
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"data_dir": str(tmp_path), "featurizer": "densenet121", "until": "deploy"}))

    config = retrain_config(model_name="pets", config_path=str(path), settings=settings)

    assert (config.featurizer, config.input_size, config.until, config.model_name) == ("densenet121", 224, "package", "pets")


def test_without_a_champion_the_defaults_and_the_folder_name_apply(registry, tmp_path):
    settings, _ = registry
    data_dir = tmp_path / "birds"
    data_dir.mkdir()

    config = retrain_config(data_dir=str(data_dir), settings=settings)

    assert config.resolved_model_name == "birds" and config.featurizer == "resnet50"
    with pytest.raises(PipelineStepError, match="no champion to take the data folder from"):
        retrain_config(model_name="birds", settings=settings)
    with pytest.raises(PipelineStepError, match="data folder or a model name"):
        retrain_config(settings=settings)


def test_candidate_and_champion_are_scored_on_the_same_images(registry, tmp_path):
    settings, config = registry
    candidate_version = register_tiny_service(settings, config, tmp_path / "services", seed=1)
    champion = find_champion("pets", settings)
    candidate = resolve_version("pets", candidate_version, settings)
    images, _ = folder_images(write_labelled_folder(tmp_path / "test", champion.service_dir, correct=6))
    split_path = tmp_path / "splits.csv"
    pd.DataFrame(
        {"path": [str(image.path) for image in images], "label": [image.label for image in images], "split": "test"}
    ).to_csv(split_path, index=False)

    champion_score = score_version(champion, ACCURACY, split_path)
    candidate_score = score_version(candidate, ACCURACY, split_path)

    assert (champion_score.report.correct, champion_score.report.images) == (6, 8)
    assert candidate_score.report == champion_score.report  # same weights (seed), same answers
    assert not decide(candidate_score, champion_score, candidate.gates_passed, 0.0).promote


def test_the_model_name_is_added_only_where_the_config_would_not_name_the_model(tmp_path_factory):
    settings = PipelineSettings(home=tmp_path_factory.mktemp("home"))
    digits = tmp_path_factory.mktemp("data") / "digits"
    digits.mkdir()
    unnamed = PipelineConfig(data_dir=digits)  # the model is named after its folder
    register_tiny_service(settings, unnamed, tmp_path_factory.mktemp("services"), aliases=(CHAMPION_ALIAS,))
    moved = tmp_path_factory.mktemp("data") / "digits-2026"
    moved.mkdir()

    same_folder = retrain_config(model_name="digits", settings=settings)
    other_folder = retrain_config(data_dir=str(moved), model_name="digits", settings=settings)

    assert same_folder.model_name == "" and same_folder.resolved_model_name == "digits"
    assert same_folder.model_dump(exclude={"until"}) == unnamed.model_dump(exclude={"until"})
    assert other_folder.model_name == "digits" and other_folder.data_dir == moved
