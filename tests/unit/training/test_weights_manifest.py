"""The manifest of ImageNet files: Keras' published names, URLs and hashes, and how names select files."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.featurizers.weights_manifest import (
    FEATURIZER_FILES,
    KERAS_MANIFEST,
    ManifestError,
    WeightsFile,
    load_manifest,
)


def test_every_featurizer_file_and_its_top_is_in_the_keras_manifest():
    names = {entry.name for entry in KERAS_MANIFEST.files}
    assert set(FEATURIZER_FILES.values()) <= names
    assert {f"{name}_top" for name in ("resnet50", "resnet152", "densenet121", "vgg16")} <= names
    assert "imagenet_class_index" in names


def test_entries_carry_the_urls_and_hashes_keras_applications_uses():
    from keras.src.applications import densenet, imagenet_utils, resnet, vgg16

    resnet50 = KERAS_MANIFEST.get("resnet50_notop")
    assert resnet50.url == f"{resnet.BASE_WEIGHTS_PATH}resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert (KERAS_MANIFEST.get("resnet50_top").md5, resnet50.md5) == resnet.WEIGHTS_HASHES["resnet50"]
    assert (KERAS_MANIFEST.get("resnet152_top").md5, KERAS_MANIFEST.get("resnet152_notop").md5) == resnet.WEIGHTS_HASHES[
        "resnet152"
    ]
    assert KERAS_MANIFEST.get("densenet121_top").url == densenet.DENSENET121_WEIGHT_PATH
    assert KERAS_MANIFEST.get("densenet121_notop").url == densenet.DENSENET121_WEIGHT_PATH_NO_TOP
    assert (KERAS_MANIFEST.get("vgg16_top").url, KERAS_MANIFEST.get("vgg16_notop").url) == (
        vgg16.WEIGHTS_PATH,
        vgg16.WEIGHTS_PATH_NO_TOP,
    )
    assert KERAS_MANIFEST.get("imagenet_class_index").url == imagenet_utils.CLASS_INDEX_PATH
    assert all(entry.algorithm == "md5" and len(entry.digest) == 32 for entry in KERAS_MANIFEST.files)


def test_names_select_by_name_file_featurizer_or_all():
    assert [entry.name for entry in KERAS_MANIFEST.select(["resnet50"])] == ["resnet50_top", "resnet50_notop"]
    assert [entry.name for entry in KERAS_MANIFEST.select(["vgg16_weights_tf_dim_ordering_tf_kernels.h5"])] == ["vgg16_top"]
    assert len(KERAS_MANIFEST.select(["all", "resnet50_top"])) == len(KERAS_MANIFEST.files)
    assert KERAS_MANIFEST.for_featurizer("ssd_vgg").name == "vgg16_notop"
    with pytest.raises(ManifestError, match="no ImageNet file is called 'resnet18'; known: resnet50_top"):
        KERAS_MANIFEST.select(["resnet18"])


def test_a_manifest_file_needs_a_hash_and_is_read_from_json(tmp_path):
    with pytest.raises(ValidationError, match="needs a sha256"):
        WeightsFile(name="x", file="x.h5", url="http://127.0.0.1/x.h5")
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"files": [{"name": "x", "file": "x.h5", "url": "http://127.0.0.1/x.h5", "sha256": "AB" * 32}]}))
    entry = load_manifest(path).get("x")
    assert (entry.algorithm, entry.digest) == ("sha256", "ab" * 32)
    path.write_text("{")
    with pytest.raises(ManifestError, match=f"cannot read the weights manifest {path}"):
        load_manifest(path)


def test_runs_default_to_imagenet_and_the_imagenet_classifier_needs_it(tmp_path):
    assert PipelineConfig(data_dir=tmp_path).weights == "imagenet"
    assert PipelineConfig(data_dir=tmp_path, classifier="imagenet").imagenet_top
    with pytest.raises(ValidationError, match="needs weights 'imagenet'"):
        PipelineConfig(data_dir=tmp_path, classifier="imagenet", weights="none")
    with pytest.raises(ValidationError, match="not ssd_vgg"):
        PipelineConfig(data_dir=tmp_path, classifier="imagenet", featurizer="ssd_vgg")
