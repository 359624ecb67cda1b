"""Small ONNX graphs built by hand, and a service directory around them (fixture ``graphs``)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
from fpgaflow.fpga_runtime.service import ServiceDefinition, Stage, TensorSpec

OPSET = 17
IR_VERSION = 9  # onnxruntime 1.31 loads IR <= 13; onnx 1.23 writes 14 unless told


def make_model(nodes, inputs, outputs, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """``inputs``/``outputs``: (name, shape) pairs of float32 tensors; ``weights``: initializers."""
    graph = helper.make_graph(
        nodes,
        "graph",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in inputs],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in outputs],
        [numpy_helper.from_array(array, name) for name, array in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def random(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def conv_relu_pool(channels: int = 8, size: int = 16, seed: int = 0) -> onnx.ModelProto:
    """x[N,3,size,size] → Conv 3x3 (channels, pad 1) → Relu → GlobalAveragePool → features[N,channels,1,1]."""
    return make_model(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["conv"], pads=[1, 1, 1, 1], name="conv"),
            helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
            helper.make_node("GlobalAveragePool", ["relu"], ["features"], name="pool"),
        ],
        [("x", ["N", 3, size, size])],
        [("features", ["N", channels, 1, 1])],
        {"w": random(channels, 3, 3, 3, seed=seed), "b": random(channels, seed=seed + 1)},
    )


def head(channels: int = 8, classes: int = 3) -> onnx.ModelProto:
    """features[N,channels,1,1] → Flatten → Gemm → Softmax → probabilities[N,classes]."""
    return make_model(
        [
            helper.make_node("Flatten", ["features"], ["flat"]),
            helper.make_node("Gemm", ["flat", "w", "b"], ["logits"], transB=1),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        [("features", ["N", channels, 1, 1])],
        [("probabilities", ["N", classes])],
        {"w": random(classes, channels, seed=5), "b": random(classes, seed=6)},
    )


def write_service(directory: Path, featurizer: onnx.ModelProto, numeric_format: str = "fp32", channels: int = 8) -> Path:
    """A two-stage service (FPGA featurizer, CPU head) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(featurizer, directory / "featurizer.onnx")
    onnx.save(head(channels), directory / "head.onnx")
    features = TensorSpec(name="features", shape=(-1, channels, 1, 1))
    ServiceDefinition(
        name="tiny",
        version="1",
        class_names=("a", "b", "c"),
        preprocessing=PreprocessSpec.for_input_size(16),
        numeric_format=numeric_format,
        stages=(
            Stage(
                name="featurizer",
                target="FPGA",
                file="featurizer.onnx",
                numeric_format=numeric_format,
                inputs=(TensorSpec(name="x", shape=(-1, 3, 16, 16)),),
                outputs=(features,),
            ),
            Stage(
                name="head",
                target="CPU",
                file="head.onnx",
                inputs=(features,),
                outputs=(TensorSpec(name="probabilities", shape=(-1, 3)),),
            ),
        ),
        default_output="probabilities",
    ).save(directory)
    return directory


@pytest.fixture
def graphs() -> SimpleNamespace:
    return SimpleNamespace(
        make_model=make_model, random=random, conv_relu_pool=conv_relu_pool, head=head, write_service=write_service
    )


@pytest.fixture
def tiny_profile_path(tmp_path) -> Path:
    """A device with 500 bytes of on-chip memory: the 8-channel conv (224 weights) fits in msfp8 and int8, not in fp32."""
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "name: tiny\n"
        "description: a test device\n"
        "onchip_memory_bytes: 500\n"
        "mac_units: {fp32: 10, int8: 20, msfp8: 40}\n"
        "vector_lanes: 4\n"
        "clock_hz: 1000000\n"
        "host_link_bytes_per_second: 1000000\n"
        "efficiency: 0.5\n"
        "supported_formats: [fp32, int8, msfp8]\n"
        "source: made up for the tests\n"
    )
    return path
