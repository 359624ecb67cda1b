"""The cluster's fit check reads each FPGA stage's label, as a node does, before placing a service."""

from __future__ import annotations

import pytest
from onnx import helper

from fpgaflow.fpga_runtime.errors import InvalidServiceDefinition, ResourceExhausted
from fpgaflow.fpga_runtime.graph_format import BLOCK_SIZE_METADATA_KEY, FORMAT_METADATA_KEY
from fpgaflow.fpga_runtime.placement.fit import StageFitChecks
from fpgaflow.fpga_runtime.service import load_service


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
        StageFitChecks().check(load_service(directory), directory, str(tiny_profile_path))


def test_the_fit_uses_the_block_size_the_graph_was_prepared_with(graphs, tmp_path, tiny_profile_path):
    # 200 bytes on chip: msfp8 in blocks of 16 takes 158 bytes, in blocks of 1 (an exponent per value) 248.
    profile = tmp_path / "small.yaml"
    profile.write_text(tiny_profile_path.read_text().replace("name: tiny", "name: small").replace(": 500", ": 200"))
    fits = graphs.write_service(tmp_path / "blocks-16", labelled_featurizer(graphs, "msfp8", 16), numeric_format="msfp8")
    StageFitChecks().check(load_service(fits), fits, str(profile))
    too_big = graphs.write_service(tmp_path / "blocks-1", labelled_featurizer(graphs, "msfp8", 1), numeric_format="msfp8")
    with pytest.raises(ResourceExhausted, match="its weights take 248 bytes in msfp8, a device holds 200"):
        StageFitChecks().check(load_service(too_big), too_big, str(profile))
