"""Feature-map sizes and default boxes of SSD300 and of its smaller variants."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fpgaflow.tasks.detection.geometry import check_geometry, head_names, map_sizes, prior_layout, usable_feature_maps
from fpgaflow.tasks.detection.priors import PriorLayout


def test_ssd300_has_its_six_maps_and_8732_default_boxes():
    layout = prior_layout(300)
    assert layout.map_sizes == (38, 19, 10, 5, 3, 1)
    assert [layout.boxes_per_cell(k) for k in range(6)] == [4, 6, 6, 6, 4, 4]
    assert layout.count == 8732 and layout.priors().shape == (8732, 4)


def test_small_inputs_have_room_for_fewer_maps():
    assert map_sizes(96)[:4] == (12, 6, 3, 2) and usable_feature_maps(96) == 4
    assert check_geometry(96, None) == 4
    with pytest.raises(ValueError, match="conv10_2 would be empty, so at most 4 feature maps fit"):
        check_geometry(96, 5)
    with pytest.raises(ValueError, match="between 1 and 6"):
        check_geometry(300, 7)


def test_head_names_are_every_loc_then_every_conf():
    assert head_names(2) == ("loc_0", "loc_1", "conf_0", "conf_1")


def test_priors_are_in_head_order_cell_by_cell():
    layout = PriorLayout.ssd300((38, 19))
    priors = layout.priors()
    scale, larger = 30 / 300, 60 / 300
    root2 = math.sqrt(2)
    first_cell = np.asarray(
        [
            [0.5 / 38, 0.5 / 38, scale, scale],
            [0.5 / 38, 0.5 / 38, math.sqrt(scale * larger), math.sqrt(scale * larger)],
            [0.5 / 38, 0.5 / 38, scale / root2, scale * root2],
            [0.5 / 38, 0.5 / 38, scale * root2, scale / root2],
        ]
    )
    np.testing.assert_allclose(priors[:4], first_cell, rtol=1e-6)
    np.testing.assert_allclose(priors[4, :2], [0.5 / 38, 1.5 / 38], rtol=1e-6)  # next cell: one step right
    np.testing.assert_allclose(priors[38 * 4, :2], [1.5 / 38, 0.5 / 38], rtol=1e-6)  # next row
    second_map = priors[38 * 38 * 4]
    np.testing.assert_allclose(second_map, [0.5 / 19, 0.5 / 19, 60 / 300, 60 / 300], rtol=1e-6)


def test_a_layout_refuses_inconsistent_lists():
    with pytest.raises(ValueError, match="one entry per feature map"):
        PriorLayout((4, 2), (0.1,), (0.2,), ((2,),))
