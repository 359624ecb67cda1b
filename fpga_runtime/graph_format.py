"""The numeric format a graph says it was prepared in, read from its ONNX metadata.

The pipeline labels every featurizer graph it prepares (``fpgaflow.numeric_format`` and, for block
floating point, ``fpgaflow.block_size``). A node reads that label and refuses a service whose
``service.json`` declares another format or block size; a graph without a label (one built by hand)
is taken to be in the format the service declares.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from fpgaflow.fpga_runtime.errors import InvalidServiceDefinition
from fpgaflow.fpga_runtime.numerics import NumericFormat

FORMAT_METADATA_KEY = "fpgaflow.numeric_format"
BLOCK_SIZE_METADATA_KEY = "fpgaflow.block_size"


@dataclass(frozen=True)
class GraphLabel:
    """What a graph's metadata says about its numerics; None where it says nothing."""

    numeric_format: str | None
    block_size: int | None


def label_properties(fmt: NumericFormat) -> dict[str, str]:
    """The metadata entries that label a graph prepared in ``fmt``."""
    properties = {FORMAT_METADATA_KEY: fmt.name}
    if fmt.kind == "block_float":
        properties[BLOCK_SIZE_METADATA_KEY] = str(fmt.block_size)
    return properties


def graph_label(model: onnx.ModelProto) -> GraphLabel:
    properties = {prop.key: prop.value for prop in model.metadata_props}
    block_size = properties.get(BLOCK_SIZE_METADATA_KEY)
    if block_size is not None and not block_size.isdigit():
        raise InvalidServiceDefinition(f"graph metadata {BLOCK_SIZE_METADATA_KEY} must be a positive integer, got {block_size!r}")
    return GraphLabel(properties.get(FORMAT_METADATA_KEY), int(block_size) if block_size is not None else None)


def block_size_in_graph(model: onnx.ModelProto, name: str) -> int | None:
    """The graph's block size when the graph is labelled with format ``name``, else None (the format's default)."""
    label = graph_label(model)
    return label.block_size if label.numeric_format == name else None


def check_declared(model: onnx.ModelProto, what: str, name: str, block_size: int | None = None) -> int | None:
    """Refuse ``what`` (a stage file) when its graph's label contradicts the format or block size service.json
    declares; returns the block size to count the weights with (the graph's, else the declared one)."""
    label = graph_label(model)
    if label.numeric_format is not None and label.numeric_format != name:
        raise InvalidServiceDefinition(
            f"{what}: service.json declares numeric format {name!r} but the graph was prepared in {label.numeric_format!r}"
        )
    if block_size is not None and label.block_size is not None and block_size != label.block_size:
        raise InvalidServiceDefinition(
            f"{what}: service.json declares block size {block_size} for {name} but the graph was prepared with "
            f"block size {label.block_size}"
        )
    return label.block_size if label.block_size is not None else block_size
