"""The one place where domain exceptions become gRPC statuses with google.rpc details.

Every status carries an ``ErrorInfo`` (reason + domain); validation errors add a
``BadRequest``; RESOURCE_EXHAUSTED adds ``RetryInfo``. Unexpected exceptions become
INTERNAL with a correlation id; the traceback goes to the server log only.
"""

from __future__ import annotations

import logging
import uuid

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from common import errors

log = logging.getLogger("mediagrid.errors")

CODES: dict[type[errors.DomainError], grpc.StatusCode] = {
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.DataLoss: grpc.StatusCode.DATA_LOSS,
}


def code_for(exc: errors.DomainError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in CODES:
            return CODES[cls]  # type: ignore[index]
    return grpc.StatusCode.UNKNOWN


def domain_for_method(method: str) -> str:
    """``/mediagrid.users.v1.UserService/GetUser`` -> ``users.mediagrid``."""
    parts = method.lstrip("/").split(".")
    if len(parts) >= 2 and parts[0] == "mediagrid":
        return f"{parts[1]}.mediagrid"
    return "mediagrid"


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def to_status(exc: errors.DomainError, domain: str) -> status_pb2.Status:
    """Build the google.rpc.Status for a domain exception."""
    code = code_for(exc)
    details = [
        _pack(error_details_pb2.ErrorInfo(reason=exc.reason, domain=domain, metadata=exc.metadata))
    ]
    if isinstance(exc, errors.InvalidArgument) and exc.violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in exc.violations
            ]
        )
        details.append(_pack(bad))
    if isinstance(exc, errors.ResourceExhausted) and exc.retry_after_seconds is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(exc.retry_after_seconds * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status_pb2.Status(code=code.value[0], message=exc.message, details=details)


def internal_status(exc: BaseException, method: str) -> status_pb2.Status:
    """INTERNAL with a correlation id; the traceback is logged here, never sent."""
    correlation_id = uuid.uuid4().hex
    log.error(
        "unhandled exception in %s (correlation id %s)",
        method,
        correlation_id,
        exc_info=exc,
        extra={"correlation_id": correlation_id, "method": method},
    )
    info = error_details_pb2.ErrorInfo(
        reason="INTERNAL", domain=domain_for_method(method), metadata={"correlation_id": correlation_id}
    )
    return status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=f"internal error (correlation id {correlation_id})",
        details=[_pack(info)],
    )


def status_for(exc: BaseException, method: str) -> status_pb2.Status:
    if isinstance(exc, errors.DomainError):
        return to_status(exc, domain_for_method(method))
    return internal_status(exc, method)


async def abort(context: grpc.aio.ServicerContext, status: status_pb2.Status) -> None:
    """Abort the call with a rich status (details travel in grpc-status-details-bin)."""
    rich = rpc_status.to_status(status)
    await context.abort(rich.code, rich.details, rich.trailing_metadata)


def error_info(error: grpc.aio.AioRpcError | grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """Client side: the ErrorInfo detail of a failed call, if any."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def bad_request(error: grpc.aio.AioRpcError | grpc.RpcError) -> error_details_pb2.BadRequest | None:
    """Client side: the BadRequest detail of a failed call, if any."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return bad
    return None
