"""int8 emulation: onnxruntime static quantization (QDQ) calibrated on preprocessed training images."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

CALIBRATION_METHODS: dict[str, CalibrationMethod] = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


class ImageBatchReader(CalibrationDataReader):
    """Feeds ``images`` ([N, H, W, 3] float32, already preprocessed) to input ``input_name`` in batches.

    Its length is its number of batches; ``set_range`` narrows it to some of them (onnxruntime's strided
    calibration reads it one stride at a time).
    """

    def __init__(self, input_name: str, images: np.ndarray, batch_size: int = 16):
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or len(images) == 0:
            raise ValueError(f"calibration images must be a non-empty [N, H, W, C] array, got shape {images.shape}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.input_name = input_name
        self.batches = [images[start : start + batch_size] for start in range(0, len(images), batch_size)]
        self.position, self.end = 0, len(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.position, self.end = start_index, min(end_index, len(self.batches))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= self.end:
            return None
        batch = self.batches[self.position]
        self.position += 1
        return {self.input_name: batch}

    def rewind(self) -> None:
        self.position, self.end = 0, len(self.batches)


def quantize_int8(
    model: onnx.ModelProto,
    calibration: np.ndarray,
    per_channel: bool = True,
    reduce_range: bool = True,
    method: str = "minmax",
    batch_size: int = 4,
) -> onnx.ModelProto:
    """``model`` statically quantized to int8 (QDQ: uint8 activations, int8 weights).

    ``calibration`` holds preprocessed training images; activation ranges come from running
    them through the float model with the chosen calibration ``method``. Min-max ranges are
    merged batch by batch (a stride of one batch), so calibration holds the activations of one
    batch, not of every calibration image.
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown int8 calibration method {method!r}; known: {', '.join(CALIBRATION_METHODS)}")
    initializer_names = {tensor.name for tensor in model.graph.initializer}
    inputs = [tensor.name for tensor in model.graph.input if tensor.name not in initializer_names]
    if len(inputs) != 1:
        raise ValueError(f"int8 calibration feeds one image input; the model has inputs {inputs}")
    with tempfile.TemporaryDirectory(prefix="int8-") as scratch:
        source, prepared, quantized = (Path(scratch) / f"{stage}.onnx" for stage in ("source", "prepared", "quantized"))
        onnx.save(model, source)
        quant_pre_process(source, prepared, skip_symbolic_shape=True)
        quantize_static(
            prepared,
            quantized,
            ImageBatchReader(inputs[0], calibration, batch_size),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CALIBRATION_METHODS[method],
            extra_options={"CalibStridedMinMax": 1} if method == "minmax" else {},
        )
        return onnx.load(quantized)
