"""TensorFlow Serving ``PredictionService`` (Predict, GetModelMetadata) over the data plane.

Registered under the standard method paths, so official TF Serving clients work unchanged.

- ``model_spec.name``: the model (empty: the only model of the node); ``version`` or
  ``version_label``: the model version (unset: the newest); ``signature_name``: empty or
  ``serving_default``. Anything else → NOT_FOUND.
- Inputs and outputs: see :mod:`fpgaflow.fpga_runtime.protocol` (``images`` DT_STRING ``[N]`` or
  ``input`` DT_FLOAT ``[N, H, W, 3]``; ``output_filter`` empty = the default output, or the four
  detection outputs of a detector). Each may also be named by its tensor name (``Placeholder:0``,
  ...); the response keys are the names the request used.
- GetModelMetadata's ``SignatureDef``: keys are the plain names, each ``TensorInfo.name`` the tensor name.
- GetModelMetadata ``metadata_field``: ``signature_def`` (a ``SignatureDefMap``, the default)
  and ``class_names`` (a DT_STRING ``TensorProto`` of the class names, in index order).
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2

from fpgaflow.fpga_runtime import codec
from fpgaflow.fpga_runtime.dataplane import DataPlane, ModelMetadata
from fpgaflow.fpga_runtime.errors import InvalidInput, ModelNotFound
from fpgaflow.fpga_runtime.metrics import ServerMetrics
from fpgaflow.fpga_runtime.proto import tf_serving_pb2 as pb
from fpgaflow.fpga_runtime.protocol import (
    CLASS_NAMES_FIELD,
    DEFAULT_SIGNATURE,
    PREDICT_METHOD_NAME,
    SIGNATURE_DEF_FIELD,
    SIGNATURE_DEF_MAP_TYPE_URL,
    TENSOR_PROTO_TYPE_URL,
    TF_SERVICE,
)
from fpgaflow.fpga_runtime.rpc import unary_handler

API = "tfserving"
METADATA_FIELDS = (SIGNATURE_DEF_FIELD, CLASS_NAMES_FIELD)


def requested_version(spec: pb.ModelSpec) -> str:
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return str(spec.version.value)
    if choice == "version_label":
        return spec.version_label
    return ""


def _check_signature(spec: pb.ModelSpec) -> None:
    if spec.signature_name not in ("", DEFAULT_SIGNATURE):
        raise ModelNotFound(f"signature {spec.signature_name!r} not found; the only signature is {DEFAULT_SIGNATURE!r}")


def _response_spec(metadata: ModelMetadata) -> pb.ModelSpec:
    spec = pb.ModelSpec(name=metadata.name, signature_name=DEFAULT_SIGNATURE)
    if metadata.version.isdigit():
        spec.version.value = int(metadata.version)
    else:
        spec.version_label = metadata.version
    return spec


def _tensor_info(name: str, dtype: str, shape) -> pb.TensorInfo:
    return pb.TensorInfo(name=name, dtype=codec.tf_dtype(dtype), tensor_shape=codec.tf_shape(shape))


def signature_def_map(metadata: ModelMetadata) -> pb.SignatureDefMap:
    signature = pb.SignatureDef(method_name=PREDICT_METHOD_NAME)
    for spec in metadata.inputs:
        signature.inputs[spec.name].CopyFrom(_tensor_info(metadata.input_tensor_names[spec.name], spec.dtype, spec.shape))
    for spec in metadata.outputs:
        signature.outputs[spec.name].CopyFrom(_tensor_info(metadata.output_tensor_names[spec.name], spec.dtype, spec.shape))
    signatures = pb.SignatureDefMap()
    signatures.signature_def[DEFAULT_SIGNATURE].CopyFrom(signature)
    return signatures


class TfServingServicer:
    def __init__(self, data_plane: DataPlane) -> None:
        self.data_plane = data_plane

    def predict(self, request: pb.PredictRequest, context: grpc.ServicerContext) -> pb.PredictResponse:
        spec = request.model_spec
        _check_signature(spec)
        version = requested_version(spec)
        metadata = self.data_plane.metadata(spec.name, version)
        inputs = {name: codec.tensor_proto_to_numpy(tensor, name) for name, tensor in request.inputs.items()}
        outputs = self.data_plane.infer(metadata.name, metadata.version, inputs, list(request.output_filter))
        response = pb.PredictResponse(model_spec=_response_spec(metadata))
        for name, array in outputs.items():
            response.outputs[name].CopyFrom(codec.numpy_to_tensor_proto(array))
        return response

    def get_model_metadata(
        self, request: pb.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> pb.GetModelMetadataResponse:
        spec = request.model_spec
        _check_signature(spec)
        fields = list(request.metadata_field) or [SIGNATURE_DEF_FIELD]
        unknown = [name for name in fields if name not in METADATA_FIELDS]
        if unknown:
            raise InvalidInput(f"unknown metadata_field {unknown}; supported: {list(METADATA_FIELDS)}")
        metadata = self.data_plane.metadata(spec.name, requested_version(spec))
        response = pb.GetModelMetadataResponse(model_spec=_response_spec(metadata))
        if SIGNATURE_DEF_FIELD in fields:
            packed = signature_def_map(metadata).SerializeToString()
            response.metadata[SIGNATURE_DEF_FIELD].CopyFrom(any_pb2.Any(type_url=SIGNATURE_DEF_MAP_TYPE_URL, value=packed))
        if CLASS_NAMES_FIELD in fields:
            names = codec.numpy_to_tensor_proto([name.encode("utf-8") for name in metadata.class_names]).SerializeToString()
            response.metadata[CLASS_NAMES_FIELD].CopyFrom(any_pb2.Any(type_url=TENSOR_PROTO_TYPE_URL, value=names))
        return response


def generic_handler(data_plane: DataPlane, metrics: ServerMetrics) -> grpc.GenericRpcHandler:
    servicer = TfServingServicer(data_plane)
    return grpc.method_handlers_generic_handler(
        TF_SERVICE,
        {
            "Predict": unary_handler(API, "Predict", servicer.predict, pb.PredictRequest, pb.PredictResponse, metrics),
            "GetModelMetadata": unary_handler(
                API,
                "GetModelMetadata",
                servicer.get_model_metadata,
                pb.GetModelMetadataRequest,
                pb.GetModelMetadataResponse,
                metrics,
            ),
        },
    )
