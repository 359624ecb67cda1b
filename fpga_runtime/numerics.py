"""Numeric formats of the emulated FPGA, as data, and the reference block floating point quantizer.

A :class:`NumericFormat` says what a device computes in and how many bits a weight takes in
on-chip memory. The formats:

=========  ============================================================  ====================
name       what it is                                                    bits per weight
=========  ============================================================  ====================
``fp32``   IEEE single precision, the reference                          32
``int8``   8-bit integers with per-tensor/per-channel scales (QDQ)       8
``msfp8``  block floating point: 1 sign, 2 mantissa bits per value,      1 + 2 + 5/block
           one 5-bit exponent shared by ``block_size`` values
``msfp9``  the same with 3 mantissa bits                                 1 + 3 + 5/block
=========  ============================================================  ====================

Block floating point, exactly (:func:`bfp_quantize`)
-----------------------------------------------------
Values are cut into blocks of ``B = block_size`` consecutive values along one axis (a shorter
axis, or the tail of an axis whose length is not a multiple of ``B``, forms a shorter last
block: padding with zeros changes no block maximum). For a block ``x_1 .. x_B``, with ``m``
mantissa bits and ``k`` exponent bits:

* shared exponent ``E = clip(floor(log2(max_i |x_i|)), E_min, E_max)`` with
  ``E_min = -(2**(k-1) - 1)`` and ``E_max = 2**(k-1)`` (all ``2**k`` codes of a bias-15
  exponent for ``k = 5``: ``E`` in ``[-15, 16]``). An all-zero block gets ``E_min``.
* step ``s = 2**(E - (m - 1))``: the mantissa is explicit (no hidden bit), so the block's
  largest value keeps its leading one in the top mantissa bit.
* ``y_i = s * clip(round_half_even(x_i / s), -(2**m - 1), 2**m - 1)``: sign-magnitude,
  round to nearest with ties to even, saturating at ``(2**m - 1) * s``.

Consequences: values smaller than ``s / 2`` flush to zero (the block's "denormal range": a tiny
value beside a large one is lost), the largest magnitude is ``(2**m - 1) * 2**(E_max - m + 1)``
(98304 for msfp8, 114688 for msfp9) and the smallest non-zero one ``2**(E_min - m + 1)``.

Special values: ``+-inf`` count as the largest magnitude, so their block takes ``E_max`` and they
saturate to ``+-(2**m - 1) * 2**(E_max - m + 1)``. ``NaN`` has no code: it stays ``NaN`` in its
own position and is ignored when the shared exponent is chosen (a block of only NaN stays NaN).
``-0.0`` and negative values that round to zero keep their sign bit.

All arithmetic is exact (scaling by powers of two and integer rounding), so the result does not
depend on how it is computed; the ONNX emulation in the pipeline reproduces it bit for bit.
numpy only: the serving runtime uses this module for memory sizing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

DEFAULT_BLOCK_SIZE = 16
SHARED_EXPONENT_BITS = 5

FormatKind = Literal["float32", "int8", "block_float"]


@dataclass(frozen=True)
class NumericFormat:
    """What a device computes in: a name, a kind, and the bit layout of a weight."""

    name: str
    kind: FormatKind
    description: str
    mantissa_bits: int = 0
    exponent_bits: int = 0
    block_size: int = 1

    def __post_init__(self) -> None:
        if self.kind == "block_float":
            if self.mantissa_bits < 1:
                raise ValueError(f"format {self.name!r}: mantissa_bits must be at least 1, got {self.mantissa_bits}")
            if self.exponent_bits < 2:
                raise ValueError(f"format {self.name!r}: exponent_bits must be at least 2, got {self.exponent_bits}")
            if self.block_size < 1:
                raise ValueError(f"format {self.name!r}: block_size must be at least 1, got {self.block_size}")

    @property
    def bits_per_weight(self) -> float:
        """Bits one weight occupies in on-chip memory (a shared exponent spread over its block)."""
        if self.kind == "block_float":
            return 1 + self.mantissa_bits + self.exponent_bits / self.block_size
        return float(BITS_OF_KIND[self.kind])

    def with_block_size(self, block_size: int) -> NumericFormat:
        """The same format with another shared-exponent block size (block floating point only)."""
        if self.kind != "block_float":
            raise ValueError(
                f"format {self.name!r} has no shared-exponent blocks; block_size applies to block floating point only"
            )
        return replace(self, block_size=block_size)


BITS_OF_KIND: dict[str, int] = {"float32": 32, "int8": 8}

FORMATS: dict[str, NumericFormat] = {
    fmt.name: fmt
    for fmt in (
        NumericFormat("fp32", "float32", "IEEE float32, the reference"),
        NumericFormat("int8", "int8", "8-bit integer, static QDQ quantization calibrated on training images"),
        NumericFormat(
            "msfp8",
            "block_float",
            "ms-fp8: 1 sign, 2 mantissa bits, 5-bit exponent shared per block",
            mantissa_bits=2,
            exponent_bits=SHARED_EXPONENT_BITS,
            block_size=DEFAULT_BLOCK_SIZE,
        ),
        NumericFormat(
            "msfp9",
            "block_float",
            "ms-fp9: 1 sign, 3 mantissa bits, 5-bit exponent shared per block",
            mantissa_bits=3,
            exponent_bits=SHARED_EXPONENT_BITS,
            block_size=DEFAULT_BLOCK_SIZE,
        ),
    )
}


def numeric_format(name: str, block_size: int | None = None) -> NumericFormat:
    """The format called ``name``; ``block_size`` overrides the shared-exponent block of a block format."""
    try:
        fmt = FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown numeric format {name!r}; known formats: {', '.join(FORMATS)}") from None
    if block_size is not None and fmt.kind == "block_float":
        fmt = fmt.with_block_size(block_size)
    return fmt


def shared_exponent_range(exponent_bits: int) -> tuple[int, int]:
    """``(E_min, E_max)`` of a shared exponent of ``exponent_bits`` bits: ``(-(2**(k-1) - 1), 2**(k-1))``."""
    if exponent_bits < 2:
        raise ValueError(f"exponent_bits must be at least 2, got {exponent_bits}")
    half = 2 ** (exponent_bits - 1)
    return -(half - 1), half


def bfp_max_magnitude(mantissa_bits: int, exponent_bits: int = SHARED_EXPONENT_BITS) -> float:
    """The largest magnitude block floating point represents: ``(2**m - 1) * 2**(E_max - m + 1)``."""
    _, e_max = shared_exponent_range(exponent_bits)
    return float((2**mantissa_bits - 1) * 2.0 ** (e_max - mantissa_bits + 1))


def bfp_quantize(
    x: np.ndarray,
    mantissa_bits: int,
    exponent_bits: int = SHARED_EXPONENT_BITS,
    block_size: int = DEFAULT_BLOCK_SIZE,
    axis: int = -1,
) -> np.ndarray:
    """Round ``x`` to block floating point, blocks of ``block_size`` values along ``axis``.

    Implements exactly the definition in the module docstring::

        E   = clip(floor(log2(max |x_block|)), E_min, E_max)      (NaN ignored; all-zero block: E_min)
        s   = 2 ** (E - (mantissa_bits - 1))
        y_i = s * clip(round_half_even(x_i / s), -(2**m - 1), 2**m - 1)

    Returns an array of the input's shape; float64 input stays float64, other float input is
    computed and returned as float32 (the precision the ONNX emulation runs in).
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"bfp_quantize needs a floating point array, got dtype {x.dtype}")
    if mantissa_bits < 1:
        raise ValueError(f"mantissa_bits must be at least 1, got {mantissa_bits}")
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    if x.ndim == 0:
        raise ValueError("bfp_quantize needs an array with at least one axis, got a scalar")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis {axis} is out of range for an array of {x.ndim} dimensions")
    dtype = np.float64 if x.dtype == np.float64 else np.float32
    e_min, e_max = shared_exponent_range(exponent_bits)
    largest_code = 2**mantissa_bits - 1

    values = np.moveaxis(x.astype(dtype, copy=False), axis, -1)
    length = values.shape[-1]
    padded_length = math.ceil(length / block_size) * block_size
    pad = [(0, 0)] * (values.ndim - 1) + [(0, padded_length - length)]
    blocks = np.pad(values, pad).reshape(*values.shape[:-1], padded_length // block_size, block_size)

    with np.errstate(invalid="ignore"):
        block_max = np.fmax.reduce(np.abs(blocks), axis=-1, keepdims=True)
    fraction_exponent = np.frexp(np.where(np.isfinite(block_max), block_max, 0))[1]
    exponent = np.where(block_max > 0, fraction_exponent - 1, e_min)
    exponent = np.where(np.isinf(block_max), e_max, np.clip(exponent, e_min, e_max))
    step = np.ldexp(np.ones_like(block_max), (exponent - (mantissa_bits - 1)).astype(np.int32))

    codes = np.clip(np.rint(blocks / step), -largest_code, largest_code)
    quantized = (codes * step).reshape(*values.shape[:-1], padded_length)[..., :length]
    return np.ascontiguousarray(np.moveaxis(quantized, -1, axis))
