"""Featurizers: the FPGA stage as a functional Keras model, preprocessed image in, feature vector out.

The same featurizers the original service offered: ResNet-50 and ResNet-152 (2048-d), DenseNet-121
(1024-d) and VGG-16 (the 4096-d fc7 layer; Keras names it ``fc2``). Every model takes the tensor
``input`` [N, S, S, 3] made by :func:`fpgaflow.fpga_runtime.preprocessing.preprocess` with the featurizer's
spec, and returns ``features`` [N, D]. Weights are ``imagenet`` (the keras.applications file, obtained
and verified by :mod:`fpgaflow.tasks.featurizers.weights_store`), ``auto`` (ImageNet when it can be had,
else seeded), ``none`` (seeded random initialisation) or the path of a weights file.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras.src.random import seed_generator as keras_seed_generator
from pydantic import BaseModel, ConfigDict, Field

from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.featurizers.weights_store import WeightsUnavailable, choose_weights, imagenet_file
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings

INPUT = "input"
FEATURES = "features"
NUMERIC_FORMAT = "keras-fp32"

# keras.applications' "caffe" mode (BGR, mean subtracted) and "torch" mode (RGB, mean and std), means given R, G, B.
CAFFE_PREPROCESSING: dict[str, Any] = {"channel_order": "BGR", "mean": (123.68, 116.779, 103.939), "std": (1.0, 1.0, 1.0)}
TORCH_PREPROCESSING: dict[str, Any] = {"channel_order": "RGB", "mean": (123.675, 116.28, 103.53), "std": (58.395, 57.12, 57.375)}
VGG16_IMAGENET_INPUT_SIZE = 224


class UnknownFeaturizer(PipelineStepError):
    """A featurizer name this module does not build."""


@dataclass(frozen=True)
class Architecture:
    """What differs between featurizers, as data: the builder, the feature size, the preprocessing."""

    name: str
    preprocessing: dict
    block_pattern: str  # regex; its first group names the block a layer belongs to (used to unfreeze blocks)
    build: Callable[[keras.KerasTensor, str | None], keras.KerasTensor]  # (input, ImageNet file or None) -> features


def _pooled(application) -> Callable[[keras.KerasTensor, str | None], keras.KerasTensor]:
    def build(inputs: keras.KerasTensor, imagenet_file: str | None) -> keras.KerasTensor:
        base = application(include_top=False, weights=imagenet_file, input_tensor=inputs)
        return keras.layers.GlobalAveragePooling2D(name=FEATURES)(base.output)

    return build


def _vgg16_fc7(inputs: keras.KerasTensor, imagenet_file: str | None) -> keras.KerasTensor:
    """VGG-16 up to fc7; fc6 is sized to the input's last feature map, so any input size works."""
    if imagenet_file is not None:
        full = keras.applications.VGG16(include_top=True, weights=imagenet_file, input_tensor=inputs)
        fc7 = full.get_layer("fc2").output
    else:
        base = keras.applications.VGG16(include_top=False, weights=None, input_tensor=inputs)
        flat = keras.layers.Flatten(name="flatten")(base.output)
        fc6 = keras.layers.Dense(4096, activation="relu", name="fc1")(flat)
        fc7 = keras.layers.Dense(4096, activation="relu", name="fc2")(fc6)
    return keras.layers.Identity(name=FEATURES)(fc7)


ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture(
            "resnet50",
            CAFFE_PREPROCESSING,
            r"^(conv\d_block\d+)_",
            _pooled(keras.applications.ResNet50),
        ),
        Architecture(
            "resnet152",
            CAFFE_PREPROCESSING,
            r"^(conv\d_block\d+)_",
            _pooled(keras.applications.ResNet152),
        ),
        Architecture(
            "densenet121",
            TORCH_PREPROCESSING,
            r"^(conv\d_block\d+|pool\d)_",
            _pooled(keras.applications.DenseNet121),
        ),
        Architecture("vgg16", CAFFE_PREPROCESSING, r"^(block\d|fc\d)", _vgg16_fc7),
    )
}


class FeaturizerInfo(BaseModel):
    """The facts recorded with every featurizer (and saved beside the exported model)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    weights: str = Field(description="'imagenet', 'none' (seeded random init) or the weights file it was loaded from.")
    seed: int
    input_size: int
    feature_dim: int
    parameter_count: int
    mac_count: int = Field(description="Multiply-accumulates per image, summed over the convolution and dense layers.")
    preprocessing: PreprocessSpec
    fingerprint: str = Field(description="sha256 of the format, name, input size and every weight value.")
    fine_tuned: bool = Field(default=False, description="True once 'full' training changed the weights.")


@dataclass
class Featurizer:
    """A Keras featurizer; also a feature extractor (``fingerprint`` + ``__call__``) for featurizing."""

    model: keras.Model
    info: FeaturizerInfo
    _inference: Callable | None = field(default=None, init=False, repr=False)

    @property
    def fingerprint(self) -> str:
        return self.info.fingerprint

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        expected = (self.info.input_size, self.info.input_size, 3)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
            raise ValueError(
                f"featurizer {self.info.name} expects a batch [N, {', '.join(map(str, expected))}], got {batch.shape}"
            )
        if self._inference is None:  # traced once for any batch size (tracing a ResNet costs seconds)
            signature = [tf.TensorSpec((None, *expected), tf.float32)]
            self._inference = tf.function(lambda images: self.model(images, training=False), input_signature=signature)
        return np.asarray(self._inference(np.asarray(batch, dtype=np.float32)), dtype=np.float32)


def architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise UnknownFeaturizer(
            f"unknown featurizer {name!r}: classification featurizers are {', '.join(ARCHITECTURES)}"
            + (" (ssd_vgg is a detector and has its own step)" if name == "ssd_vgg" else "")
        )
    return ARCHITECTURES[name]


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one input: each layer with a kernel does prod(kernel) MACs per output position.

    That is kh*kw*cin*cout per pixel for a convolution and din*dout for a dense layer.
    """
    total = 0
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        positions = int(np.prod(layer.output.shape[1:-1], dtype=np.int64))
        total += positions * int(np.prod(kernel.shape, dtype=np.int64))
    return total


