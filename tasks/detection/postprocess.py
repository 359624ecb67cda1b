"""The detector's CPU stage as an ONNX graph: head tensors in, boxes, scores, classes and counts out.

Built with ``onnx.helper`` (no TensorFlow in it, so a node runs it in onnxruntime) and equal to the
numpy reference :func:`fpgaflow.tasks.detection.detect.detect`, whose docstring gives the rules and the outputs.
The priors are a constant of the graph. Steps:

- each ``loc_k`` [N, H, W, A*4] / ``conf_k`` [N, H, W, A*(C+1)] is reshaped to [N, H*W*A, 4 / C+1]
  and the maps concatenated in order → offsets [N, P, 4], logits [N, P, C+1]; softmax;
- offsets are decoded against the priors (variances 0.1 / 0.2) and clipped to [0, 1];
- ``NonMaxSuppression`` per class (background excluded) → selected (image, class, prior) triples;
  their scores are scattered into a zero [N, C, P] tensor, flattened, and ``TopK`` picks the best
  ``K``; class = index // P, prior = index % P; entries with score 0 are padding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fpgaflow.tasks.config import DetectionConfig
from fpgaflow.tasks.detection.boxes import CENTRE_VARIANCE, SIZE_VARIANCE
from fpgaflow.tasks.detection.detect import BOXES, CLASSES, NUM_DETECTIONS, PADDING_CLASS, SCORES
from fpgaflow.tasks.detection.geometry import DetectorInfo, conf_name, head_shapes, loc_name

OPSET = 17
IR_VERSION = 10  # onnxruntime 1.31 loads IR <= 13; onnx.helper's default is newer
GRAPH_NAME = "ssd_postprocess"
BATCH = "batch"


class _Graph:
    """Collects nodes and constants; names every intermediate tensor after what it holds."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def constant(self, name: str, value, dtype=np.float32) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str, **attributes) -> str:
        return self.multi_output_op(op_type, inputs, [output], **attributes)[0]

    def multi_output_op(self, op_type: str, inputs: list[str], outputs: list[str], **attributes) -> list[str]:
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=outputs[0], **attributes))
        return outputs


