"""What this machine can physically do: its CPU, and the measured peak of large fp32 and int8
matrix multiplies, turned into a batch-1 latency floor for a model of known MAC count."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from fpgaflow.fpga_runtime.ort import make_session

ONNX_IR_VERSION = 10  # onnxruntime 1.31 loads IR <= 13; onnx.helper defaults to a newer one
OPSET = 17


@dataclass(frozen=True)
class MachineInfo:
    cpu: str
    cores: int
    simd: tuple[str, ...]
    python: str
    onnxruntime: str
    memory_gib: float

    def describe(self) -> str:
        simd = "/".join(self.simd) or "no AVX"
        return (
            f"{self.cpu}, {self.cores} cores ({simd}), {self.memory_gib:.0f} GiB, "
            f"Python {self.python}, onnxruntime {self.onnxruntime}"
        )

    def to_dict(self) -> dict:
        return asdict(self)


def machine_info() -> MachineInfo:
    import onnxruntime

    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    simd = tuple(name for name in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if name in flags)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return MachineInfo(
        cpu=cpu,
        cores=len(os.sched_getaffinity(0)),
        simd=simd,
        python=platform.python_version(),
        onnxruntime=onnxruntime.__version__,
        memory_gib=memory,
    )


def _matmul_model(size: int, integer: bool) -> bytes:
    if integer:
        rng = np.random.default_rng(0)
        weights = helper.make_tensor(
            "b", TensorProto.INT8, (size, size), rng.integers(-127, 128, (size, size)).astype(np.int8).tobytes(), raw=True
        )
        node = helper.make_node("MatMulInteger", ["a", "b"], ["c"])
        inputs = [helper.make_tensor_value_info("a", TensorProto.UINT8, (size, size))]
        output = helper.make_tensor_value_info("c", TensorProto.INT32, (size, size))
    else:
        rng = np.random.default_rng(0)
        weights = helper.make_tensor(
            "b", TensorProto.FLOAT, (size, size), rng.standard_normal((size, size), np.float32).tobytes(), raw=True
        )
        node = helper.make_node("MatMul", ["a", "b"], ["c"])
        inputs = [helper.make_tensor_value_info("a", TensorProto.FLOAT, (size, size))]
        output = helper.make_tensor_value_info("c", TensorProto.FLOAT, (size, size))
    graph = helper.make_graph([node], "peak", inputs, [output], initializer=[weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = ONNX_IR_VERSION
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _best_seconds(run, repeats: int) -> float:
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


@dataclass(frozen=True)
class PeakCompute:
    """Best rate seen, in 10^9 multiply-accumulates x 2 per second (GFLOP/s for fp32, GOP/s for int8)."""

    fp32_gflops: float
    int8_gops: float
    fp32_source: str
    int8_source: str
    matrix_size: int

    def floor_ms(self, macs: int, integer: bool) -> float:
        """The batch-1 latency a model of ``macs`` multiply-accumulates cannot beat at this peak."""
        rate = self.int8_gops if integer else self.fp32_gflops
        return 2.0 * macs / (rate * 1e9) * 1000.0

    def to_dict(self) -> dict:
        return asdict(self)


def measure_peak(size: int = 1024, repeats: int = 10) -> PeakCompute:
    """Peak of a ``size``-cubed fp32 matrix multiply (numpy and onnxruntime MatMul, best of both) and of
    the same in int8 (onnxruntime MatMulInteger, uint8 x int8 -> int32), on every core."""
    if size < 64:
        raise ValueError(f"a peak needs a matrix of at least 64 x 64, got {size}")
    operations = 2.0 * size**3
    rng = np.random.default_rng(1)
    a32 = rng.standard_normal((size, size), np.float32)
    b32 = rng.standard_normal((size, size), np.float32)
    rates = {"numpy matmul": operations / _best_seconds(lambda: a32 @ b32, repeats) / 1e9}
    session = make_session(_matmul_model(size, integer=False), intra_op_threads=0)
    rates["onnxruntime MatMul"] = operations / _best_seconds(lambda: session.run(None, {"a": a32}), repeats) / 1e9
    fp32_source = max(rates, key=lambda name: rates[name])
    a8 = rng.integers(0, 256, (size, size)).astype(np.uint8)
    integer_session = make_session(_matmul_model(size, integer=True), intra_op_threads=0)
    int8_gops = operations / _best_seconds(lambda: integer_session.run(None, {"a": a8}), repeats) / 1e9
    return PeakCompute(
        fp32_gflops=rates[fp32_source],
        int8_gops=int8_gops,
        fp32_source=fp32_source,
        int8_source="onnxruntime MatMulInteger",
        matrix_size=size,
    )


def best_peak(first: PeakCompute, second: PeakCompute) -> PeakCompute:
    """The higher rate of two measurements of each kind (a peak is the best rate the machine showed)."""
    fp32 = first if first.fp32_gflops >= second.fp32_gflops else second
    int8 = first if first.int8_gops >= second.int8_gops else second
    return PeakCompute(
        fp32_gflops=fp32.fp32_gflops,
        int8_gops=int8.int8_gops,
        fp32_source=fp32.fp32_source,
        int8_source=int8.int8_source,
        matrix_size=first.matrix_size,
    )