def weights_fingerprint(model: keras.Model, name: str, input_size: int) -> str:
    digest = hashlib.sha256(f"{NUMERIC_FORMAT}|{name}|{input_size}".encode())
    for variable in model.weights:
        digest.update(variable.path.encode())
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(variable)).tobytes())
    return digest.hexdigest()


def describe(
    model: keras.Model, arch: Architecture, weights: str, seed: int, input_size: int, fine_tuned: bool = False
) -> FeaturizerInfo:
    return FeaturizerInfo(
        name=arch.name,
        weights=weights,
        seed=seed,
        input_size=input_size,
        feature_dim=int(model.outputs[0].shape[-1]),
        parameter_count=int(model.count_params()),
        mac_count=count_macs(model),
        preprocessing=PreprocessSpec.for_input_size(input_size, **arch.preprocessing),
        fingerprint=weights_fingerprint(model, arch.name, input_size),
        fine_tuned=fine_tuned,
    )


def check_imagenet_input_size(name: str, input_size: int) -> None:
    """VGG-16's ImageNet fc6 is sized to a 7x7x512 map: its file fits input size 224 only."""
    if name == "vgg16" and input_size != VGG16_IMAGENET_INPUT_SIZE:
        raise WeightsUnavailable(
            f"ImageNet weights for vgg16 fit input size {VGG16_IMAGENET_INPUT_SIZE} only (its fc6 layer is sized to "
            f"a 7x7x512 map), not {input_size}: use input size {VGG16_IMAGENET_INPUT_SIZE}, or weights 'none' or a file"
        )


def _load_weights_file(model: keras.Model, path: Path, arch: Architecture, input_size: int) -> None:
    try:
        model.load_weights(path)
    except (ValueError, KeyError, OSError) as error:
        raise WeightsUnavailable(
            f"weights file {path} does not fit featurizer {arch.name} at input size {input_size}: {error}"
        ) from None


def seed_everything(seed: int) -> None:
    """Seed Python, numpy, TensorFlow and Keras, and make TensorFlow's kernels deterministic, so a
    featurizer built, run and trained with the same seed gives the same numbers in any process.

    Keras draws the seeds of unseeded initializers and dropout layers from the ``random`` module,
    whose state every thread of the process shares (inside a Prefect flow, its API and event
    threads draw from it too). Keras gets a generator of its own, seeded here, so building a model
    draws the same seeds whatever other threads do.
    """
    keras.utils.set_random_seed(seed)
    keras_seed_generator.python_random = random.Random(seed)
    tf.config.experimental.enable_op_determinism()


def build_featurizer(
    name: str, weights: str = "none", input_size: int = 224, seed: int = 0, settings: PipelineSettings | None = None
) -> Featurizer:
    """Build featurizer ``name`` with ``weights`` 'imagenet', 'auto', 'none' (seeded) or a weights file path."""
    arch = architecture(name)
    if input_size < 32:
        raise ValueError(f"input size must be at least 32 pixels (the featurizers downsample 32x), got {input_size}")
    settings = settings or get_pipeline_settings()
    keyword = str(weights).lower()
    if keyword == "auto":
        keyword = choose_weights(keyword, name, settings).used
    if keyword == "imagenet":
        check_imagenet_input_size(name, input_size)
    imagenet_path = imagenet_file(name, settings) if keyword == "imagenet" else None
    weights_file = None if keyword in ("imagenet", "none") else Path(weights).expanduser().resolve()
    if weights_file is not None and not weights_file.is_file():
        raise WeightsUnavailable(
            f"weights file {weights_file} does not exist: weights must be 'imagenet', 'none' or the path of a Keras weights file"
        )
    seed_everything(seed)
    inputs = keras.Input(shape=(input_size, input_size, 3), name=INPUT, dtype="float32")
    features = arch.build(inputs, str(imagenet_path) if imagenet_path else None)
    model = keras.Model(inputs, features, name=f"{arch.name}_featurizer")
    if weights_file is not None:
        _load_weights_file(model, weights_file, arch, input_size)
    source = str(weights_file) if weights_file else keyword
    return Featurizer(model, describe(model, arch, source, seed, input_size))


def layer_blocks(model: keras.Model, name: str) -> list[tuple[str, int]]:
    """The featurizer's blocks in order, each as (block name, index of its first layer in ``model.layers``)."""
    pattern = re.compile(architecture(name).block_pattern)
    blocks: list[tuple[str, int]] = []
    for index, layer in enumerate(model.layers):
        match = pattern.match(layer.name)
        if match and (not blocks or blocks[-1][0] != match.group(1)):
            blocks.append((match.group(1), index))
    return blocks
