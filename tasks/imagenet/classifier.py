"""The full ImageNet classifier, split where the service splits it: featurizer (FPGA) and its top (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import keras

from fpgaflow.tasks.conversion.onnx_stages import PROBABILITIES
from fpgaflow.tasks.featurizers.catalog import FEATURES, INPUT, Featurizer, architecture, describe, seed_everything
from fpgaflow.tasks.featurizers.weights_manifest import CLASS_INDEX
from fpgaflow.tasks.featurizers.weights_store import WeightsUnavailable, manifest_of, obtain
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings

IMAGENET_CLASSES = 1000
APPLICATIONS = {
    "resnet50": "ResNet50",
    "resnet152": "ResNet152",
    "densenet121": "DenseNet121",
    "vgg16": "VGG16",
}
# The layer whose output is the feature vector the top classifies (Keras' names).
FEATURE_LAYERS = {"resnet50": "avg_pool", "resnet152": "avg_pool", "densenet121": "avg_pool", "vgg16": "fc2"}
TOP_LAYER = "predictions"


def imagenet_class_names(settings: PipelineSettings | None = None) -> list[str]:
    """The 1,000 human-readable ImageNet class names, in output order, from Keras' class index file."""
    settings = settings or get_pipeline_settings()
    path = obtain(manifest_of(settings).get(CLASS_INDEX), settings)
    try:
        index = json.loads(Path(path).read_text())
        names = [str(index[str(position)][1]) for position in range(len(index))]
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise WeightsUnavailable(f"{path} is not an ImageNet class index ({{index: [wordnet id, name]}}): {error}") from None
    if len(names) != IMAGENET_CLASSES:
        raise WeightsUnavailable(f"{path} names {len(names)} classes, not {IMAGENET_CLASSES}")
    return names


def build_imagenet_classifier(
    name: str, input_size: int = 224, seed: int = 0, settings: PipelineSettings | None = None
) -> tuple[Featurizer, keras.Model]:
    """Featurizer ``name`` (``input`` -> ``features``) and its ImageNet top (``features`` -> probabilities),
    both from the verified keras.applications file with the top included."""
    settings = settings or get_pipeline_settings()
    if name not in APPLICATIONS:
        raise WeightsUnavailable(f"no ImageNet classifier for {name!r}; there is one for {', '.join(APPLICATIONS)}")
    arch = architecture(name)
    path = obtain(manifest_of(settings).classifier(name), settings)
    seed_everything(seed)
    application = getattr(keras.applications, APPLICATIONS[name])
    inputs = keras.Input(shape=(input_size, input_size, 3), name=INPUT, dtype="float32")
    try:
        full = application(include_top=True, weights=str(path), input_tensor=inputs, classes=IMAGENET_CLASSES)
    except (ValueError, OSError) as error:
        raise WeightsUnavailable(
            f"{path} does not fit the {name} ImageNet classifier at input size {input_size}: {error}"
        ) from None
    features = keras.layers.Identity(name=FEATURES)(full.get_layer(FEATURE_LAYERS[name]).output)
    featurizer_model = keras.Model(inputs, features, name=f"{name}_featurizer")
    top = full.get_layer(TOP_LAYER)
    head_inputs = keras.Input(shape=(int(features.shape[-1]),), name=FEATURES, dtype="float32")
    head_outputs = keras.layers.Dense(IMAGENET_CLASSES, activation="softmax", name=PROBABILITIES)(head_inputs)
    head = keras.Model(head_inputs, head_outputs, name=f"{name}_imagenet_top")
    head.get_layer(PROBABILITIES).set_weights(top.get_weights())
    info = describe(featurizer_model, arch, "imagenet", seed, input_size)
    return Featurizer(featurizer_model, info), head
