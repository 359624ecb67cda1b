"""A random-init Keras ResNet-50 converted with tf2onnx: graph MACs equal a count from the Keras layers.

Keras builds ResNet-50 v1 (stride 2 on the first 1x1 convolution of a stage), which He et al.
(2016) put at 3.8 x 10^9 multiply-adds at 224x224; the often quoted 4.1 G is v1.5 (stride on the
3x3). The graph is converted at 64x64 to stay fast; with "same" padding every feature map scales
by exactly 224/64 per side, so the 224 count is the 64 count x (224/64)^2.
"""

from __future__ import annotations

import math

import pytest

from fpgaflow.fpga_runtime.placement.cost import cost_report, graph_cost
from fpgaflow.fpga_runtime.profiles import load_profile

pytestmark = pytest.mark.slow

SMALL = 64


def resnet50(size: int):
    import keras

    inputs = keras.Input((size, size, 3), name="images")
    features = keras.applications.ResNet50(weights=None, include_top=False, pooling="avg", input_tensor=inputs).output
    return keras.Model(inputs, features)


def keras_conv_count(model) -> tuple[int, int, int]:
    """MACs, kernel weights and output channels (one bias each) over the convolutions."""
    import keras

    macs = kernels = channels = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, channels_out = layer.output.shape
            kernel_h, kernel_w, channels_in, _ = layer.kernel.shape
            macs += height * width * channels_out * kernel_h * kernel_w * channels_in
            kernels += kernel_h * kernel_w * channels_in * channels_out
            channels += channels_out
    return macs, kernels, channels


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    import onnx
    import tensorflow as tf
    import tf2onnx

    model = resnet50(SMALL)
    signature = (tf.TensorSpec((None, SMALL, SMALL, 3), tf.float32, name="images"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=17)
    path = tmp_path_factory.mktemp("resnet50") / "resnet50.onnx"
    onnx.save(proto, path)
    return path, keras_conv_count(model)


def test_graph_macs_and_weights_equal_the_keras_layer_count(converted):
    path, (keras_macs, kernels, channels) = converted
    cost = graph_cost(path, "fp32")
    assert cost.macs == keras_macs
    assert sum(layer.op_type == "Conv" for layer in cost.layers) == 53
    # Batch norms fold into the convolutions; tf2onnx drops the folded biases that are all zero.
    assert kernels <= cost.weight_params <= kernels + channels


def test_scaled_to_224_it_is_the_published_3_8_gmacs(converted):
    path, _ = converted
    macs_224 = keras_conv_count(resnet50(224))[0]
    assert graph_cost(path, "fp32").macs * (224 / SMALL) ** 2 == macs_224
    assert 3.8e9 <= macs_224 < 3.9e9


def test_resnet50_fits_the_stratix10_only_in_narrow_formats(converted):
    path, _ = converted
    stratix10, arria10 = load_profile("stratix10"), load_profile("arria10")
    assert not cost_report(path, "fp32", stratix10).fits
    msfp8 = cost_report(path, "msfp8", stratix10)
    assert msfp8.fits
    params = msfp8.graph.weight_params
    # A little over the nominal 3 + 5/16 bits a weight: 32-bit biases, the first conv's blocks of only 3 channels.
    nominal = params * (1 + 2 + 5 / 16) / 8
    assert nominal < msfp8.graph.weight_bytes < nominal * 1.001
    assert not cost_report(path, "msfp8", arria10).fits
    assert math.isfinite(msfp8.latency.seconds) and msfp8.latency.seconds > 0
