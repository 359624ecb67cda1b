"""The numpy block floating point reference against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fpgaflow.fpga_runtime.numerics import (
    FORMATS,
    bfp_max_magnitude,
    bfp_quantize,
    numeric_format,
    shared_exponent_range,
)

MSFP8, MSFP9 = 2, 3  # mantissa bits


def quantize(values, mantissa_bits, block_size=4, axis=-1):
    return bfp_quantize(np.asarray(values, dtype=np.float32), mantissa_bits, block_size=block_size, axis=axis)


def same_bits(actual: np.ndarray, expected) -> bool:
    expected = np.asarray(expected, dtype=actual.dtype)
    return actual.shape == expected.shape and np.array_equal(actual.view(np.uint32), expected.view(np.uint32))


def test_shared_exponent_of_five_bits_spans_minus_15_to_16():
    assert shared_exponent_range(5) == (-15, 16)
    assert bfp_max_magnitude(MSFP8) == 3 * 2.0**15 == 98304
    assert bfp_max_magnitude(MSFP9) == 7 * 2.0**14 == 114688


def test_all_zero_block_stays_zero_and_keeps_sign_bits():
    result = quantize([0.0, -0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0], MSFP9)
    assert same_bits(result, [0.0, -0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0])


def test_mixed_magnitudes_share_the_exponent_of_the_largest():
    # max 3.0 -> E = 1, step 2**(1 - 2) = 0.5: 0.7 -> 1.4 -> 1, -0.3 -> -0.6 -> -1, 0.1 -> 0.2 -> 0
    assert same_bits(quantize([3.0, 0.7, -0.3, 0.1], MSFP9), [3.0, 0.5, -0.5, 0.0])


def test_tiny_value_beside_a_large_one_flushes_to_zero_but_survives_alone():
    # msfp8, block max 1.0: step 0.5, so 2**-4 is below half a step
    assert same_bits(quantize([1.0, 2.0**-4, 0.0, 0.0], MSFP8), [1.0, 0.0, 0.0, 0.0])
    assert same_bits(quantize([1.0, 0.0, 0.0, 0.0, 2.0**-4, 0.0, 0.0, 0.0], MSFP8), [1.0, 0, 0, 0, 2.0**-4, 0, 0, 0])


def test_values_below_the_smallest_exponent_use_its_step():
    # E clamps to -15: msfp8 step 2**-16; 2**-16 is one step, 2**-18 a quarter step, 3 * 2**-17 one and a half (tie to even: 2)
    result = quantize([2.0**-16, 2.0**-18, 3 * 2.0**-17, 1e-30], MSFP8)
    assert same_bits(result, [2.0**-16, 0.0, 2.0**-15, 0.0])


def test_float32_denormals_flush_to_zero():
    denormal = np.float32(1e-40)
    assert same_bits(quantize([denormal, -denormal, 0.0, 0.0], MSFP9), [0.0, -0.0, 0.0, 0.0])


def test_ties_round_to_even():
    # max 1.25 -> E = 0, msfp8 step 0.5: 2.5 -> 2, 0.5 -> 0, 1.5 -> 2, -0.5 -> -0
    assert same_bits(quantize([1.25, 0.25, 0.75, -0.25], MSFP8), [1.0, 0.0, 1.0, -0.0])
    # msfp9 step 0.25 with max 1.0: 0.375 -> 1.5 -> 2, 0.625 -> 2.5 -> 2, -0.875 -> -3.5 -> -4
    assert same_bits(quantize([1.0, 0.375, 0.625, -0.875], MSFP9), [1.0, 0.5, 0.5, -1.0])


def test_largest_value_saturates_at_the_top_mantissa_code():
    # 1.9 / 0.5 = 3.8 rounds to 4, one past the largest msfp8 code 3
    assert same_bits(quantize([1.9, -1.9, 1.0, 0.0], MSFP8), [1.5, -1.5, 1.0, 0.0])
    # beyond E_max: the step stays 2**15 and the code saturates
    assert same_bits(quantize([1e6, -1e6, 5e4, 1.0], MSFP8), [98304.0, -98304.0, 65536.0, 0.0])


def test_negative_values_mirror_positive_ones():
    rng = np.random.default_rng(3)
    values = rng.normal(0, 10, (8, 48)).astype(np.float32)
    assert np.array_equal(quantize(-values, MSFP9, 16), -quantize(values, MSFP9, 16))


def test_short_last_block_is_quantized_on_its_own():
    # blocks [8, 1, 1, 1] (step 4) and [0.3] (E = -2, step 0.125: 2.4 -> 2)
    assert same_bits(quantize([8.0, 1.0, 1.0, 1.0, 0.3], MSFP8), [8.0, 0.0, 0.0, 0.0, 0.25])
    assert same_bits(quantize([6.0, 0.3], MSFP8, block_size=16), [6.0, 0.0])  # one block shorter than 16


def test_blocks_run_along_the_requested_axis():
    rng = np.random.default_rng(4)
    values = rng.normal(0, 1, (20, 3, 5)).astype(np.float32)
    along_first = bfp_quantize(values, MSFP9, block_size=8, axis=0)
    along_last = bfp_quantize(np.moveaxis(values, 0, -1), MSFP9, block_size=8, axis=-1)
    assert np.array_equal(along_first, np.moveaxis(along_last, -1, 0))


def test_nan_stays_in_place_and_does_not_set_the_exponent():
    result = quantize([np.nan, 1.0, 0.3, 0.1, np.nan, np.nan, np.nan, np.nan], MSFP8)
    assert np.isnan(result[0]) and np.all(np.isnan(result[4:]))
    assert same_bits(result[1:4], [1.0, 0.5, 0.0])


def test_infinities_take_the_largest_exponent_and_saturate():
    result = quantize([np.inf, 1.0, -np.inf, 5e4], MSFP8)
    assert same_bits(result, [98304.0, 0.0, -98304.0, 65536.0])


def test_dtypes():
    assert bfp_quantize(np.ones(4, np.float64), MSFP8).dtype == np.float64
    assert bfp_quantize(np.ones(4, np.float16), MSFP8).dtype == np.float32
    with pytest.raises(TypeError, match="floating point"):
        bfp_quantize(np.ones(4, np.int32), MSFP8)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mantissa_bits": 0}, "mantissa_bits"),
        ({"block_size": 0}, "block_size"),
        ({"axis": 2}, "axis 2"),
        ({"exponent_bits": 1}, "exponent_bits"),
    ],
)
def test_bad_parameters_are_named(kwargs, message):
    arguments = {"mantissa_bits": MSFP8, **kwargs}
    with pytest.raises(ValueError, match=message):
        bfp_quantize(np.ones((2, 4), np.float32), **arguments)


finite_floats = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    values=arrays(np.float32, st.integers(1, 40), elements=finite_floats),
    mantissa_bits=st.sampled_from([2, 3]),
    block_size=st.sampled_from([1, 4, 16]),
)
def test_quantizing_twice_changes_nothing_and_stays_in_range(values, mantissa_bits, block_size):
    once = bfp_quantize(values, mantissa_bits, block_size=block_size)
    assert np.array_equal(bfp_quantize(once, mantissa_bits, block_size=block_size), once)
    assert np.all(np.abs(once) <= bfp_max_magnitude(mantissa_bits))
    assert np.all(np.sign(once) * np.sign(values) >= 0)


def test_descriptors():
    assert set(FORMATS) == {"fp32", "int8", "msfp8", "msfp9"}
    assert numeric_format("msfp8").bits_per_weight == 1 + 2 + 5 / 16
    assert numeric_format("msfp9", block_size=32).bits_per_weight == 1 + 3 + 5 / 32
    assert numeric_format("int8").bits_per_weight == 8
    assert numeric_format("fp32", block_size=8).bits_per_weight == 32
    with pytest.raises(ValueError, match="known formats: fp32, int8, msfp8, msfp9"):
        numeric_format("fp16")
    with pytest.raises(ValueError, match="block floating point only"):
        FORMATS["int8"].with_block_size(8)
    with pytest.raises(ValueError, match="block_size"):
        numeric_format("msfp9", block_size=0)
