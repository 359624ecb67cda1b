"""The numerics step: formats behind one interface, the onnxruntime feature extractor, the accuracy gate."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from fpgaflow.fpga_runtime.graph_format import BLOCK_SIZE_METADATA_KEY, FORMAT_METADATA_KEY
from fpgaflow.fpga_runtime.numerics import FORMATS
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.numerics.formats import (
    IMPLEMENTATIONS,
    OnnxFeatureExtractor,
    compare_formats,
    format_names,
    numerics_for,
    prepare_format_file,
    prepare_model,
)
from fpgaflow.tasks.numerics.gate import gate_formats
from fpgaflow.tasks.numerics.outcome import drop_limits
from fpgaflow.tasks.settings import get_pipeline_settings
from tests.fixtures.settings import reload_settings

from .conftest import FEATURE_DIM


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {prop.key: prop.value for prop in model.metadata_props}


def relative_rms_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float(np.sqrt(np.mean((reference - candidate) ** 2) / np.mean(reference**2)))


@pytest.fixture(scope="module")
def prepared(featurizer_model, images) -> dict[str, onnx.ModelProto]:
    return {name: prepare_model(numerics_for(name), featurizer_model, images) for name in ("fp32", "int8", "msfp8", "msfp9")}


@pytest.fixture(scope="module")
def features(prepared, images) -> dict[str, np.ndarray]:
    return {name: OnnxFeatureExtractor(model)(images) for name, model in prepared.items()}


def test_every_format_has_an_implementation():
    assert {fmt.kind for fmt in FORMATS.values()} <= set(IMPLEMENTATIONS)
    for name in FORMATS:
        assert numerics_for(name).name == name
    assert numerics_for("msfp9", block_size=32).format.block_size == 32
    with pytest.raises(PipelineStepError, match="unknown numeric format 'bf16'.*msfp9"):
        numerics_for("bf16")


def test_fp32_is_the_converted_graph_unchanged(featurizer_model, prepared):
    assert [node.SerializeToString() for node in prepared["fp32"].graph.node] == [
        node.SerializeToString() for node in featurizer_model.graph.node
    ]
    assert metadata(prepared["fp32"])[FORMAT_METADATA_KEY] == "fp32"


# Relative RMS feature error of this untrained net: msfp8 keeps 2 mantissa bits per value, msfp9 3.
@pytest.mark.parametrize(("name", "largest_error"), [("msfp8", 0.6), ("msfp9", 0.3)])
def test_block_float_quantizes_each_activation_once_and_stays_close(name, largest_error, prepared, features):
    model = prepared[name]
    assert metadata(model) == {FORMAT_METADATA_KEY: name, BLOCK_SIZE_METADATA_KEY: "16"}
    ops = [node.op_type for node in model.graph.node]
    # activations entering a Conv/MatMul: the image, the stem output (two consumers), the branch, the pooled vector
    assert ops.count("ReduceMax") == 4
    assert not {"QuantizeLinear", "DequantizeLinear"} & set(ops)
    assert 0 < relative_rms_error(features["fp32"], features[name]) < largest_error


def test_more_mantissa_bits_track_fp32_more_closely(features):
    assert relative_rms_error(features["fp32"], features["msfp9"]) < relative_rms_error(features["fp32"], features["msfp8"])


def test_int8_is_static_qdq_with_per_channel_weight_scales(prepared, features):
    model = prepared["int8"]
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("QuantizeLinear") >= 4 and ops.count("DequantizeLinear") >= 8
    initializers = {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    conv_weight_scales = [
        initializers[node.input[1]]
        for node in model.graph.node
        if node.op_type == "DequantizeLinear"
        and initializers.get(node.input[0], np.zeros(0)).dtype == np.int8
        and initializers[node.input[0]].ndim == 4
    ]
    assert conv_weight_scales and all(scale.ndim == 1 and scale.size > 1 for scale in conv_weight_scales)
    assert metadata(model)[FORMAT_METADATA_KEY] == "int8"
    assert 0 < relative_rms_error(features["fp32"], features["int8"]) < 0.15


def test_int8_needs_calibration_images(featurizer_model):
    with pytest.raises(PipelineStepError, match="int8 needs preprocessed training images"):
        prepare_model(numerics_for("int8"), featurizer_model, np.zeros((0, 32, 32, 3), np.float32))


def test_feature_extractor_contract(featurizer_model, prepared, images):
    from fpgaflow.tasks.featurizers.features import FeatureExtractor

    extractor = OnnxFeatureExtractor(featurizer_model)
    assert isinstance(extractor, FeatureExtractor)
    assert extractor(images[:3]).shape == (3, FEATURE_DIM)
    assert extractor(images[:3]).dtype == np.float32
    assert OnnxFeatureExtractor(featurizer_model.SerializeToString()).fingerprint == extractor.fingerprint
    fingerprints = {OnnxFeatureExtractor(model).fingerprint for model in prepared.values()}
    assert len(fingerprints) == len(prepared)
    with pytest.raises(ValueError, match=r"expects a batch \[N, 32, 32, 3\], got shape \(2, 16, 16, 3\)"):
        extractor(np.zeros((2, 16, 16, 3), np.float32))
    with pytest.raises(PipelineStepError, match="must map input 'pixels'"):
        OnnxFeatureExtractor(featurizer_model, input_name="pixels")


def test_format_names_put_the_reference_first():
    assert format_names(["int8", "msfp9", "int8"]) == ("fp32", "int8", "msfp9")
    with pytest.raises(PipelineStepError, match=r"unknown numeric formats \['msfp7'\]"):
        format_names(["msfp7"])


def test_the_prepared_graph_is_written_and_gated_with_the_settings_limit(featurizer_path, images, tmp_path, monkeypatch):
    output = prepare_format_file(featurizer_path, "msfp9", tmp_path / "fpga_stage.msfp9.onnx", images, block_size=8)
    assert metadata(onnx.load(output)) == {FORMAT_METADATA_KEY: "msfp9", BLOCK_SIZE_METADATA_KEY: "8"}
    monkeypatch.setenv("FPGAFLOW_MAX_ACCURACY_DROP", "0.05")
    reload_settings()
    results = gate_formats({"fp32": 0.9, "int8": 0.86, "msfp8": 0.86}, drop_limits(get_pipeline_settings()))
    assert results["int8"].passed and not results["msfp8"].passed  # msfp8 keeps its own limit, 2 points
    monkeypatch.setenv("FPGAFLOW_MAX_ACCURACY_DROP_BY_FORMAT", '{"msfp8": 0.05}')
    reload_settings()
    assert gate_formats({"fp32": 0.9, "msfp8": 0.86}, drop_limits(get_pipeline_settings()))["msfp8"].passed
    with pytest.raises(PipelineStepError, match="does not exist"):
        prepare_format_file(tmp_path / "missing.onnx", "fp32", tmp_path / "out.onnx", images)


def test_compare_reports_parity_against_fp32(prepared, images):
    weights = np.random.default_rng(0).normal(0, 1, (FEATURE_DIM, 5)).astype(np.float32)
    comparison = compare_formats(
        {name: prepared[name] for name in ("fp32", "msfp9")}, images[:8], classifier=lambda values: values @ weights, repeats=1
    )
    assert comparison["fp32"].features.max_abs_diff == 0 and comparison["fp32"].predictions.top1_agreement == 1
    assert comparison["msfp9"].features.max_abs_diff > 0
    assert 0 <= comparison["msfp9"].predictions.top1_agreement <= 1
    assert set(comparison["msfp9"].summary()) >= {"features_max_abs_diff", "top1_agreement", "latency_ratio_to_fp32"}


def test_a_graph_that_cannot_be_emulated_fails_the_step_with_the_reason(featurizer_model, images):
    broken = onnx.ModelProto.FromString(featurizer_model.SerializeToString())
    weight = next(tensor for tensor in broken.graph.initializer if len(tensor.dims) == 4)
    weight.CopyFrom(numpy_helper.from_array(np.full(tuple(weight.dims), np.inf, np.float32), weight.name))
    with pytest.raises(PipelineStepError, match="cannot prepare the featurizer graph in msfp8: weight .* NaN or infinite"):
        prepare_model(numerics_for("msfp8"), broken, images)
