"""Names on the wire, shared by the servers and the client (no heavy imports here).

Inputs a model accepts (one of the two per request):

- ``images``: encoded images (JPEG, PNG, BMP), a 1-D batch of byte strings ``[N]``
  (TF Serving DT_STRING, Open Inference Protocol BYTES);
- ``input``: float32 ``[N, H, W, 3]`` already preprocessed with the service's preprocessing.

Outputs: the last stage's outputs as ``service.json`` names them (a request that names none gets
the default output, the class probabilities ``[N, classes]`` of a classifier) and, for
classification services, ``classes`` (int64 ``[N]``, top-1 index) and ``class_names``
(string ``[N]``, top-1 name).

A detection service (``task: detection``) returns the four detection outputs, all of them when a
request names none: ``boxes`` (float32 ``[N, K, 4]``, ``[ymin, xmin, ymax, xmax]`` normalised to
the image, 0..1), ``scores`` (float32 ``[N, K]``, best first), ``classes`` (int64 ``[N, K]``, index
into the class names) and ``num_detections`` (int64 ``[N]``); entries past ``num_detections`` are
padding (score 0, box 0, class -1).

Tensor names: every input and output also answers to a TensorFlow-style tensor name (``op:0``),
the names the original service's users passed as ``input_tensors`` and ``output_tensors``. The
service definition records them (``tensor_names``); ``images`` is ``Placeholder:0`` and an output
it names no tensor for is ``<output>:0``.
"""

IMAGES_INPUT = "images"
PREPROCESSED_INPUT = "input"
ENCODED_INPUT_TENSOR = "Placeholder:0"  # the JPEG-bytes placeholder of the original quick start
TENSOR_INDEX_SUFFIX = ":0"
CLASSES_OUTPUT = "classes"
CLASS_NAMES_OUTPUT = "class_names"
BOXES_OUTPUT = "boxes"
SCORES_OUTPUT = "scores"
NUM_DETECTIONS_OUTPUT = "num_detections"
DETECTION_OUTPUTS = (BOXES_OUTPUT, SCORES_OUTPUT, CLASSES_OUTPUT, NUM_DETECTIONS_OUTPUT)

# TensorFlow Serving PredictionService.
TF_SERVICE = "tensorflow.serving.PredictionService"
TF_PREDICT = f"/{TF_SERVICE}/Predict"
TF_GET_MODEL_METADATA = f"/{TF_SERVICE}/GetModelMetadata"
DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD_NAME = "tensorflow/serving/predict"
# GetModelMetadata metadata_field values: TF Serving's own, and ours (a DT_STRING TensorProto).
SIGNATURE_DEF_FIELD = "signature_def"
CLASS_NAMES_FIELD = "class_names"
# Type URLs official clients unpack (the messages' names in TensorFlow's packages).
SIGNATURE_DEF_MAP_TYPE_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"
TENSOR_PROTO_TYPE_URL = "type.googleapis.com/tensorflow.TensorProto"

# KServe v2 / Open Inference Protocol.
OIP_SERVICE = "inference.GRPCInferenceService"


def oip_method(method: str) -> str:
    return f"/{OIP_SERVICE}/{method}"


# gRPC health checking.
HEALTH_SERVICE = "grpc.health.v1.Health"
AUTHORIZATION_METADATA = "authorization"


def bearer(token: str) -> str:
    return f"Bearer {token}"
