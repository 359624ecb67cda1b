"""The one error hierarchy of fpgaflow's serving side.

Every domain error carries the gRPC status it maps to; the protocol adapters translate an
exception into a status with :func:`status_for` and never send a stack trace to a client.
"""

from __future__ import annotations

import grpc


class FpgaflowError(Exception):
    """Base class: an error whose message is safe to show to a client."""

    status: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidInput(FpgaflowError):
    """Malformed tensor, undecodable image, wrong dtype or shape, bad name."""

    status = grpc.StatusCode.INVALID_ARGUMENT


class ModelNotFound(FpgaflowError):
    """Unknown model name, version or signature."""

    status = grpc.StatusCode.NOT_FOUND


class ModelNotReady(FpgaflowError):
    """The model exists but is not loaded (yet), or no replica is healthy."""

    status = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(FpgaflowError):
    """Missing or wrong API key."""

    status = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(FpgaflowError):
    """A device or a cluster has no room for what was asked."""

    status = grpc.StatusCode.RESOURCE_EXHAUSTED


class InvalidServiceDefinition(FpgaflowError):
    """A service directory that does not match the documented schema."""

    status = grpc.StatusCode.FAILED_PRECONDITION


class PredictionError(FpgaflowError):
    """A call to a model server failed; ``status`` is the gRPC status the server (or the channel) gave."""

    def __init__(self, status: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{status.name}: {message}")
        self.status = status
        self.details = message


class UpstreamError(FpgaflowError):
    """A node, or the cluster gateway, answered a forwarded call with an error: passed on with its status and message."""

    def __init__(self, status: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.status = status


def status_for(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status and client-safe detail for any exception."""
    if isinstance(error, FpgaflowError):
        return error.status, str(error)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(error).__name__}); see the server log"
