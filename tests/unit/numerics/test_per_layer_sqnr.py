"""Per-layer SQNR against fp32: which tensors are compared, the dB arithmetic, the CLI table, JSON and PNG."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from fpgaflow.flows.cli import main
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.numerics.formats import numerics_for, prepare_model
from fpgaflow.tasks.numerics.layers import dot_product_layers, per_layer_sqnr, sqnr_json, sqnr_table, tapped_tensor

from .conftest import INPUT_SIZE


def matmul_model(weights: np.ndarray, offset: float = 0.0) -> onnx.ModelProto:
    """``y = input @ weights (+ offset)``; with an ``offset`` the dense layer's output goes through an Add."""
    nodes = [helper.make_node("MatMul", ["input", "w"], ["y" if not offset else "product"], name="dense")]
    initializers = [numpy_helper.from_array(weights.astype(np.float32), "w")]
    if offset:
        nodes.append(helper.make_node("Add", ["product", "offset"], ["y"], name="shift"))
        initializers.append(numpy_helper.from_array(np.full(weights.shape[1], offset, np.float32), "offset"))
    graph = helper.make_graph(
        nodes,
        "one_layer",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_sqnr_is_signal_over_noise_energy_in_decibels():
    weights = np.arange(12, dtype=np.float32).reshape(4, 3) - 5
    inputs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    models = {"fp32": matmul_model(weights), "scaled": matmul_model(weights * 1.1), "same": matmul_model(weights)}
    results = per_layer_sqnr(models, inputs, "input", batch_size=2)
    (scaled,) = results["scaled"]
    assert scaled.layer.name == "dense" and scaled.tensor == "y"
    assert scaled.sqnr_db == pytest.approx(20.0, abs=1e-4)  # noise = 0.1 x signal
    assert results["same"][0].sqnr_db == math.inf
    assert sqnr_json(results)["sqnr_db"] == {"scaled": [20.0], "same": ["inf"]}


def test_varying_sqnr_leaves_out_what_every_image_shares_in_signal_and_noise():
    weights = np.arange(12, dtype=np.float32).reshape(4, 3) - 5
    rng = np.random.default_rng(1)
    inputs = (10.0 + rng.normal(scale=0.5, size=(6, 4))).astype(np.float32)  # a large part common to every image
    models = {"fp32": matmul_model(weights), "scaled": matmul_model(weights * 1.1), "shifted": matmul_model(weights, 2.0)}
    results = per_layer_sqnr(models, inputs, "input", batch_size=4)
    (scaled,), (shifted,) = results["scaled"], results["shifted"]
    assert scaled.sqnr_db == pytest.approx(20.0, abs=1e-4)
    assert scaled.varying_sqnr_db == pytest.approx(20.0, abs=1e-3)  # the varying error is 0.1 x the varying signal
    reference = inputs.astype(np.float64) @ weights
    assert shifted.sqnr_db == pytest.approx(10 * np.log10(np.sum(reference**2) / (4.0 * reference.size)), abs=1e-3)
    # The same shift in every image (up to float32 rounding of the sum): nothing a retrained head would miss.
    assert shifted.varying_sqnr_db is not None and shifted.varying_sqnr_db > 100
    assert sqnr_json(results)["varying_sqnr_db"]["scaled"] == [20.0]
    (single,) = per_layer_sqnr(models, inputs[:1], "input")["scaled"]
    assert single.varying_sqnr_db is None and sqnr_table({"scaled": [single]})[1].split()[-2:] == ["20.0", "-"]


def test_layers_are_the_dot_products_after_their_own_relu(featurizer_model):
    layers = dot_product_layers(featurizer_model)
    assert sorted(layer.op_type for layer in layers) == ["Conv", "Conv", "Conv", "Conv", "MatMul"]
    producers = {output: node.op_type for node in featurizer_model.graph.node for output in node.output}
    assert sorted(producers[layer.output] for layer in layers) == ["Conv", "Conv", "MatMul", "Relu", "Relu"]


def test_int8_is_compared_where_the_next_layer_reads_it(featurizer_model, images):
    int8 = prepare_model(numerics_for("int8"), featurizer_model, images)
    producers = {output: node.op_type for node in int8.graph.node for output in node.output}
    taps = [tapped_tensor(int8, layer.output) for layer in dot_product_layers(featurizer_model)]
    assert all(tap is not None for tap in taps)
    assert {producers[tap] for tap in taps if tap is not None} == {"DequantizeLinear"}
    assert tapped_tensor(int8, "no-such-tensor") is None


def test_every_layer_of_every_format_gets_a_finite_sqnr(featurizer_model, images):
    prepared = {name: prepare_model(numerics_for(name), featurizer_model, images) for name in ("fp32", "int8", "msfp8", "msfp9")}
    results = per_layer_sqnr(prepared, images[:6], "input", batch_size=4)
    assert list(results) == ["int8", "msfp8", "msfp9"]
    for items in results.values():
        assert len(items) == 5 and all(item.sqnr_db is not None and 0 < item.sqnr_db < 80 for item in items)
    assert np.mean([item.sqnr_db for item in results["msfp9"]]) > np.mean([item.sqnr_db for item in results["msfp8"]])
    lines = sqnr_table(results)
    assert lines[0].split()[-6:] == ["int8", "int8:varying", "msfp8", "msfp8:varying", "msfp9", "msfp9:varying"]
    assert len(lines) == 6


def test_refuses_without_the_reference_or_images(featurizer_model, images):
    with pytest.raises(PipelineStepError, match="compares with fp32"):
        per_layer_sqnr({"msfp9": featurizer_model}, images, "input")
    with pytest.raises(PipelineStepError, match=r"non-empty batch"):
        per_layer_sqnr({"fp32": featurizer_model}, images[:0], "input")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("per-layer-images")
    rng = np.random.default_rng(4)
    for index in range(4):
        Image.fromarray(rng.integers(0, 256, (INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)).save(directory / f"{index}.png")
    return directory


def test_cli_prints_the_table_and_writes_the_plot(featurizer_path, image_dir, tmp_path, capsys):
    plot = tmp_path / "sqnr.png"
    arguments = ["numerics", "compare", str(featurizer_path), "--images", str(image_dir), "--formats", "msfp8,int8"]
    assert main([*arguments, "--per-layer", "--plot", str(plot)]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split()[-4:] == ["msfp8", "msfp8:varying", "int8", "int8:varying"] and len(rows) == 6
    assert plot.read_bytes().startswith(b"\x89PNG")

    assert main([*arguments, "--per-layer", "--json", "--plot", str(plot)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 4 and report["plot"] == str(plot)
    assert len(report["layers"]) == 5 and set(report["sqnr_db"]) == set(report["varying_sqnr_db"]) == {"msfp8", "int8"}


def test_cli_refuses_a_plot_without_per_layer_and_per_layer_without_a_format(featurizer_path, image_dir, capsys):
    arguments = ["numerics", "compare", str(featurizer_path), "--images", str(image_dir)]
    assert main([*arguments, "--plot", "x.png"]) == 2
    assert "--plot goes with --per-layer" in capsys.readouterr().err
    assert main([*arguments, "--formats", "fp32", "--per-layer"]) == 2
    assert "name at least one other" in capsys.readouterr().err
