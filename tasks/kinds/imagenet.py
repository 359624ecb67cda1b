"""The ImageNet classifier kind (``fpgaflow deploy imagenet/<featurizer>``): a featurizer and its Keras ImageNet top.

Its own code is the package :mod:`fpgaflow.tasks.imagenet`; this module is its face to the stages.
"""

from __future__ import annotations

from fpgaflow.tasks.conversion.onnx_stages import PROBABILITIES, convert_stages
from fpgaflow.tasks.data.intake import load_splits
from fpgaflow.tasks.imagenet.intake import RULES, intake_calibration_images, intake_caption
from fpgaflow.tasks.imagenet.numerics import evaluate_agreement
from fpgaflow.tasks.imagenet.smoke import imagenet_smoke_test, smoke_caption
from fpgaflow.tasks.imagenet.train_step import imagenet_train_step, publish_imagenet_training
from fpgaflow.tasks.kinds.protocol import ModelKind
from fpgaflow.tasks.operations.scoring import ACCURACY, split_images
from fpgaflow.tasks.packaging.tensor_names import classifier_tensor_names
from fpgaflow.tasks.registry.registration import register_trained_model

IMAGENET_CLASSIFIER = ModelKind(
    name="imagenet-classifier",
    rules=RULES,
    service_task="classification",
    default_output=PROBABILITIES,
    service_title="ImageNet classifier service",
    parity_compared="Keras vs onnxruntime",
    numerics_measure="top-1 agreement with fp32 on the calibration images (no labelled ImageNet data)",
    intake=intake_calibration_images,
    intake_caption=intake_caption,
    load_splits=load_splits,
    smoke_images=split_images,
    train=imagenet_train_step,
    publish_training=publish_imagenet_training,
    register=register_trained_model,
    convert=convert_stages,
    evaluate_numerics=evaluate_agreement,
    smoke_test=imagenet_smoke_test,
    smoke_caption=smoke_caption,
    tensor_names=classifier_tensor_names,
    quality=ACCURACY,
)
