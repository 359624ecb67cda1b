"""`--tag KEY=VALUE` and `--description` at registration: tags and model card of the MLflow version, `models show`."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from fpgaflow.flows.cli import build_parser, main
from fpgaflow.flows.cli.run import OVERRIDES, labels_of
from fpgaflow.tasks.config import PipelineConfig, load_config
from fpgaflow.tasks.registry.client import mlflow_client
from fpgaflow.tasks.registry.registration import label_tags, register_run_model
from fpgaflow.tasks.registry.runs import start_pipeline_run
from fpgaflow.tasks.registry.version_state import TAG_DESCRIPTION
from fpgaflow.tasks.settings import PipelineSettings
from tests.fixtures.settings import reload_settings

FINGERPRINT = "ef" * 32


def test_run_takes_repeated_tags_and_a_description(tmp_path):
    arguments = ["run", str(tmp_path), "--tag", "team=vision", "--tag", "query=a=b", "--description", "Digits, first try"]
    args = build_parser().parse_args(arguments)
    config = load_config(None, data_dir=args.data_dir, **{key: getattr(args, key) for key in OVERRIDES}, **labels_of(args))
    assert (config.tags, config.description) == ({"team": "vision", "query": "a=b"}, "Digits, first try")


@pytest.mark.parametrize("key", ["fpgaflow.status", "has space", "", "-leading"])
def test_tag_keys_fpgaflow_owns_or_mlflow_refuses_are_named(tmp_path, key):
    with pytest.raises(ValidationError, match="tag key"):
        PipelineConfig(data_dir=tmp_path, tags={key: "x"})


def test_labels_go_on_the_version_and_into_its_card_not_into_the_run_params(tmp_path, monkeypatch, capsys):
    settings = PipelineSettings(home=tmp_path / "home")
    config = PipelineConfig(data_dir=tmp_path / "pets", tags={"team": "vision"}, description="Pets, trained on the 2026 photos.")
    run_id = start_pipeline_run(config, FINGERPRINT, settings)
    client = mlflow_client(settings)

    def log_model(experiment_id: str) -> str:
        return client.create_logged_model(experiment_id, name="classifier", source_run_id=run_id).model_id

    labels = label_tags(config.tags, config.description)
    registered = register_run_model(client, "pets", run_id, ("cat", "dog"), log_model, labels=labels)

    version = client.get_model_version("pets", registered.version)
    assert version.tags["team"] == "vision" and version.tags[TAG_DESCRIPTION] == config.description
    assert version.description.startswith(
        "# pets version 1\n\nPets, trained on the 2026 photos.\n\nTags: `team=vision`\n\n## Data"
    )
    assert not any(key.startswith(("tags", "description")) for key in client.get_run(run_id).data.params)

    monkeypatch.setenv("FPGAFLOW_HOME", str(settings.home))
    reload_settings()
    try:
        assert main(["models", "show", "pets", "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert (shown["tags"], shown["description"]) == ({"team": "vision"}, config.description)
        assert main(["models", "show", "pets"]) == 0
        text = capsys.readouterr().out
        assert "description     Pets, trained on the 2026 photos." in text and "tags            team=vision" in text
    finally:
        reload_settings()
