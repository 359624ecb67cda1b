"""Nodes of a model split across several devices: each runs one segment and hands its tensors on.

A split service (:mod:`fpgaflow.fpga_runtime.placement.split` plans one) has K > 1 consecutive FPGA stages. Segment k is
FPGA stage k with the CPU stages that follow it up to the next FPGA stage; the first segment also
holds any CPU stages before the first FPGA stage, and the preprocessing. Node k runs segment k on
its own device, then calls node k+1 (``--next``) with its output over the internal
``fpgaflow.cluster.Chain/Run`` method and returns what that node returns: the last segment's
outputs travel back along the chain, like the original FPGAs wired to each other directly.
Node 1 (the entry) answers the public APIs like any node; the others answer ``Chain/Run`` and
health only.

    python -m fpgaflow.fpga_runtime.chain SERVICE_DIR --segment K [--next HOST:PORT] [--host H] [--port N] [--device P]
        [--devices N]

prints ``listening on HOST:PORT`` once its segment is loaded, like ``python -m fpgaflow.fpga_runtime``, then what the
segment runs on (``serving wide v1 in fp32 over 3 × stratix10 ... (segment 2 of 2)``): a segment whose layer is
larger than one device holds its column slices on several devices (``--devices``), as ``fpgaflow serve`` does.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fpgaflow.fpga_runtime import codec
from fpgaflow.fpga_runtime.errors import FpgaflowError, InvalidInput, InvalidServiceDefinition, PredictionError
from fpgaflow.fpga_runtime.executor import CpuStage, ServiceExecutor, StageRunner, TimingObserver, _check_graph_matches
from fpgaflow.fpga_runtime.metrics import ServerMetrics
from fpgaflow.fpga_runtime.placement.segments import segment_count, segments
from fpgaflow.fpga_runtime.preprocessing import DEFAULT_MAX_IMAGE_PIXELS
from fpgaflow.fpga_runtime.profiles import load_profile
from fpgaflow.fpga_runtime.proto import tf_serving_pb2 as pb
from fpgaflow.fpga_runtime.protocol import AUTHORIZATION_METADATA, bearer
from fpgaflow.fpga_runtime.rpc import ApiKeyInterceptor, unary_handler
from fpgaflow.fpga_runtime.serve import _address, positive_count
from fpgaflow.fpga_runtime.server import OVERALL, ModelServer, grpc_options
from fpgaflow.fpga_runtime.service import Stage, load_service
from fpgaflow.fpga_runtime.settings import Settings, get_settings

log = logging.getLogger(__name__)
CHAIN_SERVICE = "fpgaflow.cluster.Chain"
CHAIN_RUN = f"/{CHAIN_SERVICE}/Run"
API = "chain"
NEXT_NODE = "chain"  # timing name of the time a request spends in the rest of the chain


class NextNode:
    """A stage runner standing for the rest of the chain: sends its inputs to the next node, returns the final outputs."""

    timing = NEXT_NODE

    def __init__(self, stage: Stage, address: str, settings: Settings) -> None:
        self.stage = stage
        self.address = address
        self.input_names = tuple(spec.name for spec in stage.inputs)
        self.output_names = tuple(spec.name for spec in stage.outputs)
        self._timeout = settings.cluster_request_timeout_seconds
        keys = settings.server_api_keys
        self._metadata = ((AUTHORIZATION_METADATA, bearer(keys[0])),) if keys else ()
        self._channel = grpc.insecure_channel(address, options=grpc_options(settings.server_max_message_bytes))
        self._call = self._channel.unary_unary(
            CHAIN_RUN, request_serializer=pb.PredictRequest.SerializeToString, response_deserializer=pb.PredictResponse.FromString
        )

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = pb.PredictRequest()
        for name, array in feeds.items():
            request.inputs[name].CopyFrom(codec.numpy_to_tensor_proto(array))
        try:
            response = self._call(request, timeout=self._timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise PredictionError(error.code(), f"next node of the chain ({self.address}): {error.details()}") from None
        return {name: codec.tensor_proto_to_numpy(response.outputs[name], name) for name in self.output_names}

    def close(self) -> None:
        self._channel.close()


class SegmentExecutor(ServiceExecutor):
    """Segment ``segment`` (1-based) of a split service on this node's device, then the next node.

    A segment's FPGA stage too large for one device (a layer cut by output columns) runs on as many devices
    as it needs, at most ``max_devices``, side by side in this node as ``fpgaflow serve`` runs them.

    Behaves as a :class:`ServiceExecutor` of the whole service: ``service`` is the whole service,
    ``predict_encoded``/``predict_preprocessed`` (entry node) and :meth:`run_segment` (other nodes)
    return the last segment's outputs.
    """

    def __init__(
        self,
        service_dir: str | Path,
        segment: int,
        next_address: str | None,
        device_profile: str | Path | None = None,
        *,
        intra_op_threads: int | None = None,
        max_batch_size: int | None = None,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        on_timing: TimingObserver | None = None,
        settings: Settings | None = None,
        max_devices: int | None = None,
    ) -> None:
        settings = settings or get_settings()
        self.directory = Path(service_dir)
        self.service = load_service(self.directory)
        self.max_batch_size = max_batch_size or settings.server_max_batch_size
        self.max_image_pixels = max_image_pixels
        self.on_timing = on_timing
        parts = segments(self.service)
        if not 1 <= segment <= len(parts):
            raise InvalidInput(f"segment {segment} does not exist: service {self.service.name!r} has {len(parts)} segments")
        last = segment == len(parts)
        if last and next_address:
            raise InvalidInput(f"segment {segment} is the last one of {self.service.name!r}: it has no next node")
        if not last and not next_address:
            raise InvalidInput(f"segment {segment} of {len(parts)} needs the address of the node running segment {segment + 1}")
        own = parts[segment - 1]
        if len(own[0].inputs) != 1:
            raise InvalidServiceDefinition(
                f"segment {segment} of {self.service.name!r} must take one tensor, it takes {[t.name for t in own[0].inputs]}"
            )
        self.segment = segment
        self.input_name = own[0].inputs[0].name
        if max_devices is not None and max_devices < 1:
            raise InvalidInput(f"a node needs at least one device, not {max_devices}")
        self.max_devices = max_devices or settings.server_devices
        has_fpga = any(stage.target == "FPGA" for stage in own)
        self.profile = load_profile(device_profile or settings.device_profile) if has_fpga else None
        self.device = None
        self._parts_dir = None
        self.stages: list[StageRunner] = []
        try:
            for stage in own:
                path = self.directory / stage.file
                runner: StageRunner = (
                    self._fpga_stage(stage, path, intra_op_threads)
                    if stage.target == "FPGA"
                    else CpuStage(stage, path, intra_op_threads)
                )
                self.stages.append(runner)
                _check_graph_matches(runner)
            if next_address:  # every segment but the last hands its tensors on
                rest = parts[segment]
                handoff = rest[0].model_copy(
                    update={"name": f"segments {segment + 1}-{len(parts)}", "outputs": self.service.outputs}
                )
                self.stages.append(NextNode(handoff, next_address, settings))
        except BaseException:
            self.close()
            raise

    def run_segment(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The segment's input tensor (sent by the previous node) → the last segment's outputs."""
        if sorted(feeds) != [self.input_name]:
            raise InvalidInput(f"segment {self.segment} takes the one tensor {self.input_name!r}; got {sorted(feeds)}")
        return self._run_stages(np.asarray(feeds[self.input_name]))


