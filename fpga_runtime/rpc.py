"""gRPC plumbing shared by the protocol adapters: one exception → status mapping, API keys.

The adapters register their handlers with ``grpc.method_handlers_generic_handler`` under the
standard service names, which is how messages of our own proto packages answer the TF Serving
and Open Inference Protocol method paths.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from fpgaflow.fpga_runtime.errors import FpgaflowError, InvalidInput, status_for
from fpgaflow.fpga_runtime.metrics import ServerMetrics
from fpgaflow.fpga_runtime.protocol import AUTHORIZATION_METADATA, HEALTH_SERVICE, bearer

log = logging.getLogger(__name__)
Behaviour = Callable[[Any, grpc.ServicerContext], object]


@dataclass(frozen=True)
class _Undecodable:
    """What the deserializer hands on when the request bytes are not the expected message."""

    problem: str


def unary_handler(
    api: str, method: str, behaviour: Behaviour, request_type, response_type, metrics: ServerMetrics
) -> grpc.RpcMethodHandler:
    """A unary-unary handler that turns any exception into a clean status and counts every call.

    The client gets the error's status and message (:func:`fpgaflow.fpga_runtime.errors.status_for`),
    never a stack trace; unexpected errors are logged here with theirs. The server goes on.
    """

    def deserialize(data: bytes):
        try:
            return request_type.FromString(data)
        except DecodeError as error:
            return _Undecodable(f"the request is not a valid {request_type.DESCRIPTOR.name}: {error}")

    def handle(request, context: grpc.ServicerContext):
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            if isinstance(request, _Undecodable):
                raise InvalidInput(request.problem)
            return behaviour(request, context)
        except Exception as error:  # the one place every failure of a call becomes a status
            code, detail = status_for(error)
            if not isinstance(error, FpgaflowError):
                log.exception("%s/%s failed unexpectedly", api, method)
            elif code is grpc.StatusCode.INTERNAL:
                log.error("%s/%s failed: %s", api, method, detail)
            context.abort(code, detail)
        finally:
            metrics.record_call(api, method, code, time.perf_counter() - started)

    return grpc.unary_unary_rpc_method_handler(
        handle, request_deserializer=deserialize, response_serializer=response_type.SerializeToString
    )


class ApiKeyInterceptor(grpc.ServerInterceptor):
    """Requires ``authorization: Bearer <key>`` with one of ``keys`` on every call but health checks.

    :meth:`replace` swaps the accepted keys while calls go on (key rotation); no keys = every call
    is let through. Keys never appear in a status message or a log line.
    """

    def __init__(self, keys: Sequence[str]) -> None:
        self._accepted = frozenset(bearer(key) for key in keys)

    @property
    def key_count(self) -> int:
        return len(self._accepted)

    def replace(self, keys: Sequence[str]) -> None:
        self._accepted = frozenset(bearer(key) for key in keys)  # one assignment: calls see the old or the new set

    def intercept_service(self, continuation, handler_call_details):
        accepted = self._accepted
        if not accepted or handler_call_details.method.startswith(f"/{HEALTH_SERVICE}/"):
            return continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        given = metadata.get(AUTHORIZATION_METADATA)
        if given in accepted:
            return continuation(handler_call_details)
        detail = "missing 'authorization: Bearer <key>' metadata" if given is None else "the API key is not valid"

        def refuse(request, context: grpc.ServicerContext):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, detail)

        return grpc.unary_unary_rpc_method_handler(refuse)
