"""Default boxes (priors, anchors) of SSD300, for any number of its feature maps and any input size.

Feature map ``k`` of SSD300 has default boxes of scale ``s_k`` (a fraction of the image side) at
the centre of every cell: one square box of side ``s_k``, one square of side
``sqrt(s_k * s'_k)`` (``s'_k`` the next scale) and, for each aspect ratio ``r`` of the map, a box
``s_k * sqrt(r)`` wide and ``s_k / sqrt(r)`` high and its transpose. SSD300's scales and ratios
(min sizes 30, 60, 111, 162, 213, 264 px, max sizes 60 ... 315 px of a 300 px input) are kept as
fractions, so a smaller input or fewer maps keeps the geometry of the first maps.

Order (it must match the head tensors'): map by map, cells row-major (y, then x), then the boxes of a
cell in the order above. Priors are ``(cy, cx, h, w)``, normalised; centres are ``(i + 0.5) / size``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_FEATURE_MAPS = 6
SSD300_MIN_SCALES = (30 / 300, 60 / 300, 111 / 300, 162 / 300, 213 / 300, 264 / 300)
SSD300_MAX_SCALES = (60 / 300, 111 / 300, 162 / 300, 213 / 300, 264 / 300, 315 / 300)
SSD300_ASPECT_RATIOS: tuple[tuple[float, ...], ...] = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))


@dataclass(frozen=True)
class PriorLayout:
    """The default boxes of one detector: feature-map sizes with their scales and aspect ratios."""

    map_sizes: tuple[int, ...]
    min_scales: tuple[float, ...]
    max_scales: tuple[float, ...]
    aspect_ratios: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        count = len(self.map_sizes)
        if not 1 <= count <= MAX_FEATURE_MAPS:
            raise ValueError(f"a prior layout has 1 to {MAX_FEATURE_MAPS} feature maps, got {count}")
        if not (len(self.min_scales) == len(self.max_scales) == len(self.aspect_ratios) == count):
            raise ValueError("map_sizes, min_scales, max_scales and aspect_ratios must have one entry per feature map")
        if any(size < 1 for size in self.map_sizes):
            raise ValueError(f"feature-map sizes must be at least 1, got {self.map_sizes}")
        if any(ratio <= 0 for ratios in self.aspect_ratios for ratio in ratios):
            raise ValueError(f"aspect ratios must be positive, got {self.aspect_ratios}")

    @classmethod
    def ssd300(cls, map_sizes: tuple[int, ...]) -> PriorLayout:
        """SSD300's scales and aspect ratios for the first ``len(map_sizes)`` maps."""
        count = len(map_sizes)
        return cls(tuple(map_sizes), SSD300_MIN_SCALES[:count], SSD300_MAX_SCALES[:count], SSD300_ASPECT_RATIOS[:count])

    def boxes_per_cell(self, index: int) -> int:
        return 2 + 2 * len(self.aspect_ratios[index])

    @property
    def count(self) -> int:
        return sum(size * size * self.boxes_per_cell(index) for index, size in enumerate(self.map_sizes))

    def priors(self) -> np.ndarray:
        """All default boxes, ``[P, 4]`` float32 ``(cy, cx, h, w)`` in head-tensor order."""
        maps = []
        for index, size in enumerate(self.map_sizes):
            scale, larger = self.min_scales[index], self.max_scales[index]
            shapes = [(scale, scale), (math.sqrt(scale * larger),) * 2]
            for ratio in self.aspect_ratios[index]:
                root = math.sqrt(ratio)
                shapes += [(scale / root, scale * root), (scale * root, scale / root)]  # (h, w): wide, then tall
            centres = (np.arange(size, dtype=np.float64) + 0.5) / size
            cy, cx = np.meshgrid(centres, centres, indexing="ij")
            cells = np.stack([cy.ravel(), cx.ravel()], axis=1)  # row-major cells
            sizes = np.asarray(shapes, dtype=np.float64)
            grid = np.concatenate([np.repeat(cells, len(shapes), axis=0), np.tile(sizes, (len(cells), 1))], axis=1)
            maps.append(grid)
        return np.concatenate(maps).astype(np.float32)
