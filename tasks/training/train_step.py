"""The train step: featurize → fine-tune → evaluate → export, from the intake's split manifest.

The featurizer is converted to ONNX first and the splits are featurized by onnxruntime: no TensorFlow
pass over the images, and the features are those of the graph the conversion step checks against
Keras and the numerics step measures as fp32 (it reads them back from the feature cache).

One call for the classifier kind (``train_step``); each stage is also usable on its own
(``fpgaflow.tasks.featurizers.catalog``, ``fpgaflow.tasks.featurizers.features``, ``fpgaflow.tasks.training.head``,
``fpgaflow.tasks.training.evaluation``, ``fpgaflow.tasks.training.export``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.conversion.cache import onnx_cache_dir
from fpgaflow.tasks.conversion.onnx_stages import FEATURES, FPGA_INPUT, convert_keras_stage
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.featurizers.catalog import Featurizer, FeaturizerInfo, build_featurizer
from fpgaflow.tasks.featurizers.features import FeatureSet, feature_cache_dir, featurize_splits
from fpgaflow.tasks.numerics.formats import OnnxFeatureExtractor
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings
from fpgaflow.tasks.training.evaluation import Evaluation, evaluate_predictions
from fpgaflow.tasks.training.export import ModelFiles, export_model
from fpgaflow.tasks.training.head import fine_tune_full, predict_probabilities, train_head

MODEL_DIR = "model"
EVALUATION_DIR = "evaluation"
FEATURIZER_ONNX_DIR = "featurizer-onnx"


@dataclass
class TrainingOutcome:
    featurizer: FeaturizerInfo
    history: list[dict]
    evaluation: Evaluation
    model_files: ModelFiles
    features_from_cache: bool

    def summary(self) -> dict:
        """The part of the run summary (the CLI's ``--json``) this step adds."""
        info = self.featurizer
        return {
            "featurizer": {"name": info.name, "input_size": info.input_size, "feature_dim": info.feature_dim},
            "metrics": dict(self.evaluation.metrics),
        }


def train_step(
    splits: pd.DataFrame,
    class_names: Sequence[str],
    dataset_fingerprint: str,
    config: PipelineConfig,
    output_dir: Path,
    settings: PipelineSettings | None = None,
    progress: bool = True,
) -> TrainingOutcome:
    """Train on the manifest's train/val splits, evaluate on its test split, export into ``output_dir/model``."""
    settings = settings or get_pipeline_settings()
    training = config.training
    output_dir = Path(output_dir)
    if not (splits["split"] == "test").any():
        raise PipelineStepError("the split manifest has no test images to evaluate on")
    featurizer = build_featurizer(config.featurizer, config.weights, config.input_size, config.seed, settings)
    spec = featurizer.info.preprocessing

    def featurize(model: Featurizer, rows: pd.DataFrame, name: str) -> FeatureSet:
        onnx_path = convert_keras_stage(
            model.model,
            output_dir / FEATURIZER_ONNX_DIR / name,
            FPGA_INPUT,
            FEATURES,
            settings.onnx_opset,
            onnx_cache_dir(settings),
        )
        extractor = OnnxFeatureExtractor(onnx_path, FPGA_INPUT, FEATURES)
        return featurize_splits(
            rows, class_names, extractor, spec, training.featurize_batch_size, feature_cache_dir(settings), progress
        )

    features = featurize(featurizer, splits, "featurizer.onnx")
    head = train_head(
        features["train"].features,
        features["train"].labels,
        features["val"].features,
        features["val"].labels,
        len(class_names),
        training,
        config.seed,
        progress="train head" if progress else "",
    )
    head_model, history, test = head.model, head.history, features["test"]
    if training.mode == "full":
        stages = fine_tune_full(
            featurizer, head, splits, class_names, training, config.seed, progress="fine-tune end to end" if progress else ""
        )
        featurizer, head_model, history = stages.featurizer, stages.head, stages.history
        test = featurize(featurizer, splits[splits["split"] == "test"], "fine-tuned-featurizer.onnx")["test"]
    evaluation = evaluate_predictions(
        predict_probabilities(head_model, test.features), test.labels, class_names, output_dir / EVALUATION_DIR
    )
    files = export_model(featurizer, head_model, class_names, output_dir / MODEL_DIR)
    return TrainingOutcome(featurizer.info, history, evaluation, files, features.from_cache)


def featurizer_markdown(info: FeaturizerInfo) -> str:
    spec = info.preprocessing
    return (
        "\n".join(
            [
                f"# Featurizer {info.name}",
                "| | |",
                "|---|---|",
                f"| weights | `{info.weights}` |",
                f"| input | {info.input_size}x{info.input_size}x3 |",
                f"| features | {info.feature_dim} |",
                f"| parameters | {info.parameter_count:,} |",
                f"| multiply-accumulates per image | {info.mac_count / 1e9:.3f} G |",
                f"| preprocessing | {spec.resize} to {spec.resize_to}, crop {spec.crop}, {spec.channel_order}, "
                f"mean {spec.mean}, std {spec.std} |",
            ]
        )
        + "\n"
    )


def evaluation_markdown(outcome: TrainingOutcome) -> str:
    evaluation = outcome.evaluation
    names = evaluation.class_names
    lines = ["# Test split", "", "| metric | value |", "|---|---|"]
    lines += [f"| {key} | {value:.4f} |" for key, value in evaluation.metrics.items()]
    lines += [
        "",
        "Confusion matrix (rows: true class, columns: predicted class)",
        "",
        "| | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    lines += [
        f"| **{name}** | " + " | ".join(str(count) for count in row) + " |"
        for name, row in zip(names, evaluation.confusion_matrix)
    ]
    return "\n".join(lines) + "\n"
