"""The classifier kind (resnet50, resnet152, densenet121, vgg16): a featurizer on the FPGA, a softmax head on the CPU."""

from __future__ import annotations

from fpgaflow.tasks.artifacts import publish_markdown, publish_table
from fpgaflow.tasks.conversion.onnx_stages import PROBABILITIES, convert_stages
from fpgaflow.tasks.data.expectations import RULES
from fpgaflow.tasks.data.intake import IntakeResult, intake_dataset, load_splits
from fpgaflow.tasks.deployment.smoke import SmokeResult, smoke_test
from fpgaflow.tasks.kinds.protocol import ModelKind
from fpgaflow.tasks.numerics.accuracy import evaluate_numerics
from fpgaflow.tasks.operations.scoring import ACCURACY, split_images
from fpgaflow.tasks.packaging.tensor_names import classifier_tensor_names
from fpgaflow.tasks.registry.registration import register_trained_model
from fpgaflow.tasks.registry.run_metrics import evaluation_picture_links
from fpgaflow.tasks.training.train_step import TrainingOutcome, evaluation_markdown, featurizer_markdown, train_step


def _intake_caption(result: IntakeResult) -> str:
    return f"{result.num_images} images, {result.num_classes} classes, fingerprint {result.dataset_fingerprint[:16]}"


def _publish_training(outcome: TrainingOutcome, mlflow_run_id: str) -> None:
    evaluation = outcome.evaluation
    publish_markdown("featurizer", featurizer_markdown(outcome.featurizer), "architecture, sizes and MACs")
    publish_table("training-epochs", outcome.history, f"{len(outcome.history)} epochs of the head")
    publish_markdown(
        "evaluation",
        evaluation_markdown(outcome) + "\n" + evaluation_picture_links(mlflow_run_id, evaluation.pictures),
        f"test accuracy {evaluation.metrics['accuracy']:.4f}; confusion matrix and per-class metrics pictures",
    )
    publish_table("test-metrics-per-class", evaluation.per_class, "precision, recall, F1 and AUC per class on the test split")


def _smoke_caption(result: SmokeResult) -> str:
    return f"top-1 agreement {result.top1_agreement:.0%}, accuracy {result.accuracy:.2%}"


CLASSIFIER = ModelKind(
    name="classifier",
    rules=RULES,
    service_task="classification",
    default_output=PROBABILITIES,
    service_title="Service",
    parity_compared="Keras vs onnxruntime",
    numerics_measure="test accuracy",
    tensor_names=classifier_tensor_names,
    intake=intake_dataset,
    intake_caption=_intake_caption,
    load_splits=load_splits,
    smoke_images=split_images,
    train=train_step,
    publish_training=_publish_training,
    register=register_trained_model,
    convert=convert_stages,
    evaluate_numerics=evaluate_numerics,
    smoke_test=smoke_test,
    smoke_caption=_smoke_caption,
    quality=ACCURACY,
)