def postprocess_model(info: DetectorInfo, config: DetectionConfig) -> onnx.ModelProto:
    """The CPU-stage graph of a detector: its head tensors (names and shapes from ``info``) → the detections."""
    shapes = head_shapes(info)
    priors = info.layout.priors()
    prior_count, classes = len(priors), info.num_classes
    keep = min(config.max_detections, classes * prior_count)
    g = _Graph()

    locs, confs = [], []
    loc_shape = g.constant("loc_shape", [0, -1, 4], np.int64)
    conf_shape = g.constant("conf_shape", [0, -1, classes + 1], np.int64)
    for k in range(info.feature_maps):
        locs.append(g.op("Reshape", [loc_name(k), loc_shape], f"{loc_name(k)}_flat"))
        confs.append(g.op("Reshape", [conf_name(k), conf_shape], f"{conf_name(k)}_flat"))
    offsets = g.op("Concat", locs, "offsets", axis=1) if len(locs) > 1 else locs[0]
    logits = g.op("Concat", confs, "logits", axis=1) if len(confs) > 1 else confs[0]
    probabilities = g.op("Softmax", [logits], "probabilities", axis=-1)

    # Decode: centre = prior centre + t * 0.1 * prior size; size = prior size * exp(t * 0.2).
    centre_offsets = g.op(
        "Slice",
        [offsets, g.constant("c0", [0], np.int64), g.constant("c2", [2], np.int64), g.constant("axis2", [2], np.int64)],
        "centre_offsets",
    )
    size_offsets = g.op("Slice", [offsets, "c2", g.constant("c4", [4], np.int64), "axis2"], "size_offsets")
    prior_centres = g.constant("prior_centres", priors[None, :, :2])
    prior_sizes = g.constant("prior_sizes", priors[None, :, 2:])
    shift = g.op(
        "Mul",
        [g.op("Mul", [centre_offsets, g.constant("centre_variance", CENTRE_VARIANCE)], "centre_scaled"), prior_sizes],
        "centre_shift",
    )
    centres = g.op("Add", [prior_centres, shift], "centres")
    growth = g.op("Exp", [g.op("Mul", [size_offsets, g.constant("size_variance", SIZE_VARIANCE)], "size_scaled")], "size_growth")
    half_sizes = g.op("Mul", [g.op("Mul", [prior_sizes, growth], "sizes"), g.constant("half", 0.5)], "half_sizes")
    corners = g.op(
        "Concat",
        [g.op("Sub", [centres, half_sizes], "top_left"), g.op("Add", [centres, half_sizes], "bottom_right")],
        "corners",
        axis=2,
    )
    boxes_all = g.op("Clip", [corners, g.constant("zero", 0.0), g.constant("one", 1.0)], "decoded_boxes")

    # Per-class NMS on [N, C, P] scores without the background column.
    object_probabilities = g.op(
        "Slice",
        [probabilities, g.constant("c1", [1], np.int64), g.constant("c_end", [classes + 1], np.int64), "axis2"],
        "object_probabilities",
    )
    class_scores = g.op("Transpose", [object_probabilities], "class_scores", perm=[0, 2, 1])
    selected = g.op(
        "NonMaxSuppression",
        [
            boxes_all,
            class_scores,
            g.constant("max_per_class", [config.max_per_class], np.int64),
            g.constant("iou_threshold", [config.iou_threshold]),
            g.constant("score_threshold", [config.score_threshold]),
        ],
        "selected",
    )
    selected_scores = g.op("GatherND", [class_scores, selected], "selected_scores")
    blank = g.op(
        "ConstantOfShape",
        [g.op("Shape", [class_scores], "class_scores_shape")],
        "blank_scores",
        value=helper.make_tensor("zero_value", TensorProto.FLOAT, [1], [0.0]),
    )
    kept = g.op("ScatterND", [blank, selected, selected_scores], "kept_scores")
    flat = g.op("Reshape", [kept, g.constant("flat_shape", [0, classes * prior_count], np.int64)], "kept_flat")
    top_scores, top_indices = g.multi_output_op(
        "TopK", [flat, g.constant("keep", [keep], np.int64)], ["top_scores", "top_indices"], axis=-1, largest=1, sorted=1
    )

    valid = g.op("Greater", [top_scores, "zero"], "valid")
    prior_count_constant = g.constant("prior_count", prior_count, np.int64)
    top_classes = g.op("Div", [top_indices, prior_count_constant], "top_classes")
    top_priors = g.op("Mod", [top_indices, prior_count_constant], "top_priors")
    gather_index = g.op(
        "Expand",
        [
            g.op("Unsqueeze", [top_priors, g.constant("last_axis", [2], np.int64)], "top_priors_3d"),
            g.op("Concat", [g.op("Shape", [top_priors], "top_shape"), g.constant("four", [4], np.int64)], "gather_shape", axis=0),
        ],
        "gather_index",
    )
    top_boxes = g.op("GatherElements", [boxes_all, gather_index], "top_boxes", axis=1)
    valid_3d = g.op("Unsqueeze", [valid, "last_axis"], "valid_3d")
    g.op("Where", [valid_3d, top_boxes, "zero"], BOXES)
    g.op("Identity", [top_scores], SCORES)
    g.op("Where", [valid, top_classes, g.constant("padding_class", PADDING_CLASS, np.int64)], CLASSES)
    g.op(
        "ReduceSum",
        [g.op("Cast", [valid], "valid_count", to=TensorProto.INT64), g.constant("axis1", [1], np.int64)],
        NUM_DETECTIONS,
        keepdims=0,
    )

    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [BATCH, *shapes[name]]) for name in info.head_outputs]
    outputs = [
        helper.make_tensor_value_info(BOXES, TensorProto.FLOAT, [BATCH, keep, 4]),
        helper.make_tensor_value_info(SCORES, TensorProto.FLOAT, [BATCH, keep]),
        helper.make_tensor_value_info(CLASSES, TensorProto.INT64, [BATCH, keep]),
        helper.make_tensor_value_info(NUM_DETECTIONS, TensorProto.INT64, [BATCH]),
    ]
    graph = helper.make_graph(g.nodes, GRAPH_NAME, inputs, outputs, initializer=g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="fpgaflow")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def write_postprocess(info: DetectorInfo, config: DetectionConfig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(postprocess_model(info, config), path)
    return path
