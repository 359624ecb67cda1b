"""The tensor names a service answers to besides the plain ones, in the original service's style.

The original's users saved a TensorFlow graph and kept the names it printed: ``input_tensors``
(``Placeholder:0``, the JPEG-bytes placeholder) and ``output_tensors`` (the classifier's softmax,
``classifier/resnet_v1_50/predictions/Softmax:0``, or a list of names for SSD-VGG). Each model
kind names its service the same way, so their client code runs unchanged.
"""

from __future__ import annotations

from fpgaflow.fpga_runtime.protocol import DETECTION_OUTPUTS
from fpgaflow.fpga_runtime.service import TensorNames
from fpgaflow.tasks.conversion.onnx_stages import PROBABILITIES

# The scope of each featurizer's classifier in the original service's graphs.
CLASSIFIER_SCOPES = {"resnet50": "resnet_v1_50", "resnet152": "resnet_v1_152", "densenet121": "densenet121", "vgg16": "vgg_16"}
DETECTOR_SCOPE = "ssd_300_vgg"
# TensorFlow object detection's names for the four detection outputs, in DETECTION_OUTPUTS order.
DETECTION_TENSORS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")


def classifier_tensor_names(featurizer: str) -> TensorNames:
    """``Placeholder:0`` in; ``classifier/<scope>/predictions/Softmax:0`` (the class probabilities) out."""
    scope = CLASSIFIER_SCOPES.get(featurizer, featurizer)
    return TensorNames(outputs={PROBABILITIES: f"classifier/{scope}/predictions/Softmax:0"})


def detector_tensor_names(featurizer: str) -> TensorNames:
    """``Placeholder:0`` in; ``ssd_300_vgg/detection_boxes:0``, ``..._scores:0``, ``..._classes:0``, ``num_detections:0`` out."""
    tensors = zip(DETECTION_OUTPUTS, DETECTION_TENSORS, strict=True)
    return TensorNames(outputs={output: f"{DETECTOR_SCOPE}/{tensor}:0" for output, tensor in tensors})
