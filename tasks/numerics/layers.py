"""Where a numeric format loses accuracy: each layer's signal-to-quantisation-noise ratio against fp32.

A *layer* is a dot-product node of the fp32 graph (Conv, Gemm, MatMul: the work the FPGA's
matrix units do) and its output tensor, taken after a Relu that alone consumes it (int8
quantization folds such a Relu into the layer). A prepared graph keeps those tensor names: block
floating point only rewrites the nodes' inputs, and int8 QDQ follows each quantized tensor with a
QuantizeLinear → DequantizeLinear pair, whose output is what the next layer reads, so that is the
tensor compared there. Both graphs run on the same images with the layer tensors as extra outputs;

    SQNR = 10 log10( sum(reference**2) / sum((reference - candidate)**2) )   dB

summed over all images and elements (no noise at all: ``inf``). Errors compound through the
network, so the first layers with a low SQNR, or a sharp drop from one layer to the next, are
where a remedy (more bits, a layer kept in fp32, another block size) pays.

A second figure, the *varying* SQNR, keeps only what differs from image to image, in signal and
noise alike: each is taken minus its mean over the images at each element (at least two
images). The head is retrained on each format's features, so an error every image shares (a
shifted mean) costs nothing, while noise against the part that tells images apart does. Block
floating point scales its noise with the whole signal, so where all images share a large common
part the plain SQNR looks good while the varying one shows the loss (ResNet-50 with random
weights on the sample digits at 224 px: msfp9 features at 23 dB SQNR, 5 dB varying).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from fpgaflow.fpga_runtime.ort import make_session
from fpgaflow.tasks.errors import PipelineStepError

DOT_PRODUCT_OPS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class Layer:
    """A dot-product node of the fp32 graph: its name, operator and output tensor."""

    name: str
    op_type: str
    output: str


@dataclass(frozen=True)
class LayerSqnr:
    """One layer's SQNR in one format; ``tensor`` is what was compared (None: the layer is not in that graph)."""

    layer: Layer
    tensor: str | None
    sqnr_db: float | None
    varying_sqnr_db: float | None = None


def dot_product_layers(model: onnx.ModelProto) -> list[Layer]:
    """The fp32 graph's Conv/Gemm/MatMul nodes in execution order, each output after its own Relu."""
    consumers = _consumers(model)
    layers = []
    for node in model.graph.node:
        if node.op_type in DOT_PRODUCT_OPS and node.domain in ("", "ai.onnx"):
            output = node.output[0]
            followers = consumers.get(output, [])
            if len(followers) == 1 and followers[0].op_type == "Relu":
                output = followers[0].output[0]
            layers.append(Layer(node.name or node.output[0], node.op_type, output))
    return layers


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def tapped_tensor(model: onnx.ModelProto, tensor: str) -> str | None:
    """The tensor of ``model`` holding layer output ``tensor`` as the next layer reads it (None: absent).

    A tensor quantized by QuantizeLinear → DequantizeLinear is read after the pair.
    """
    produced = {output for node in model.graph.node for output in node.output}
    if tensor not in produced:
        return None
    consumers = _consumers(model)
    for quantize in consumers.get(tensor, []):
        if quantize.op_type == "QuantizeLinear":
            for dequantize in consumers.get(quantize.output[0], []):
                if dequantize.op_type == "DequantizeLinear":
                    return dequantize.output[0]
    return tensor


