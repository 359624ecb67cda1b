"""`fpgaflow featurizers`: facts as JSON, and a clean error when weights are missing."""

from __future__ import annotations

import json

from fpgaflow.flows.cli import main
from tests.fixtures.settings import reload_settings


def test_json_facts_of_one_featurizer(capsys):
    assert main(["featurizers", "--name", "vgg16", "--input-size", "32", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert (facts["name"], facts["input_size"], facts["feature_dim"], facts["weights"]) == ("vgg16", 32, 4096, "none")
    assert facts["preprocessing"]["crop"] == 32 and facts["mac_count"] > 0


def test_missing_imagenet_weights_is_a_one_line_error(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("FPGAFLOW_IMAGENET_WEIGHTS_DIR", str(tmp_path))

    reload_settings()
    assert main(["featurizers", "--name", "resnet50", "--weights", "imagenet"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("fpgaflow featurizers: error: cannot download resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    assert "FPGAFLOW_WEIGHTS_URL" in error and "fpgaflow weights import FILE" in error and "--weights none" in error
