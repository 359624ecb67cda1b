"""Acceptance of SSD-VGG detection on the sample detection data, end to end and small enough for two cores.

A 96 px detector (4 feature maps, width 1/8, random weights) learns three digits from ~170 images
in head mode; its test mAP@0.5 must end well above the same detector's before training. Then the
pipeline's steps for a detector: ONNX conversion with detection parity, the numeric formats gated
on mAP, registration and publication in MLflow, packaging, and a served node whose boxes equal
those of Keras (+ the numpy CPU stage) and of the two ONNX stages in onnxruntime.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from fpgaflow.fpga_runtime.client import PredictionClient
from fpgaflow.fpga_runtime.server import create_server
from fpgaflow.tasks.config import PipelineConfig
from fpgaflow.tasks.settings import PipelineSettings

READY_TIMEOUT = 120
IMAGES = 240
DIGITS = (0, 1, 7)
# The trained detector's test mAP@0.5 must beat the untrained one's by this much (mAP is a fraction).
MIN_MAP_GAIN = 0.1
SHOWN_SCORE = 0.3  # detections compared across Keras, onnxruntime and the node: those a user would see


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> PipelineSettings:
    return PipelineSettings(home=tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def intake(tmp_path_factory, settings):
    from fpgaflow.tasks.detection.intake import intake_detection_dataset
    from fpgaflow.tasks.detection.sample_data import write_detection_sample_data

    data_dir = tmp_path_factory.mktemp("data") / "digit-boxes"
    write_detection_sample_data(data_dir, count=IMAGES, digits=DIGITS, seed=0)
    return intake_detection_dataset(data_dir, settings)


@pytest.fixture(scope="module")
def config(intake) -> PipelineConfig:
    return PipelineConfig(
        data_dir=intake.data_dir,
        featurizer="ssd_vgg",
        weights="none",
        input_size=96,
        seed=0,
        numerics=("fp32", "int8"),
        training={"epochs": 10, "batch_size": 8, "optimizer": "adam", "learning_rate": 3e-3, "early_stopping_patience": 0},
        detection={"width": 0.125},
    )


@pytest.fixture(scope="module")
def splits(intake):
    from fpgaflow.tasks.detection.intake import load_detection_splits

    return load_detection_splits(intake.split_path)


@pytest.fixture(scope="module")
def trained(intake, splits, config, settings, tmp_path_factory):
    from fpgaflow.tasks.detection.train_step import detection_train_step

    return detection_train_step(
        splits, intake.class_names, intake.dataset_fingerprint, config, tmp_path_factory.mktemp("run") / "train", settings
    )


@pytest.fixture(scope="module")
def test_images(splits, trained):
    from fpgaflow.tasks.featurizers.features import load_images

    return load_images(list(splits.loc[splits["split"] == "test", "path"]), trained.featurizer.preprocessing)


@pytest.fixture(scope="module")
def conversion(trained, test_images, settings, tmp_path_factory):
    from fpgaflow.tasks.detection.conversion import convert_detector

    files = trained.model_files
    return convert_detector(files.fpga_stage, files.cpu_stage, test_images, tmp_path_factory.mktemp("onnx"), settings)


@pytest.fixture(scope="module")
def numerics(conversion, splits, intake, trained, config, settings, tmp_path_factory):
    from fpgaflow.tasks.detection.numerics import evaluate_detector_numerics

    return evaluate_detector_numerics(
        conversion.fpga_onnx,
        conversion.cpu_onnx,
        splits,
        intake.class_names,
        intake.dataset_fingerprint,
        trained.featurizer.preprocessing,
        config,
        tmp_path_factory.mktemp("numerics"),
        settings,
    )


def test_training_lifts_map50_well_above_the_untrained_head(trained, intake):
    metrics = trained.evaluation.metrics
    print(
        f"\ntest mAP@0.5: trained {metrics['map50']:.4f}, untrained {metrics['map50_untrained']:.4f}; per class "
        + ", ".join(f"{row['class']} {row['ap']:.3f}" for row in trained.evaluation.per_class)
    )
    assert metrics["map50"] >= metrics["map50_untrained"] + MIN_MAP_GAIN
    assert [row["class"] for row in trained.evaluation.per_class] == intake.class_names
    summary = trained.summary()
    assert summary["featurizer"]["name"] == "ssd_vgg" and summary["metrics"]["map50"] == metrics["map50"]
    assert trained.trained_blocks == [] and trained.featurizer.fine_tuned
    assert pickle.loads(pickle.dumps(trained)).summary() == summary  # the flow persists it as a cached task result


def test_conversion_reproduces_keras_detections(conversion):
    assert conversion.passed, conversion.problems
    assert conversion.stages["end_to_end"].top1_agreement == 1.0
    assert conversion.stages["fpga"].scaled_diff < 1e-4


def test_numeric_formats_are_gated_on_map(numerics, trained):
    fp32 = numerics.results["fp32"]
    assert fp32.accuracy == pytest.approx(trained.evaluation.metrics["map50"], abs=1e-6) and fp32.passed
    assert set(numerics.results) == {"fp32", "int8"} and "mAP@0.5" in numerics.results["int8"].message
    assert numerics.serve_format in {name for name, result in numerics.results.items() if result.passed}
    assert numerics.files["int8"].cpu_onnx == numerics.files["fp32"].cpu_onnx
    summary = numerics.summary()
    assert summary["serve_format"] == numerics.serve_format and summary["serve_format_reason"].startswith(numerics.serve_format)
    for values in summary["numerics"].values():
        assert values["measured_ms"] > 0 and values["modelled_ms"] > 0


@pytest.fixture(scope="module")
def published(trained, conversion, numerics, intake, config, settings, tmp_path_factory):
    from fpgaflow.tasks.detection.registration import register_trained_detector
    from fpgaflow.tasks.kinds import DETECTOR
    from fpgaflow.tasks.packaging.service_dir import package_service
    from fpgaflow.tasks.registry.publication import publish_version
    from fpgaflow.tasks.registry.runs import start_pipeline_run

    run_id = start_pipeline_run(config, intake.dataset_fingerprint, settings)
    files = trained.model_files
    registered = register_trained_detector(run_id, "digit-boxes", files.fpga_stage, files.cpu_stage, intake.class_names, settings)
    assert (
        register_trained_detector(run_id, "digit-boxes", files.fpga_stage, files.cpu_stage, intake.class_names, settings).version
        == registered.version
    )
    service_dir = package_service(
        name="digit-boxes",
        version=registered.version,
        class_names=intake.class_names,
        preprocessing=trained.featurizer.preprocessing,
        numeric_format="fp32",
        fpga_onnx=numerics.files["fp32"].fpga_onnx,
        cpu_onnx=numerics.files["fp32"].cpu_onnx,
        source=registered.service_source(intake.dataset_fingerprint),
        destination=tmp_path_factory.mktemp("services") / "digit-boxes",
        task_kind=DETECTOR.service_task,
        default_output=DETECTOR.default_output,
        settings=settings,
    )
    return publish_version("digit-boxes", registered.version, service_dir, conversion, numerics.results, settings)


def test_registered_and_published_like_a_classifier(published):
    from fpgaflow.fpga_runtime.service import load_service

    service = load_service(published.service_dir)
    assert service.task == "detection" and service.preprocessing.resize == "stretch" and service.input_size == 96
    assert service.default_output == "boxes" and service.numeric_format == "fp32"
    assert published.gates_passed and "candidate" in published.aliases


def test_served_boxes_equal_keras_and_onnxruntime(published, trained, conversion, splits, test_images):
    from fpgaflow.tasks.detection.conversion import FPGA_INPUT, run_stage
    from fpgaflow.tasks.detection.export import load_detector
    from fpgaflow.tasks.detection.parity import detection_parity
    from fpgaflow.tasks.detection.training import predict_detections

    exported = load_detector(trained.model_files.directory)
    keras = predict_detections(exported.detector, test_images, exported.detection)
    onnx = run_stage(conversion.cpu_onnx, run_stage(conversion.fpga_onnx, {FPGA_INPUT: test_images}))
    paths = list(splits.loc[splits["split"] == "test", "path"])
    node, port = create_server(published.service_dir, "127.0.0.1:0", device_profile="stratix10")
    node.start()
    try:
        node.wait_until_ready(READY_TIMEOUT)
        with PredictionClient("127.0.0.1", port) as client:
            served = client.predict(
                {"images": np.asarray([Path(path).read_bytes() for path in paths], dtype=object)},
                ["boxes", "scores", "classes", "num_detections"],
            )
            one = client.detect_file(paths[0])
    finally:
        node.stop(0).wait()
    for name, other in (("onnxruntime", onnx), ("served", served)):
        parity = detection_parity(keras, other)
        assert parity.top1_agreement >= 0.99 and parity.max_abs_diff <= 1e-4, (name, parity)
    shown = keras["scores"] >= SHOWN_SCORE
    assert shown.any()
    np.testing.assert_array_equal(served["classes"][shown], keras["classes"][shown])
    np.testing.assert_allclose(served["boxes"][shown], keras["boxes"][shown], atol=1e-4)
    np.testing.assert_allclose(one.scores, served["scores"][0, : served["num_detections"][0]], atol=1e-6)
