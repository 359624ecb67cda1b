"""The shape of an SSD-VGG detector, without Keras: feature-map sizes, head tensor names and shapes, its facts.

SSD300 has six feature maps, in order:

====  ==========  ===========================================================  ==============
k     layer       how it is made                                               size at 300
====  ==========  ===========================================================  ==============
0     conv4_3     VGG-16 block 4, L2-normalised per position, learned scale    38
1     fc7         pool5 (3x3, stride 1) → fc6 (3x3, dilation 6) → fc7 (1x1)    19
2     conv8_2     1x1 → 3x3 stride 2                                           10
3     conv9_2     1x1 → 3x3 stride 2                                           5
4     conv10_2    1x1 → 3x3 valid                                              3
5     conv11_2    1x1 → 3x3 valid                                              1
====  ==========  ===========================================================  ==============

Map ``k`` has a box-offset head ``loc_k`` [N, H_k, W_k, A_k * 4] and a class-score head ``conf_k``
[N, H_k, W_k, A_k * (classes + 1)] (logits, background first), ``A_k`` default boxes per cell. A
smaller input has room for fewer maps; ``feature_maps`` keeps the first ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
from fpgaflow.tasks.detection.priors import MAX_FEATURE_MAPS, PriorLayout

NAME = "ssd_vgg"
MAP_LAYERS = ("conv4_3", "fc7", "conv8_2", "conv9_2", "conv10_2", "conv11_2")
POOLS_BEFORE_CONV4_3 = 3
POOLS_BEFORE_FC7 = 4
# (1x1 channels, 3x3 channels, stride, padding) of conv8 .. conv11.
EXTRA_LAYERS: tuple[tuple[int, int, int, str], ...] = (
    (256, 512, 2, "same"),
    (128, 256, 2, "same"),
    (128, 256, 1, "valid"),
    (128, 256, 1, "valid"),
)


def loc_name(index: int) -> str:
    return f"loc_{index}"


def conf_name(index: int) -> str:
    return f"conf_{index}"


def head_names(feature_maps: int) -> tuple[str, ...]:
    """The FPGA stage's output names in order: every ``loc_k``, then every ``conf_k``."""
    return tuple(loc_name(k) for k in range(feature_maps)) + tuple(conf_name(k) for k in range(feature_maps))


def _halved(size: int, times: int) -> int:
    for _ in range(times):  # 2x2 pools with 'same' padding (Caffe's ceil mode): ceil(size / 2)
        size = -(-size // 2)
    return size


def map_sizes(input_size: int) -> tuple[int, ...]:
    """Side of each of the six feature maps for an input side (0 where the input is too small for the map)."""
    size = _halved(input_size, POOLS_BEFORE_FC7)
    sizes = [_halved(input_size, POOLS_BEFORE_CONV4_3), size]
    for _, _, stride, padding in EXTRA_LAYERS:
        size = -(-size // stride) if padding == "same" else max(size - 2, 0)
        sizes.append(size)
    return tuple(sizes)


def usable_feature_maps(input_size: int) -> int:
    """How many of the six maps an input side gives room for (each map at least 1x1)."""
    return sum(1 for size in map_sizes(input_size) if size >= 1)


def check_geometry(input_size: int, feature_maps: int | None) -> int:
    """The number of feature maps to build: ``feature_maps`` if the input has room for it, else a clear error."""
    usable = usable_feature_maps(input_size)
    if feature_maps is None:
        return min(usable, MAX_FEATURE_MAPS)
    if not 1 <= feature_maps <= MAX_FEATURE_MAPS:
        raise ValueError(f"feature_maps must be between 1 and {MAX_FEATURE_MAPS}, got {feature_maps}")
    if feature_maps > usable:
        raise ValueError(
            f"an input of {input_size} px gives feature maps of {list(map_sizes(input_size))} cells ({', '.join(MAP_LAYERS)}): "
            f"{MAP_LAYERS[usable]} would be empty, so at most {usable} feature maps fit; use feature_maps <= {usable} "
            f"or a larger input (300 gives all six)"
        )
    return feature_maps


def prior_layout(input_size: int, feature_maps: int | None = None) -> PriorLayout:
    count = check_geometry(input_size, feature_maps)
    return PriorLayout.ssd300(map_sizes(input_size)[:count])


class DetectorInfo(BaseModel):
    """The facts recorded with every detector (and saved beside the exported model)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = NAME
    weights: str = Field(
        description="'imagenet' (VGG-16 layers), 'none' (seeded random init) or the weights file it was loaded from."
    )
    seed: int
    input_size: int
    feature_maps: int
    width: float = Field(description="Channel multiplier of every convolution; 1.0 = SSD300's channels.")
    num_classes: int = Field(description="Object classes, without the background.")
    map_sizes: tuple[int, ...]
    boxes_per_cell: tuple[int, ...]
    prior_count: int
    head_outputs: tuple[str, ...]
    parameter_count: int
    mac_count: int = Field(description="Multiply-accumulates per image, summed over the convolutions.")
    preprocessing: PreprocessSpec
    fingerprint: str = Field(description="sha256 of the format, name, geometry and every weight value.")
    fine_tuned: bool = Field(default=False, description="True once training changed the weights.")

    @property
    def layout(self) -> PriorLayout:
        return PriorLayout.ssd300(self.map_sizes)


def head_shapes(info: DetectorInfo) -> dict[str, tuple[int, ...]]:
    """Shape of each head tensor for one image: ``(H, W, A * 4)`` and ``(H, W, A * (classes + 1))``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for k, (size, boxes) in enumerate(zip(info.map_sizes, info.boxes_per_cell)):
        shapes[loc_name(k)] = (size, size, boxes * 4)
        shapes[conf_name(k)] = (size, size, boxes * (info.num_classes + 1))
    return shapes


def flatten_heads(
    heads: dict[str, np.ndarray] | Sequence[np.ndarray], feature_maps: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Head tensors (by name, or in output order) → box offsets ``[N, P, 4]`` and class logits ``[N, P, classes + 1]``."""
    if not isinstance(heads, dict):
        heads = dict(zip(head_names(feature_maps), heads))
    count = len(heads[loc_name(0)])
    locs = [np.asarray(heads[loc_name(k)], np.float32).reshape(count, -1, 4) for k in range(feature_maps)]
    confs = [np.asarray(heads[conf_name(k)], np.float32).reshape(count, -1, num_classes + 1) for k in range(feature_maps)]
    return np.concatenate(locs, axis=1), np.concatenate(confs, axis=1)
