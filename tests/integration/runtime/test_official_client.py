"""Wire compatibility: the official tensorflow-serving-api client, in its own process, against a node."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.tiny_service import INPUT_TENSORS, OUTPUT_TENSORS, reference_probabilities

OFFICIAL_CLIENT = Path(__file__).resolve().parents[2] / "fixtures" / "official_tf_serving_client.py"


@pytest.mark.slow
def test_official_tf_serving_client_predicts_reads_metadata_and_uses_the_tensor_names(server, service_dir, images, tmp_path):
    paths = []
    for index, data in enumerate(images):
        path = tmp_path / f"image-{index}.jpg"
        path.write_bytes(data)
        paths.append(str(path))
    finished = subprocess.run(
        [sys.executable, str(OFFICIAL_CLIENT), server.address, "tiny", *paths], capture_output=True, text=True, timeout=300
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(
        np.array(result["probabilities"]), reference_probabilities(service_dir, images), rtol=1e-6, atol=1e-7
    )
    assert result["model_version"] == 7
    assert result["classes_dtype"] == "int64" and result["classes_shape"] == [1]
    assert result["unpacked"] is True
    assert result["method_name"] == "tensorflow/serving/predict"
    assert result["inputs"] == {"images": "string", "input": "float32"}
    assert result["outputs"] == ["class_names", "classes", "probabilities"]
    assert result["input_shape"] == [-1, 32, 32, 3]
    assert result["bad_image_status"] == "INVALID_ARGUMENT"
    assert result["tensor_names"] == [INPUT_TENSORS, OUTPUT_TENSORS]
    assert result["outputs_by_tensor_name"] == [OUTPUT_TENSORS]
    np.testing.assert_array_equal(result["probabilities_by_tensor_name"], result["probabilities"])
