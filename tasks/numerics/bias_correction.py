"""Bias correction of rounded weights: the mean shift their rounding causes, put back through the bias.

Rounding a Conv's weights ``W`` to ``Wq`` changes its output channel ``o`` by
``sum((Wq - W)[o] * x)``. Over the calibration images that error has the mean
``sum_c (sum_kh_kw (Wq - W)[o, c]) * E[x_c]`` (border padding aside), and inputs that follow a
Relu have a large mean, so the error is mostly a constant shift that every layer passes on. The
bias add is a vector operation, done in float on the device (Brainwave's precision plan), so
subtracting that mean there costs no precision (bias correction, Nagel et al., "Data-Free
Quantization Through Weight Equalization and Bias Correction", 2019). ``E[x_c]`` is measured on
the fp32 graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from fpgaflow.fpga_runtime.ort import make_session
from fpgaflow.tasks.numerics.layers import with_outputs


def channel_means(
    model: onnx.ModelProto, tensors: Sequence[str], images: np.ndarray, input_name: str, batch_size: int = 4
) -> dict[str, np.ndarray]:
    """Mean of each ``tensor`` of ``model`` per channel (axis 1) over ``images`` and every other axis."""
    session = make_session(with_outputs(model, tensors).SerializeToString())
    sums: dict[str, np.ndarray] = {}
    counts = dict.fromkeys(tensors, 0)
    for start in range(0, len(images), batch_size):
        batch = np.ascontiguousarray(images[start : start + batch_size], dtype=np.float32)
        for tensor, values in zip(tensors, session.run(list(tensors), {input_name: batch})):
            channel_sum = np.moveaxis(values, 1, 0).reshape(values.shape[1], -1).sum(axis=1, dtype=np.float64)
            sums[tensor] = sums[tensor] + channel_sum if tensor in sums else channel_sum
            counts[tensor] += values.size // values.shape[1]
    return {tensor: sums[tensor] / counts[tensor] for tensor in tensors}


def correct_conv_biases(
    original: onnx.ModelProto, prepared: onnx.ModelProto, images: np.ndarray, input_name: str
) -> onnx.ModelProto:
    """``prepared`` (``original`` with rounded Conv weights) with each ungrouped Conv's bias corrected for its rounding."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"bias correction needs calibration images [N, H, W, 3], got an array of shape {images.shape}")
    weights = {tensor.name: tensor for tensor in original.graph.initializer}
    convs = {
        node.name: node
        for node in original.graph.node
        if node.op_type == "Conv" and node.input[1] in weights and _group(node) == 1
    }
    corrected = onnx.ModelProto.FromString(prepared.SerializeToString())
    initializers = {tensor.name: tensor for tensor in corrected.graph.initializer}
    targets = [
        node for node in corrected.graph.node if node.op_type == "Conv" and node.name in convs and node.input[1] in initializers
    ]
    if not targets:
        return corrected
    inputs = list(dict.fromkeys(convs[node.name].input[0] for node in targets))
    means = channel_means(original, inputs, images, input_name)
    for node in targets:
        source = convs[node.name]
        mean = means[source.input[0]]
        error = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float64) - numpy_helper.to_array(
            weights[source.input[1]]
        )
        shift = error.sum(axis=(2, 3)) @ mean
        bias = (
            numpy_helper.to_array(initializers[node.input[2]]) if len(node.input) > 2 and node.input[2] else np.zeros(len(shift))
        )
        name = f"{node.name}/corrected_bias"
        corrected.graph.initializer.append(numpy_helper.from_array((bias - shift).astype(np.float32), name))
        if len(node.input) > 2:
            node.input[2] = name
        else:
            node.input.append(name)
    used = {name for node in corrected.graph.node for name in node.input}
    kept = [tensor for tensor in corrected.graph.initializer if tensor.name in used]
    del corrected.graph.initializer[:]
    corrected.graph.initializer.extend(kept)
    return corrected


def _group(node: onnx.NodeProto) -> int:
    return next((helper.get_attribute_value(attribute) for attribute in node.attribute if attribute.name == "group"), 1)
