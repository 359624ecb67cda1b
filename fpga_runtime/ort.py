"""The one place onnxruntime sessions are made: CPU stages and the emulated device both use it."""

from __future__ import annotations

from pathlib import Path

import onnxruntime

from fpgaflow.fpga_runtime.errors import InvalidServiceDefinition
from fpgaflow.fpga_runtime.settings import get_settings

CPU_PROVIDERS = ("CPUExecutionProvider",)


def make_session(model: str | Path | bytes, intra_op_threads: int | None = None) -> onnxruntime.InferenceSession:
    """An inference session on the CPU provider with every graph optimisation enabled (threads sleep when idle
    unless the ``ort_allow_spinning`` setting lets them spin).

    ``model`` is an ONNX file path or the serialized model. ``intra_op_threads`` overrides the
    ``ort_intra_op_threads`` setting; 0 lets onnxruntime pick.
    """
    settings = get_settings()
    threads = settings.ort_intra_op_threads if intra_op_threads is None else intra_op_threads
    if threads < 0:
        raise ValueError(f"intra_op_threads must be 0 (automatic) or positive, got {threads}")
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings.ort_allow_spinning else "0")
    source = model if isinstance(model, bytes) else str(model)
    if not isinstance(model, bytes) and not Path(model).is_file():
        raise InvalidServiceDefinition(f"ONNX file {model} does not exist")
    try:
        return onnxruntime.InferenceSession(source, sess_options=options, providers=list(CPU_PROVIDERS))
    except Exception as error:  # onnxruntime raises its own untyped Fail/InvalidGraph errors
        what = "the serialized model" if isinstance(model, bytes) else str(model)
        raise InvalidServiceDefinition(f"onnxruntime cannot load {what}: {error}") from None
