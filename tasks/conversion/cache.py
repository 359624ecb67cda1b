"""tf2onnx conversions kept under ``<home>/cache/onnx`` (or ``build_cache_dir``), keyed by what the Keras model computes.

Training featurizes through the featurizer's ONNX graph, and the conversion step converts the same
model again from its saved file: the key (architecture, weights, tensor names, opset, tf2onnx
version) is the same for both, so the second one is a file copy and both graphs are byte-identical.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from importlib import metadata
from pathlib import Path

import numpy as np

from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings

CACHE_FORMAT = 1


def keras_model_fingerprint(keras_model) -> str:
    """sha256 of a Keras model's architecture (its JSON) and weights (shapes, dtypes and values)."""
    digest = hashlib.sha256(keras_model.to_json().encode())
    for weight in keras_model.get_weights():
        array = np.ascontiguousarray(weight)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def conversion_key(keras_model, input_name: str, output_name: str, opset: int) -> str:
    text = (
        f"{CACHE_FORMAT}|{metadata.version('tf2onnx')}|{opset}|{input_name}|{output_name}|{keras_model_fingerprint(keras_model)}"
    )
    return hashlib.sha256(text.encode()).hexdigest()


def copy_atomic(source: Path, destination: Path) -> Path:
    """Copy ``source`` to ``destination`` so a reader sees either no file or the whole of it."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        shutil.copyfile(source, temporary)
        os.replace(temporary, destination)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return destination


def onnx_cache_dir(settings: PipelineSettings | None = None) -> Path | None:
    settings = settings or get_pipeline_settings()
    if not settings.onnx_cache:
        return None
    return settings.build_cache / "onnx"