def with_outputs(model: onnx.ModelProto, tensors: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs ``tensors`` (float32, shapes left to onnxruntime)."""
    tapped = onnx.ModelProto.FromString(model.SerializeToString())
    existing = {output.name for output in tapped.graph.output}
    for tensor in dict.fromkeys(tensors):
        if tensor not in existing:
            tapped.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    return tapped


class _NoiseSums:
    """Running sums of signal and noise energy per layer, and of the reference and the error per element (for
    their means over the images), so images stream through in batches."""

    def __init__(self, count: int):
        self.signal = np.zeros(count)
        self.noise = np.zeros(count)
        self.signal_sums: list[np.ndarray | float] = [0.0] * count
        self.noise_sums: list[np.ndarray | float] = [0.0] * count
        self.images = np.zeros(count, dtype=np.int64)

    def add(self, index: int, reference: np.ndarray, candidate: np.ndarray) -> None:
        reference = reference.astype(np.float64)
        error = candidate.astype(np.float64) - reference
        self.signal[index] += float(np.sum(reference**2))
        self.noise[index] += float(np.sum(error**2))
        self.signal_sums[index] = self.signal_sums[index] + reference.sum(axis=0)
        self.noise_sums[index] = self.noise_sums[index] + error.sum(axis=0)
        self.images[index] += len(reference)

    def sqnr_db(self, index: int) -> float:
        return _decibels(self.signal[index], self.noise[index])

    def varying_sqnr_db(self, index: int) -> float | None:
        """SQNR of the reference and the error each minus its per-element mean over the images; None below two
        images."""
        images = self.images[index]
        if images < 2:
            return None
        signal = self.signal[index] - float(np.sum(np.square(self.signal_sums[index]))) / images
        noise = self.noise[index] - float(np.sum(np.square(self.noise_sums[index]))) / images
        return _decibels(max(signal, 0.0), max(noise, 0.0))


def _decibels(signal: float, noise: float) -> float:
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return float(10 * math.log10(signal / noise))


def per_layer_sqnr(
    prepared: Mapping[str, onnx.ModelProto],
    images: np.ndarray,
    input_name: str,
    reference: str = "fp32",
    batch_size: int = 4,
) -> dict[str, list[LayerSqnr]]:
    """Each non-reference format's SQNR per dot-product layer of ``prepared[reference]``, on ``images``."""
    if reference not in prepared:
        raise PipelineStepError(f"per-layer SQNR compares with {reference}; prepare {reference} too")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim < 2 or len(images) == 0:
        raise PipelineStepError(f"per-layer SQNR needs a non-empty batch of inputs [N, ...], got shape {images.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    layers = dot_product_layers(prepared[reference])
    if not layers:
        raise PipelineStepError(f"the {reference} graph has no {'/'.join(DOT_PRODUCT_OPS)} layers to compare")
    reference_session = make_session(with_outputs(prepared[reference], [layer.output for layer in layers]).SerializeToString())
    results = {}
    for name, model in prepared.items():
        if name == reference:
            continue
        taps = [tapped_tensor(model, layer.output) for layer in layers]
        present = [(index, tap) for index, tap in enumerate(taps) if tap is not None]
        tapped = [tap for _, tap in present]
        session = make_session(with_outputs(model, tapped).SerializeToString())
        sums = _NoiseSums(len(layers))
        for start in range(0, len(images), batch_size):
            feed = {input_name: images[start : start + batch_size]}
            expected = reference_session.run([layers[index].output for index, _ in present], feed)
            got = session.run(tapped, feed)
            for (index, _), want, have in zip(present, expected, got):
                sums.add(index, want, have)
        results[name] = [
            LayerSqnr(layer, taps[index], sums.sqnr_db(index), sums.varying_sqnr_db(index))
            if taps[index] is not None
            else LayerSqnr(layer, None, None)
            for index, layer in enumerate(layers)
        ]
    return results


def sqnr_json(results: Mapping[str, Sequence[LayerSqnr]]) -> dict:
    """``{"layers": [{name, op_type, output}], "sqnr_db": {format: [dB or null per layer]}, "varying_sqnr_db": {...}}``
    (inf as a string)."""
    first = next(iter(results.values()), [])
    return {
        "layers": [{"name": item.layer.name, "op_type": item.layer.op_type, "output": item.layer.output} for item in first],
        "sqnr_db": {name: [_json_number(item.sqnr_db) for item in items] for name, items in results.items()},
        "varying_sqnr_db": {name: [_json_number(item.varying_sqnr_db) for item in items] for name, items in results.items()},
    }


def _json_number(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return None if value is None else round(value, 3)
    return "inf" if value > 0 else "-inf"


def sqnr_table(results: Mapping[str, Sequence[LayerSqnr]]) -> list[str]:
    """Lines of a text table: one row per layer, two columns (dB) per format: SQNR and ``varying`` SQNR."""
    names = list(results)
    first = next(iter(results.values()), [])
    width = max([len("layer"), *(len(item.layer.name) for item in first)])
    headers = [header for name in names for header in (name, f"{name}:varying")]
    column = max(8, *(len(header) for header in headers))
    lines = [f"{'#':>3} {'layer':<{width}} {'op':<6} " + " ".join(f"{header:>{column}}" for header in headers)]
    for index, item in enumerate(first):
        values = [value for name in names for value in (results[name][index].sqnr_db, results[name][index].varying_sqnr_db)]
        cells = " ".join(f"{_cell(value):>{column}}" for value in values)
        lines.append(f"{index:>3} {item.layer.name:<{width}} {item.layer.op_type:<6} {cells}")
    return lines


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def plot_sqnr(results: Mapping[str, Sequence[LayerSqnr]], path: Path, title: str = "") -> Path:
    """A PNG of SQNR (dB) against layer index, one line per format."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 4.5))
    try:
        for name, items in results.items():
            values = [np.nan if item.sqnr_db is None else min(item.sqnr_db, 200.0) for item in items]
            (line,) = axes.plot(range(len(items)), values, marker="o", markersize=3, label=name)
            varying = [np.nan if item.varying_sqnr_db is None else min(item.varying_sqnr_db, 200.0) for item in items]
            axes.plot(range(len(items)), varying, linestyle="--", color=line.get_color(), label=f"{name} (varying part)")
        axes.set_xlabel("layer (Conv/Gemm/MatMul, in execution order)")
        axes.set_ylabel("SQNR vs fp32 (dB)")
        axes.set_title(title or "per-layer signal-to-quantisation-noise ratio")
        axes.grid(True, alpha=0.3)
        axes.legend()
        figure.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)
    return path
