"""The detector kind (ssd_vgg): SSD's feature maps and heads on the FPGA, box decoding and NMS on the CPU.

The detector's own code is the package :mod:`fpgaflow.tasks.detection`; this module is its face to the stages.
"""

from __future__ import annotations

from fpgaflow.fpga_runtime.protocol import BOXES_OUTPUT
from fpgaflow.tasks.artifacts import publish_markdown, publish_table
from fpgaflow.tasks.detection.conversion import convert_detector
from fpgaflow.tasks.detection.intake import (
    RULES,
    DetectionIntakeResult,
    intake_detection_dataset,
    load_detection_splits,
    split_image_paths,
)
from fpgaflow.tasks.detection.numerics import evaluate_detector_numerics
from fpgaflow.tasks.detection.quality import MEAN_AP
from fpgaflow.tasks.detection.registration import register_trained_detector
from fpgaflow.tasks.detection.smoke import DetectionSmokeResult, detection_smoke_test
from fpgaflow.tasks.detection.train_step import (
    DetectionTrainingOutcome,
    detection_train_step,
    detector_markdown,
    evaluation_markdown,
)
from fpgaflow.tasks.kinds.protocol import ModelKind
from fpgaflow.tasks.packaging.tensor_names import detector_tensor_names
from fpgaflow.tasks.registry.run_metrics import evaluation_picture_links


def _intake_caption(result: DetectionIntakeResult) -> str:
    return (
        f"{result.num_images} images, {result.num_objects} objects, {result.num_classes} labels, "
        f"fingerprint {result.dataset_fingerprint[:16]}"
    )


def _publish_training(outcome: DetectionTrainingOutcome, mlflow_run_id: str) -> None:
    evaluation = outcome.evaluation
    publish_markdown("featurizer", detector_markdown(outcome), "architecture, sizes and MACs")
    publish_table("training-epochs", outcome.history, f"{len(outcome.history)} epochs of the detector")
    publish_markdown(
        "evaluation",
        evaluation_markdown(outcome) + "\n" + evaluation_picture_links(mlflow_run_id, evaluation.pictures),
        f"test mAP@0.5 {evaluation.metrics['map50']:.4f}; precision-recall curves and sample detections pictures",
    )
    publish_table("test-metrics-per-class", evaluation.per_class, "AP@0.5 per class on the test split")


def _smoke_caption(result: DetectionSmokeResult) -> str:
    return f"detection agreement {result.agreement:.0%}"


DETECTOR = ModelKind(
    name="detector",
    rules=RULES,
    service_task="detection",
    default_output=BOXES_OUTPUT,  # a request that names no outputs gets all four detection outputs
    service_title="Detection service",
    parity_compared="Keras vs onnxruntime detections",
    numerics_measure="test mAP@0.5",
    tensor_names=detector_tensor_names,
    intake=intake_detection_dataset,
    intake_caption=_intake_caption,
    load_splits=load_detection_splits,
    smoke_images=split_image_paths,
    train=detection_train_step,
    publish_training=_publish_training,
    register=register_trained_detector,
    convert=convert_detector,
    evaluate_numerics=evaluate_detector_numerics,
    smoke_test=detection_smoke_test,
    smoke_caption=_smoke_caption,
    quality=MEAN_AP,
)
