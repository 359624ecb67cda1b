"""ONNX conversion of both stages: graph checks, names, parity report and its failure message."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from fpgaflow.tasks.conversion.onnx_stages import (
    FEATURES,
    FPGA_INPUT,
    PROBABILITIES,
    REPORT_FILE,
    ConversionError,
    ConversionReport,
    ParityError,
    convert_keras_stage,
    convert_stages,
    ensure_parity,
    load_held_out_images,
    measure_parity,
    parity_problems,
    run_onnx,
)
from fpgaflow.tasks.errors import PipelineStepError
from tests.fixtures.keras_stages import INPUT_SIZE, build_stages, save_stages


def test_both_stages_convert_with_exact_tensor_names_and_pinned_opset(converted, conversion_settings):
    fpga = onnx.load(str(converted.fpga_onnx))
    cpu = onnx.load(str(converted.cpu_onnx))
    assert [value.name for value in fpga.graph.input] == [FPGA_INPUT]
    assert [value.name for value in fpga.graph.output] == [FEATURES]
    assert [value.name for value in cpu.graph.input] == [FEATURES]
    assert [value.name for value in cpu.graph.output] == [PROBABILITIES]
    opsets = {entry.domain: entry.version for entry in fpga.opset_import}
    assert opsets[""] == conversion_settings.onnx_opset == converted.opset


def test_parity_report_passes_and_is_saved(converted, held_out_images):
    assert converted.passed, converted.problems
    assert converted.images == len(held_out_images)
    assert set(converted.stages) == {"fpga", "cpu", "end_to_end"}
    assert converted.stages["end_to_end"].top1_agreement == 1.0
    assert converted.stages["fpga"].max_abs_diff < 1e-3
    saved = ConversionReport.model_validate(json.loads((converted.fpga_onnx.parent / REPORT_FILE).read_text()))
    assert saved == converted
    assert ensure_parity(converted) is converted


def test_onnx_chain_reproduces_keras_probabilities(converted, stage_files, held_out_images):
    from fpgaflow.tasks.conversion.onnx_stages import load_keras_model, run_keras

    fpga_model, cpu_model = (load_keras_model(path) for path in stage_files)
    expected = run_keras(cpu_model, run_keras(fpga_model, held_out_images))
    features = run_onnx(converted.fpga_onnx, FPGA_INPUT, held_out_images)
    probabilities = run_onnx(converted.cpu_onnx, FEATURES, features)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_parity_failure_names_the_stage_the_difference_and_the_tolerance(converted, held_out_images, tmp_path):
    from fpgaflow.tasks.conversion.onnx_stages import load_keras_model, run_keras

    other_fpga, _ = save_stages(tmp_path / "other", seed=2)
    keras_features = run_keras(load_keras_model(other_fpga), held_out_images)
    stages = {"fpga": measure_parity(keras_features, run_onnx(converted.fpga_onnx, FPGA_INPUT, held_out_images))}
    problems = parity_problems(stages, tolerance=1e-4, min_top1_agreement=0.99)
    report = converted.model_copy(update={"stages": stages, "problems": problems})
    assert not report.passed
    with pytest.raises(ParityError) as failure:
        ensure_parity(report)
    message = str(failure.value)
    assert message.startswith("ONNX conversion does not reproduce Keras on 12 held-out images: fpga: max abs difference ")
    assert message.endswith("exceeds the tolerance 0.0001")
    assert failure.value.report is report


def test_the_conversion_step_fails_on_a_parity_miss_and_hands_on_the_report(converted, tmp_path):
    from fpgaflow.tasks.conversion.steps import convert_task
    from fpgaflow.tasks.kinds import CLASSIFIER

    missed = converted.model_copy(update={"problems": ("fpga: max abs difference 1 exceeds the tolerance 0.0001",)})

    class MissingKind:
        parity_compared = CLASSIFIER.parity_compared

        def convert(self, *_):
            return missed

    with pytest.raises(ParityError) as failure:
        convert_task.fn(MissingKind(), tmp_path / "fpga.keras", tmp_path / "cpu.keras", np.zeros((1, 8, 8, 3)), tmp_path)
    assert failure.value.report is missed


def test_tolerance_zero_with_top1_requirement_reports_every_problem(stage_files, held_out_images, tmp_path):
    from fpgaflow.tasks.settings import PipelineSettings

    strict = PipelineSettings(home=tmp_path, parity_tolerance=0.0, parity_min_top1_agreement=1.0, parity_images=4)
    report = convert_stages(*stage_files, held_out_images, tmp_path / "onnx", strict)
    assert report.images == 4
    nonzero = [stage for stage, parity in report.stages.items() if parity.scaled_diff > 0]
    assert len(report.problems) == len(nonzero)
    for stage in nonzero:
        assert any(problem.startswith(f"{stage}: max abs difference") and "tolerance 0" in problem for problem in report.problems)


def test_measure_parity_scales_large_outputs_and_counts_top1():
    reference = np.array([[100.0, 0.0], [0.0, 100.0]], dtype=np.float32)
    candidate = np.array([[100.01, 0.0], [50.0, 49.0]], dtype=np.float32)
    parity = measure_parity(reference, candidate, top1=True)
    assert parity.max_abs_diff == pytest.approx(51.0)
    assert parity.output_scale == 100.0
    assert parity.scaled_diff == pytest.approx(0.51)
    assert parity.top1_agreement == 0.5


def test_measure_parity_refuses_different_shapes():
    with pytest.raises(ParityError, match=r"output shapes differ: Keras \(2, 3\), onnxruntime \(2, 4\)"):
        measure_parity(np.zeros((2, 3), np.float32), np.zeros((2, 4), np.float32))


def test_single_output_with_another_layer_name_is_renamed(tmp_path, conversion_settings):
    fpga, _ = build_stages(seed=3, features_layer="pooled")
    path = convert_keras_stage(fpga, tmp_path / "fpga.onnx", FPGA_INPUT, FEATURES, conversion_settings.onnx_opset)
    graph = onnx.load(str(path)).graph
    assert [value.name for value in graph.output] == [FEATURES]
    result = run_onnx(path, FPGA_INPUT, np.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), np.float32))
    assert result.shape == (1, 8)


def test_a_two_output_model_is_refused_with_its_counts(tmp_path):
    import keras

    image = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="input")
    pooled = keras.layers.GlobalAveragePooling2D()(image)
    model = keras.Model(image, [pooled, keras.layers.Dense(2)(pooled)], name="two_heads")
    with pytest.raises(ConversionError, match="must have exactly one input and one output, has 1 and 2"):
        convert_keras_stage(model, tmp_path / "x.onnx", FPGA_INPUT, FEATURES, 17)


def test_held_out_images_of_the_wrong_size_are_refused(stage_files, tmp_path, conversion_settings):
    wrong = np.zeros((2, 16, 16, 3), np.float32)
    with pytest.raises(
        PipelineStepError, match=r"held-out images have shape \(16, 16, 3\) per image; the FPGA stage expects \(32, 32, 3\)"
    ):
        convert_stages(*stage_files, wrong, tmp_path, conversion_settings)


def test_load_held_out_images_preprocesses_an_even_spread(tmp_path, preprocess_spec):
    from PIL import Image

    paths = []
    for index in range(10):
        path = tmp_path / f"{index}.png"
        Image.new("RGB", (40, 48), (index * 20, 0, 0)).save(path)
        paths.append(path)
    images = load_held_out_images(paths, preprocess_spec, limit=4)
    assert images.shape == (4, INPUT_SIZE, INPUT_SIZE, 3)
    red_means = images[..., 0].mean(axis=(1, 2)) + preprocess_spec.mean[0]
    np.testing.assert_allclose(red_means, [0, 60, 120, 180], atol=1e-3)
    with pytest.raises(PipelineStepError, match="no held-out images"):
        load_held_out_images([], preprocess_spec, limit=4)
