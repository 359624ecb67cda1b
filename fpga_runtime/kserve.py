"""KServe v2 / Open Inference Protocol ``GRPCInferenceService`` over the data plane.

Registered under the standard method paths (``/inference.GRPCInferenceService/...``).
ModelInfer takes ``images`` (BYTES ``[N]``) or ``input`` (FP32 ``[N, H, W, 3]``), typed or raw;
with no requested outputs it returns every output of the model (the protocol's rule); outputs
come back raw when the inputs were sent raw. Inputs and requested outputs may also be named by
their tensor names (``Placeholder:0``, ...), and come back under the names they were asked by.
"""

from __future__ import annotations

from importlib import metadata as package_metadata

import grpc

from fpgaflow.fpga_runtime import codec
from fpgaflow.fpga_runtime.dataplane import DataPlane
from fpgaflow.fpga_runtime.metrics import ServerMetrics
from fpgaflow.fpga_runtime.proto import open_inference_pb2 as pb
from fpgaflow.fpga_runtime.protocol import OIP_SERVICE
from fpgaflow.fpga_runtime.rpc import unary_handler

API = "kserve"
SERVER_NAME = "fpgaflow"


def server_version() -> str:
    try:
        return package_metadata.version("fpgaflow")
    except package_metadata.PackageNotFoundError:
        return "unknown"


class InferenceServicer:
    def __init__(self, data_plane: DataPlane) -> None:
        self.data_plane = data_plane

    def server_live(self, request: pb.ServerLiveRequest, context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.data_plane.live())

    def server_ready(self, request: pb.ServerReadyRequest, context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.data_plane.ready())

    def model_ready(self, request: pb.ModelReadyRequest, context) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.data_plane.model_ready(request.name, request.version))

    def server_metadata(self, request: pb.ServerMetadataRequest, context) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=server_version())

    def model_metadata(self, request: pb.ModelMetadataRequest, context) -> pb.ModelMetadataResponse:
        metadata = self.data_plane.metadata(request.name, request.version)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=metadata.name,
            versions=list(metadata.versions),
            platform=metadata.platform,
            inputs=[tensor(name=s.name, datatype=codec.oip_datatype(s.dtype), shape=list(s.shape)) for s in metadata.inputs],
            outputs=[tensor(name=s.name, datatype=codec.oip_datatype(s.dtype), shape=list(s.shape)) for s in metadata.outputs],
        )

    def model_infer(self, request: pb.ModelInferRequest, context) -> pb.ModelInferResponse:
        metadata = self.data_plane.metadata(request.model_name, request.model_version)
        inputs = codec.infer_inputs_to_numpy(request)
        wanted = [output.name for output in request.outputs] or [spec.name for spec in metadata.outputs]
        outputs = self.data_plane.infer(metadata.name, metadata.version, inputs, wanted)
        tensors, raw_contents = codec.numpy_to_infer_outputs(outputs, raw=bool(request.raw_input_contents))
        return pb.ModelInferResponse(
            model_name=metadata.name,
            model_version=metadata.version,
            id=request.id,
            outputs=tensors,
            raw_output_contents=raw_contents,
        )


METHODS = (
    ("ServerLive", "server_live", pb.ServerLiveRequest, pb.ServerLiveResponse),
    ("ServerReady", "server_ready", pb.ServerReadyRequest, pb.ServerReadyResponse),
    ("ModelReady", "model_ready", pb.ModelReadyRequest, pb.ModelReadyResponse),
    ("ServerMetadata", "server_metadata", pb.ServerMetadataRequest, pb.ServerMetadataResponse),
    ("ModelMetadata", "model_metadata", pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    ("ModelInfer", "model_infer", pb.ModelInferRequest, pb.ModelInferResponse),
)


def generic_handler(data_plane: DataPlane, metrics: ServerMetrics) -> grpc.GenericRpcHandler:
    servicer = InferenceServicer(data_plane)
    return grpc.method_handlers_generic_handler(
        OIP_SERVICE,
        {
            method: unary_handler(API, method, getattr(servicer, attribute), request_type, response_type, metrics)
            for method, attribute, request_type, response_type in METHODS
        },
    )
