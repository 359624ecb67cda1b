"""The cluster's device count of each segment reads each FPGA stage's label, as a node does, before placing a service."""

from __future__ import annotations

import pytest
from onnx import helper

from fpgaflow.fpga_runtime.errors import InvalidServiceDefinition, ResourceExhausted
from fpgaflow.fpga_runtime.graph_format import BLOCK_SIZE_METADATA_KEY, FORMAT_METADATA_KEY
from fpgaflow.fpga_runtime.placement.fit import SegmentDevices
from fpgaflow.fpga_runtime.service import load_service
from fpgaflow.tasks.deployment.split import fit_to_device
from fpgaflow.tasks.settings import PipelineSettings


def labelled_featurizer(graphs, numeric_format: str, block_size: int | None = None):
    model = graphs.conv_relu_pool(channels=8)
    properties = {FORMAT_METADATA_KEY: numeric_format}
    if block_size is not None:
        properties[BLOCK_SIZE_METADATA_KEY] = str(block_size)
    helper.set_model_props(model, properties)
    return model


def test_a_service_whose_graph_says_another_format_is_refused_naming_both(graphs, tmp_path, tiny_profile_path):
    directory = graphs.write_service(tmp_path / "service", labelled_featurizer(graphs, "int8"), numeric_format="msfp8")
    with pytest.raises(InvalidServiceDefinition, match="declares numeric format 'msfp8' but the graph was prepared in 'int8'"):
        SegmentDevices().per_segment(load_service(directory), directory, str(tiny_profile_path))


def test_the_fit_uses_the_block_size_the_graph_was_prepared_with(graphs, tmp_path, tiny_profile_path):
    # 200 bytes on chip: msfp8 in blocks of 16 takes 158 bytes, in blocks of 1 (an exponent per value) 248.
    profile = tmp_path / "small.yaml"
    profile.write_text(tiny_profile_path.read_text().replace("name: tiny", "name: small").replace(": 500", ": 200"))
    fits = graphs.write_service(tmp_path / "blocks-16", labelled_featurizer(graphs, "msfp8", 16), numeric_format="msfp8")
    assert SegmentDevices().per_segment(load_service(fits), fits, str(profile)) == (1,)
    too_big = graphs.write_service(tmp_path / "blocks-1", labelled_featurizer(graphs, "msfp8", 1), numeric_format="msfp8")
    with pytest.raises(ResourceExhausted, match="its weights take 248 bytes in msfp8, a device holds 200"):
        SegmentDevices().per_segment(load_service(too_big), too_big, str(profile))


def test_a_stage_that_is_one_layer_larger_than_a_device_takes_the_devices_of_its_column_slices(
    graphs, tmp_path, tiny_profile_path
):
    # One Conv 3 -> 8 over the whole 16 x 16 image: 6,144 fp32 weights, 3,072 bytes per output channel; a device of
    # 10,000 bytes holds three channels, so the layer is cut over three devices that one node holds.
    profile = tmp_path / "small.yaml"
    profile.write_text(tiny_profile_path.read_text().replace("name: tiny", "name: small").replace(": 500", ": 10000"))
    wide = graphs.make_model(
        [helper.make_node("Conv", ["x", "w", "b"], ["features"], name="wide")],
        [("x", ["N", 3, 16, 16])],
        [("features", ["N", 8, 1, 1])],
        {"w": graphs.random(8, 3, 16, 16), "b": graphs.random(8, seed=1)},
    )
    directory = graphs.write_service(tmp_path / "wide", wide)
    assert SegmentDevices().per_segment(load_service(directory), directory, str(profile)) == (3,)
    fit = fit_to_device(directory, profile, PipelineSettings(home=tmp_path / "home"))  # the deploy step leaves it whole
    assert (fit.service_dir, fit.parts, fit.devices, fit.split) == (directory.resolve(), 1, 3, False)


def test_a_stage_that_would_have_to_be_cut_between_layers_is_left_to_the_deploy_step(graphs, tmp_path, tiny_profile_path):
    # The fp32 conv (896 bytes) is cut over two 500-byte devices, and its pooling is a part after it: two parts.
    directory = graphs.write_service(tmp_path / "service", graphs.conv_relu_pool(channels=8))
    with pytest.raises(
        ResourceExhausted, match=r"does not fit one tiny device: its weights take 896 bytes in fp32.*fpgaflow deploy"
    ):
        SegmentDevices().per_segment(load_service(directory), directory, str(tiny_profile_path))
