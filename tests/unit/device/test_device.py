"""The emulated device: one model at a time, refuses what does not fit, runs like onnxruntime."""

from __future__ import annotations

import threading

import numpy as np
import onnx
import onnxruntime
import pytest

from fpgaflow.fpga_runtime.device import EmulatedDevice
from fpgaflow.fpga_runtime.errors import InvalidInput, InvalidServiceDefinition, ModelNotReady, ResourceExhausted
from fpgaflow.fpga_runtime.graph_format import BLOCK_SIZE_METADATA_KEY, FORMAT_METADATA_KEY
from fpgaflow.fpga_runtime.profiles import load_profile


@pytest.fixture
def model_files(graphs, tmp_path):
    first, second = tmp_path / "first.onnx", tmp_path / "second.onnx"
    onnx.save(graphs.conv_relu_pool(channels=8, seed=0), first)
    onnx.save(graphs.conv_relu_pool(channels=4, seed=7), second)
    return first, second


def batch(size: int = 2) -> np.ndarray:
    return np.random.default_rng(3).standard_normal((size, 3, 16, 16)).astype(np.float32)


def direct(path, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["features"], {"x": x})[0]


def test_runs_the_loaded_model_like_onnxruntime(model_files):
    device = EmulatedDevice("arria10")
    loaded = device.load(model_files[0], "fp32")
    assert device.loaded == loaded
    assert (loaded.path.name, loaded.numeric_format, loaded.weight_bytes) == ("first.onnx", "fp32", 224 * 4)
    assert (device.input_names, device.output_names) == (("x",), ("features",))
    x = batch()
    np.testing.assert_allclose(device.run({"x": x})["features"], direct(model_files[0], x), rtol=1e-5, atol=1e-6)


def test_loading_another_model_replaces_the_first(model_files):
    device = EmulatedDevice("arria10")
    first = device.load(model_files[0], "fp32")
    device.run({"x": batch()})
    second = device.load(model_files[1], "int8")
    assert device.loaded == second != first
    assert device.loaded.sha256 != first.sha256
    assert device.run({"x": batch()})["features"].shape == (2, 4, 1, 1)
    assert device.stats().runs == 1
    assert device.cost.graph.numeric_format == "int8"


def test_a_model_too_large_is_refused_naming_both_sizes_and_the_current_model_stays(model_files, tiny_profile_path):
    device = EmulatedDevice(load_profile(tiny_profile_path))
    device.load(model_files[1], "msfp8")
    with pytest.raises(ResourceExhausted) as refused:
        device.load(model_files[0], "fp32")
    message = str(refused.value)
    assert "896 bytes" in message and "500 bytes" in message and "224 weights at 32 bits in fp32" in message
    assert device.loaded.path.name == "second.onnx"
    assert device.run({"x": batch(1)})["features"].shape == (1, 4, 1, 1)


def test_the_same_model_fits_in_a_narrower_format(model_files, tiny_profile_path):
    device = EmulatedDevice(tiny_profile_path)
    # 216 kernel values at 3 bits + 72 blocks (3 input channels each) x 5 exponent bits + 8 biases at 32 bits.
    assert device.load(model_files[0], "msfp8").weight_bytes == (216 * 3 + 72 * 5 + 8 * 32) // 8 == 158


def labelled(model: onnx.ModelProto, properties: dict[str, str]) -> onnx.ModelProto:
    onnx.helper.set_model_props(model, properties)
    return model


def test_a_graph_labelled_with_another_format_is_refused_naming_both(graphs, tmp_path):
    path = tmp_path / "int8.onnx"
    onnx.save(labelled(graphs.conv_relu_pool(), {FORMAT_METADATA_KEY: "int8"}), path)
    device = EmulatedDevice("stratix10")
    with pytest.raises(
        InvalidServiceDefinition,
        match="int8.onnx: service.json declares numeric format 'msfp8' but the graph was prepared in 'int8'",
    ):
        device.load(path, "msfp8")
    assert device.loaded is None
    assert device.load(path, "int8").numeric_format == "int8"


def test_the_block_size_comes_from_the_graph_and_must_match_the_declared_one(graphs, tmp_path):
    path = tmp_path / "msfp8.onnx"
    onnx.save(labelled(graphs.conv_relu_pool(), {FORMAT_METADATA_KEY: "msfp8", BLOCK_SIZE_METADATA_KEY: "2"}), path)
    device = EmulatedDevice("stratix10")
    loaded = device.load(path, "msfp8")
    # Blocks of 2 along 3 input channels: 2 blocks per 3 values, 144 exponents instead of 72.
    assert (loaded.block_size, loaded.weight_bytes) == (2, (216 * 3 + 144 * 5 + 8 * 32) // 8)
    with pytest.raises(
        InvalidServiceDefinition, match="declares block size 16 for msfp8 but the graph was prepared with block size 2"
    ):
        device.load(path, "msfp8", block_size=16)


def test_unsupported_format_is_refused(model_files, tiny_profile_path):
    device = EmulatedDevice(tiny_profile_path)
    with pytest.raises(InvalidInput, match="does not support numeric format 'msfp9'"):
        device.load(model_files[0], "msfp9")
    assert device.loaded is None


def test_nothing_loaded_is_not_ready(model_files):
    device = EmulatedDevice("stratix10")
    with pytest.raises(ModelNotReady, match="holds no model"):
        device.run({"x": batch()})
    with pytest.raises(ModelNotReady):
        _ = device.cost
    device.load(model_files[0], "fp32")
    device.unload()
    assert device.loaded is None
    with pytest.raises(ModelNotReady):
        device.run({"x": batch()})
    stats = device.stats()
    assert (stats.model, stats.runs, stats.utilisation, stats.modelled_latency_seconds) == (None, 0, 0.0, None)


@pytest.mark.parametrize(
    ("feeds", "message"),
    [
        ({"y": batch()}, r"device inputs are \['x'\]; got \['y'\] \(missing \['x'\]\)"),
        ({"x": batch().astype(np.float64)}, "input 'x' must be float32, got float64"),
        ({"x": batch()[:, :, :8]}, r"input 'x' must have shape \(-1, 3, 16, 16\)"),
        ({"x": batch()[0]}, r"input 'x' must have shape \(-1, 3, 16, 16\)"),
    ],
)
def test_bad_feeds_are_invalid_input(model_files, feeds, message):
    device = EmulatedDevice("arria10")
    device.load(model_files[0], "fp32")
    with pytest.raises(InvalidInput, match=message):
        device.run(feeds)


def test_stats_count_runs_and_busy_time_from_concurrent_callers(model_files):
    device = EmulatedDevice("arria10", intra_op_threads=1)
    device.load(model_files[0], "fp32")
    x = batch(1)
    expected = direct(model_files[0], x)
    mismatches = []

    def call() -> None:
        for _ in range(5):
            if not np.allclose(device.run({"x": x})["features"], expected, rtol=1e-5, atol=1e-6):
                mismatches.append(1)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = device.stats()
    assert mismatches == []
    assert stats.runs == 20
    assert 0 < stats.busy_seconds <= stats.wall_seconds
    assert 0 < stats.utilisation <= 1
    assert stats.last_latency_seconds > 0
    assert stats.modelled_latency_seconds == pytest.approx(device.cost.latency.seconds)
    assert stats.model == device.loaded
