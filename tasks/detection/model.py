"""SSD300 on a VGG-16 backbone as one functional Keras model: the detector's FPGA stage.

``input`` [N, S, S, 3] (preprocessed: plain resize to S x S, VGG's BGR mean subtraction) → the head
tensors ``loc_0 .. loc_{m-1}, conf_0 .. conf_{m-1}`` of the ``m`` feature maps
(:mod:`fpgaflow.tasks.detection.geometry`): 6 + 6 at SSD300's full size, like the original service's SSD-VGG.

The VGG-16 is SSD's variant: ceil-mode pools ('same' padding), pool5 3x3 with stride 1, fc6 a 3x3
convolution with dilation 6 and fc7 a 1x1 convolution; conv4_3 is L2-normalised per position and
multiplied by a learned per-channel scale (initially 20). VGG layers keep keras.applications' names
(``block4_conv3`` ...), so ImageNet VGG-16 weights load into them. ``width`` scales every layer's
channels (1.0 = SSD300's), for small, fast detectors.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
from fpgaflow.tasks.detection.geometry import (
    EXTRA_LAYERS,
    NAME,
    DetectorInfo,
    check_geometry,
    conf_name,
    loc_name,
    prior_layout,
)
from fpgaflow.tasks.detection.priors import PriorLayout
from fpgaflow.tasks.featurizers.catalog import (
    CAFFE_PREPROCESSING,
    INPUT,
    count_macs,
    seed_everything,
)
from fpgaflow.tasks.featurizers.weights_store import WeightsUnavailable, choose_weights, imagenet_file
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings

DEFAULT_INPUT_SIZE = 300
NUMERIC_FORMAT = "keras-fp32"
L2_NORM_INITIAL_SCALE = 20.0
HEAD_INITIAL_STDDEV = 0.01
VGG_BLOCKS: tuple[tuple[int, int], ...] = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))  # (channels, convolutions)
FC_CHANNELS = 1024
FC6_DILATION = 6
# The layers of the VGG-16 backbone (frozen in 'head' training): block1 .. block5 convolutions.
BACKBONE_PREFIX = "block"


@dataclass
class Detector:
    """The Keras SSD model (the FPGA stage) and its facts."""

    model: keras.Model
    info: DetectorInfo

    @property
    def layout(self) -> PriorLayout:
        return self.info.layout

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Head tensors of a preprocessed batch, by name (inference mode)."""
        outputs = self.model(np.asarray(batch, dtype=np.float32), training=False)
        return {name: np.asarray(value, dtype=np.float32) for name, value in zip(self.info.head_outputs, outputs)}


def preprocessing(input_size: int) -> PreprocessSpec:
    """SSD's preprocessing: stretch to S x S (no crop), VGG's BGR mean subtraction."""
    return PreprocessSpec(resize="stretch", resize_to=input_size, crop=input_size, **CAFFE_PREPROCESSING)


def _channels(count: int, width: float) -> int:
    return max(1, round(count * width))


def _conv(filters: int, kernel: int, name: str, **options) -> keras.layers.Conv2D:
    """A ReLU convolution with Keras' default (Glorot) initialisation, as keras.applications' VGG-16 has."""
    padding = options.pop("padding", "same")
    return keras.layers.Conv2D(filters, kernel, padding=padding, activation="relu", name=name, **options)


def _head(filters: int, name: str) -> keras.layers.Conv2D:
    """A box or class head with small initial weights: an untrained detector starts near uniform class scores and
    zero offsets instead of confident noise (on the sample digits this trained to a several times higher mAP
    in the same epochs than Glorot-initialised heads)."""
    return keras.layers.Conv2D(
        filters, 3, padding="same", name=name, kernel_initializer=keras.initializers.RandomNormal(stddev=HEAD_INITIAL_STDDEV)
    )


def _feature_maps(inputs: keras.KerasTensor, width: float, count: int) -> list[keras.KerasTensor]:
    """VGG-16 (SSD's variant) and the extra layers; the first ``count`` feature maps."""
    x = inputs
    maps = []
    for block, (channels, convolutions) in enumerate(VGG_BLOCKS, start=1):
        for index in range(1, convolutions + 1):
            x = _conv(_channels(channels, width), 3, f"block{block}_conv{index}")(x)
        if block == 4:
            normalised = keras.layers.UnitNormalization(axis=-1, name="conv4_3_norm")(x)
            scale = keras.initializers.Constant(L2_NORM_INITIAL_SCALE)
            maps.append(
                keras.layers.DepthwiseConv2D(1, use_bias=False, depthwise_initializer=scale, name="conv4_3_norm_scale")(
                    normalised
                )
            )
            if count == 1:
                return maps
        if block < 5:
            x = keras.layers.MaxPooling2D(2, 2, padding="same", name=f"block{block}_pool")(x)
    x = keras.layers.MaxPooling2D(3, 1, padding="same", name="pool5")(x)
    x = _conv(_channels(FC_CHANNELS, width), 3, "fc6", dilation_rate=FC6_DILATION)(x)
    x = _conv(_channels(FC_CHANNELS, width), 1, "fc7")(x)
    maps.append(x)
    for number, (squeeze, expand, stride, padding) in enumerate(EXTRA_LAYERS[: count - 2], start=8):
        x = _conv(_channels(squeeze, width), 1, f"conv{number}_1")(x)
        x = _conv(_channels(expand, width), 3, f"conv{number}_2", strides=stride, padding=padding)(x)
        maps.append(x)
    return maps