class SegmentServer:
    """A node running a segment after the first: ``Chain/Run`` and health on one port."""

    def __init__(self, executor: SegmentExecutor, address: str, settings: Settings) -> None:
        self.executor = executor
        self.metrics = ServerMetrics()
        self.health = health.HealthServicer()
        keys = settings.server_api_keys
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=settings.server_workers, thread_name_prefix="fpgaflow-chain"),
            handlers=[
                grpc.method_handlers_generic_handler(
                    CHAIN_SERVICE,
                    {"Run": unary_handler(API, "Run", self._run, pb.PredictRequest, pb.PredictResponse, self.metrics)},
                )
            ],
            interceptors=[ApiKeyInterceptor(keys)] if keys else None,
            options=grpc_options(settings.server_max_message_bytes),
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        try:
            self.port = self._server.add_insecure_port(address)
        except RuntimeError as error:
            raise FpgaflowError(f"cannot listen on {address}: {error}") from None

    def start(self) -> None:
        self._server.start()
        self.health.set(OVERALL, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float) -> None:
        self.health.enter_graceful_shutdown()
        self._server.stop(grace).wait()
        self.executor.close()

    def _run(self, request: pb.PredictRequest, context: grpc.ServicerContext) -> pb.PredictResponse:
        feeds = {name: codec.tensor_proto_to_numpy(tensor, name) for name, tensor in request.inputs.items()}
        response = pb.PredictResponse()
        for name, array in self.executor.run_segment(feeds).items():
            response.outputs[name].CopyFrom(codec.numpy_to_tensor_proto(array))
        return response


def serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    host = args.host or settings.server_host
    port = settings.server_port if args.port is None else args.port
    stop_requested = threading.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda *_: stop_requested.set())

    stop: Callable[[], object]
    if args.segment == 1:
        server = ModelServer(_address(host, port), settings=settings)
        executor = SegmentExecutor(args.service_dir, 1, args.next, args.device, settings=settings, max_devices=args.devices)
        executor.on_timing = server.metrics.stage_observer(executor.service.name, executor.service.version)
        server.data_plane.attach(executor)
        server.start()
        bound, stop = server.port, lambda: server.stop().wait()
    else:
        executor = SegmentExecutor(
            args.service_dir, args.segment, args.next, args.device, settings=settings, max_devices=args.devices
        )
        segment_server = SegmentServer(executor, _address(host, port), settings)
        segment_server.start()
        bound, stop = segment_server.port, lambda: segment_server.stop(settings.server_shutdown_grace_seconds)
    print(f"listening on {_address(host, bound)}", flush=True)
    print(f"{executor.describe()} (segment {args.segment} of {segment_count(executor.service)})", flush=True)
    stop_requested.wait()
    log.info("stopping segment %d: draining in-flight calls", args.segment)
    stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fpgaflow.fpga_runtime.chain", description=__doc__.splitlines()[0])
    parser.add_argument("service_dir", type=Path, help="The split service directory.")
    parser.add_argument("--segment", type=int, required=True, help="Segment this node runs, 1-based.")
    parser.add_argument("--next", default=None, metavar="HOST:PORT", help="Node running the next segment.")
    parser.add_argument("--host", default=None, help="Interface to bind (default: the server_host setting).")
    parser.add_argument(
        "--port", type=int, default=None, help="gRPC port; 0 picks a free one (default: the server_port setting)."
    )
    parser.add_argument("--device", default=None, help="Device profile name or YAML path (default: the device_profile setting).")
    parser.add_argument(
        "--devices",
        type=positive_count,
        default=None,
        metavar="N",
        help="Most emulated devices the segment may use (default: the server_devices setting, else as many as it needs).",
    )
    args = parser.parse_args(argv)
    try:
        return serve(args)
    except (FpgaflowError, FileNotFoundError) as error:
        print(f"fpgaflow.fpga_runtime.chain: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
