"""The paths a user would otherwise run, in this process, batch 1, preprocessing included:
the Keras model through TensorFlow, and the ONNX stages through onnxruntime."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from fpgaflow.fpga_runtime.ort import make_session
from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec, preprocess


def tensorflow_request(keras_model, jpeg: bytes, spec: PreprocessSpec) -> Callable[[], np.ndarray]:
    """``tf.function`` of the whole Keras model (traced once for batch 1) on ``preprocess(jpeg)``."""
    import tensorflow as tf

    signature = [tf.TensorSpec((1, spec.crop, spec.crop, 3), tf.float32)]
    inference = tf.function(lambda images: keras_model(images, training=False), input_signature=signature)

    def request() -> np.ndarray:
        return inference(tf.constant(preprocess(jpeg, spec)[None])).numpy()

    return request


def onnxruntime_request(featurizer: Path, head: Path, jpeg: bytes, spec: PreprocessSpec) -> Callable[[], np.ndarray]:
    """The two ONNX stages in plain onnxruntime sessions on ``preprocess(jpeg)``, no server."""
    featurizer_session, head_session = make_session(featurizer), make_session(head)
    feature_input = featurizer_session.get_inputs()[0].name
    feature_output = featurizer_session.get_outputs()[0].name
    head_input = head_session.get_inputs()[0].name

    def request() -> np.ndarray:
        (features,) = featurizer_session.run([feature_output], {feature_input: preprocess(jpeg, spec)[None]})
        return head_session.run(None, {head_input: features})[0]

    return request