def build_ssd_model(input_size: int, num_classes: int, feature_maps: int | None = None, width: float = 1.0) -> keras.Model:
    """The functional SSD model.

    Its weights are random; call :func:`fpgaflow.tasks.featurizers.catalog.seed_everything` first for repeatable ones.
    """
    count = check_geometry(input_size, feature_maps)
    if num_classes < 1:
        raise ValueError(f"a detector needs at least one object class, got {num_classes}")
    if not 0 < width <= 4:
        raise ValueError(f"width must be in (0, 4], got {width}")
    layout = prior_layout(input_size, count)
    inputs = keras.Input(shape=(input_size, input_size, 3), name=INPUT, dtype="float32")
    locs, confs = [], []
    for k, feature_map in enumerate(_feature_maps(inputs, width, count)):
        boxes = layout.boxes_per_cell(k)
        locs.append(_head(boxes * 4, loc_name(k))(feature_map))
        confs.append(_head(boxes * (num_classes + 1), conf_name(k))(feature_map))
    return keras.Model(inputs, locs + confs, name=f"{NAME}_detector")


def backbone_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The VGG-16 convolutions (``block1_conv1`` .. ``block5_conv3``), in order."""
    return [layer for layer in model.layers if layer.name.startswith(BACKBONE_PREFIX) and layer.weights]


def weights_fingerprint(model: keras.Model, input_size: int, feature_maps: int, width: float) -> str:
    digest = hashlib.sha256(f"{NUMERIC_FORMAT}|{NAME}|{input_size}|{feature_maps}|{width}".encode())
    for variable in model.weights:
        digest.update(variable.path.encode())
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(variable)).tobytes())
    return digest.hexdigest()


def describe(model: keras.Model, weights: str, seed: int, width: float, fine_tuned: bool = False) -> DetectorInfo:
    input_size = int(model.inputs[0].shape[1])
    feature_maps = len(model.outputs) // 2
    layout = prior_layout(input_size, feature_maps)
    classes = int(model.get_layer(conf_name(0)).output.shape[-1]) // layout.boxes_per_cell(0) - 1
    return DetectorInfo(
        weights=weights,
        seed=seed,
        input_size=input_size,
        feature_maps=feature_maps,
        width=width,
        num_classes=classes,
        map_sizes=layout.map_sizes,
        boxes_per_cell=tuple(layout.boxes_per_cell(k) for k in range(feature_maps)),
        prior_count=layout.count,
        head_outputs=tuple(model.output_names),
        parameter_count=int(model.count_params()),
        mac_count=count_macs(model),
        preprocessing=preprocessing(input_size),
        fingerprint=weights_fingerprint(model, input_size, feature_maps, width),
        fine_tuned=fine_tuned,
    )


def load_imagenet_vgg16(model: keras.Model, width: float, settings: PipelineSettings) -> None:
    """Copy the ImageNet VGG-16 convolutions (keras.applications' notop file) into the backbone."""
    if width != 1.0:
        raise WeightsUnavailable(
            f"ImageNet VGG-16 weights fit width 1.0 only, not {width}: use width 1.0, or weights 'none' or a file"
        )
    path = imagenet_file("ssd_vgg", settings)
    try:
        reference = keras.applications.VGG16(include_top=False, weights=str(path))
    except (ValueError, OSError) as error:
        raise WeightsUnavailable(f"cannot read ImageNet VGG-16 weights from {path}: {error}") from None
    for layer in backbone_layers(model):
        layer.set_weights(reference.get_layer(layer.name).get_weights())


def build_detector(
    num_classes: int,
    weights: str = "none",
    input_size: int = DEFAULT_INPUT_SIZE,
    seed: int = 0,
    feature_maps: int | None = None,
    width: float = 1.0,
    settings: PipelineSettings | None = None,
) -> Detector:
    """Build the SSD-VGG detector for ``num_classes`` object classes.

    ``weights``: 'imagenet' (VGG-16 convolutions from the ImageNet file; the SSD layers seeded),
    'none' (everything seeded) or the path of a ``.weights.h5`` file saved from a detector of the same geometry.
    """
    settings = settings or get_pipeline_settings()
    keyword = str(weights).lower()
    if keyword == "auto":
        keyword = choose_weights(keyword, "ssd_vgg", settings).used
    weights_file = None if keyword in ("imagenet", "none") else Path(weights).expanduser().resolve()
    if weights_file is not None and not weights_file.is_file():
        raise WeightsUnavailable(
            f"weights file {weights_file} does not exist: weights must be 'imagenet', 'none' or the path of a Keras weights file"
        )
    seed_everything(seed)
    model = build_ssd_model(input_size, num_classes, feature_maps, width)
    if keyword == "imagenet":
        load_imagenet_vgg16(model, width, settings)
    elif weights_file is not None:
        try:
            model.load_weights(weights_file)
        except (ValueError, KeyError, OSError) as error:
            raise WeightsUnavailable(
                f"weights file {weights_file} does not fit this detector ({input_size} px, "
                f"{len(model.outputs) // 2} maps, width {width}, {num_classes} classes): {error}"
            ) from None
    source = str(weights_file) if weights_file else keyword
    return Detector(model, describe(model, source, seed, width))
