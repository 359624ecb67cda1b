"""The on-chip bits a weight tensor takes in a numeric format, as the device stores it.

Weights of the dot-product units (the kernel of a Conv or ConvTranspose, the constant operands of a
Gemm or MatMul) are stored in the format:

* ``fp32``: 32 bits a value;
* ``int8``: 8 bits a value plus a 32-bit float scale per quantisation group: the graph's own scales
  when the weight is dequantized in the graph (per output channel by default), else one per output
  channel;
* block floating point: ``1 + mantissa_bits`` bits a value plus one ``exponent_bits`` shared
  exponent per block of ``block_size`` values along the reduction axis (input channels of a Conv,
  K of a Gemm/MatMul); an axis whose length is not a multiple of the block size ends in a shorter
  block, which still takes a whole exponent.

Every other constant (biases, normalisation parameters, elementwise operands) stays in 32 bits: the
device adds them in its vector unit, as the emulation does in float32.
"""

from __future__ import annotations

import math

from fpgaflow.fpga_runtime.numerics import NumericFormat

SCALE_BITS = 32
VECTOR_BITS = 32


def dot_operand_axes(op_type: str, position: int, transposed: dict[str, int]) -> tuple[int, int] | None:
    """(reduction axis, output-channel axis) of input ``position`` of a dot-product node, None for other inputs.

    ``transposed``: the node's ``transA``/``transB`` attributes (Gemm).
    """
    if op_type == "Conv" and position == 1:  # [M, C/group, k...]
        return 1, 0
    if op_type == "ConvTranspose" and position == 1:  # [C, M/group, k...]
        return 0, 1
    if op_type == "Gemm" and position == 0:
        return (0, 1) if transposed.get("transA", 0) else (1, 0)
    if op_type == "Gemm" and position == 1:
        return (1, 0) if transposed.get("transB", 0) else (0, 1)
    if op_type == "MatMul" and position in (0, 1):
        return (-1, -2) if position == 0 else (-2, -1)
    return None


def weight_bits(shape: tuple[int, ...], fmt: NumericFormat, axes: tuple[int, int] | None, graph_scales: int | None = None) -> int:
    """Bits of one constant of ``shape``; ``axes`` from :func:`dot_operand_axes` (None: not a dot-product weight);
    ``graph_scales``: the number of int8 scales the graph dequantizes the weight with, if it does."""
    values = math.prod(shape)
    if axes is None or not shape or fmt.kind == "float32":
        return values * VECTOR_BITS
    reduction, channels = (axis % len(shape) for axis in axes)
    if fmt.kind == "int8":
        scales = graph_scales if graph_scales is not None else shape[channels]
        return values * 8 + scales * SCALE_BITS
    length = shape[reduction]
    blocks = values // length * math.ceil(length / fmt.block_size) if length else 0
    return values * (1 + fmt.mantissa_bits) + blocks * fmt.exponent_bits
