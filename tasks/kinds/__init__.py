"""Model kinds: what differs between a classifier and a detector, behind one protocol every stage's step asks.

A kind reads and splits its data, trains and evaluates, converts its FPGA stage and measures parity,
measures each numeric format (top-1 accuracy with the head retrained, or mAP@0.5), says what its
service answers, smoke-tests a deployed service and registers its model. The stages' steps
(``fpgaflow.tasks.<stage>.steps``) call these; a new kind adds one module here and its own package
(the detector's is :mod:`fpgaflow.tasks.detection`).
"""

from __future__ import annotations

from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.kinds.classifier import CLASSIFIER
from fpgaflow.tasks.kinds.detector import DETECTOR
from fpgaflow.tasks.kinds.imagenet import IMAGENET_CLASSIFIER
from fpgaflow.tasks.kinds.protocol import ModelKind

KINDS: dict[str, ModelKind] = {kind.name: kind for kind in (CLASSIFIER, DETECTOR, IMAGENET_CLASSIFIER)}


def kind_serving(task: str) -> ModelKind:
    """The kind whose services answer ``task`` (a service's ``task``: classification or detection)."""
    return DETECTOR if task == DETECTOR.service_task else CLASSIFIER


def kind_of(config: PipelineConfig) -> ModelKind:
    """The kind of model ``config`` trains (its featurizer and classifier decide)."""
    if config.detects:
        return DETECTOR
    return IMAGENET_CLASSIFIER if config.imagenet_top else CLASSIFIER
