"""The one place where domain exceptions become gRPC statuses with google.rpc details, and back.

Server side: every status carries an ``ErrorInfo`` (reason + domain); validation errors add
a ``BadRequest``; RESOURCE_EXHAUSTED adds ``RetryInfo``. Unexpected exceptions become
INTERNAL with a correlation id; the traceback goes to the server log only. A lost database
or refused connection that a handler let through is UNAVAILABLE (DATABASE_UNAVAILABLE,
DEPENDENCY_UNAVAILABLE), since retrying later is the right reaction.

Client side: ``from_rpc_error`` turns a failed call back into the domain exception (reason,
metadata, violations, retry delay and domain kept), so a service calling another one can
re-raise what it got; ``error_info``/``bad_request``/``retry_info`` read single details.

The whole status travels in the trailers (``grpc-message`` plus ``grpc-status-details-bin``),
and clients reject trailers over 8 KiB by default; a status that big would reach the client
as RESOURCE_EXHAUSTED without details. So the message is cut and metadata/violations are
kept to a budget (dropping whole entries, flagged ``truncated``) that keeps every status
below that limit: put lists of ids in metadata only when they are short.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2, message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from common import db, errors

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
    errors.Internal: grpc.StatusCode.INTERNAL,
}

# Client side: the exception for each code. Codes without a domain class of their own map
# to the closest one; the original code name becomes the reason when no ErrorInfo came.
EXCEPTIONS: dict[grpc.StatusCode, type[errors.DomainError]] = {
    **{code: cls for cls, code in CODES.items()},
    grpc.StatusCode.UNKNOWN: errors.Internal,
    grpc.StatusCode.UNIMPLEMENTED: errors.Internal,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.Unavailable,
    grpc.StatusCode.CANCELLED: errors.Unavailable,
}

_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}

# Size budget (UTF-8 bytes) of the parts of a status; see the module docstring. The message
# is human text and is cut (marked by …). Metadata values and field paths are data a client
# may parse: they are never cut, an entry that does not fit is left out whole and
# ``metadata["truncated"] = "true"`` says so.
MAX_MESSAGE_BYTES = 1024
MAX_DETAILS_BYTES = 2560  # metadata and violations together
MAX_DESCRIPTION_BYTES = 512  # a violation's description (human text: cut)
TRUNCATED_KEY = "truncated"
_ENTRY_OVERHEAD = 8  # protobuf framing per map entry or violation, roughly
_ELLIPSIS = "…"


def code_for(exc: errors.DomainError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in CODES:
            return CODES[cls]
    # A bare DomainError (or a subclass outside the table) is a server bug, never UNKNOWN.
    return grpc.StatusCode.INTERNAL


def status_code(number: int) -> grpc.StatusCode:
    """The grpc.StatusCode for a google.rpc.Code number (UNKNOWN for numbers gRPC lacks)."""
    return _BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


def domain_for_method(method: str) -> str:
    """``/mediagrid.users.v1.UserService/GetUser`` -> ``users.mediagrid``."""
    parts = method.lstrip("/").split(".")
    if len(parts) >= 2 and parts[0] == "mediagrid" and parts[1]:
        return f"{parts[1]}.mediagrid"
    return "mediagrid"


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes (on a character boundary, marked by …)."""
    data = text.encode()
    if len(data) <= limit:
        return text
    room = max(0, limit - len(_ELLIPSIS.encode()))
    return data[:room].decode(errors="ignore") + _ELLIPSIS


def _pack(detail: message.Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(detail)
    return packed


def _size(*texts: str) -> int:
    return sum(len(text.encode()) for text in texts) + _ENTRY_OVERHEAD


def _bounded_details(
    exc: errors.DomainError,
) -> tuple[dict[str, str], list[error_details_pb2.BadRequest.FieldViolation]]:
    """Metadata and violations that fit ``MAX_DETAILS_BYTES``, in the order given."""
    room = MAX_DETAILS_BYTES - _size(TRUNCATED_KEY, "true")
    dropped = False
    metadata: dict[str, str] = {}
    for key, value in exc.metadata.items():
        if _size(key, value) <= room:
            metadata[key] = value
            room -= _size(key, value)
        else:
            dropped = True
    violations: list[error_details_pb2.BadRequest.FieldViolation] = []
    for violation in getattr(exc, "violations", ()):
        description = truncate(violation.description, MAX_DESCRIPTION_BYTES)
        if _size(violation.field, description) <= room:
            violations.append(
                error_details_pb2.BadRequest.FieldViolation(
                    field=violation.field, description=description
                )
            )
            room -= _size(violation.field, description)
        else:
            dropped = True
    if dropped:
        metadata[TRUNCATED_KEY] = "true"
    return metadata, violations


def to_status(exc: errors.DomainError, domain: str) -> status_pb2.Status:
    """Build the google.rpc.Status for a domain exception (``exc.domain`` wins over ``domain``)."""
    code = code_for(exc)
    metadata, violations = _bounded_details(exc)
    info = error_details_pb2.ErrorInfo(
        reason=exc.reason, domain=exc.domain or domain, metadata=metadata
    )
    details = [_pack(info)]
    if violations:
        details.append(_pack(error_details_pb2.BadRequest(field_violations=violations)))
    if isinstance(exc, errors.RetryLater) and exc.retry_after_seconds is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(round(exc.retry_after_seconds * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status_pb2.Status(
        code=code.value[0], message=truncate(exc.message, MAX_MESSAGE_BYTES), details=details
    )


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
        reason="INTERNAL",
        domain=domain_for_method(method),
        metadata={"correlation_id": correlation_id},
    )
    return status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=f"internal error (correlation id {correlation_id})",
        details=[_pack(info)],
    )


# Infrastructure failures a handler did not translate: the dependency is down, which is
# UNAVAILABLE (retry later) for the client, not a bug in the server (INTERNAL).
DATABASE_DOWN: tuple[type[BaseException], ...] = tuple(
    kind for kind in db.CONNECTION_LOST if kind not in (OSError, TimeoutError, ConnectionError)
)
# How long a client should wait before retrying a call that met a dependency outage.
RETRY_AFTER_OUTAGE_SECONDS = 1.0


def dependency_status(exc: BaseException, method: str) -> status_pb2.Status | None:
    """UNAVAILABLE for a database or connection failure (logged with a correlation id)."""
    if isinstance(exc, DATABASE_DOWN) or db.never_sent(exc):
        reason, what = "DATABASE_UNAVAILABLE", "the database"
    elif isinstance(exc, (ConnectionError, TimeoutError)):
        # A timeout nobody translated is a dependency that did not answer in time (a pool
        # that could not connect, a peer that hung), not a server bug.
        reason, what = "DEPENDENCY_UNAVAILABLE", "a dependency"
    else:
        return None
    correlation_id = uuid.uuid4().hex
    log.warning(
        "%s unavailable in %s (correlation id %s): %s: %s",
        what,
        method,
        correlation_id,
        type(exc).__name__,
        exc,
        exc_info=exc,
        extra={"correlation_id": correlation_id, "method": method},
    )
    unavailable = errors.Unavailable(
        f"{what} is unavailable; retry later (correlation id {correlation_id})",
        reason=reason,
        metadata={"correlation_id": correlation_id},
        retry_after_seconds=RETRY_AFTER_OUTAGE_SECONDS,
    )
    return to_status(unavailable, domain_for_method(method))


def status_for(exc: BaseException, method: str) -> status_pb2.Status:
    if isinstance(exc, errors.DomainError):
        return to_status(exc, domain_for_method(method))
    return dependency_status(exc, method) or internal_status(exc, method)


async def abort(context: grpc.aio.ServicerContext, status: status_pb2.Status) -> None:
    """Abort the call with a rich status (details travel in grpc-status-details-bin)."""
    rich = rpc_status.to_status(status)
    await context.abort(rich.code, rich.details, rich.trailing_metadata)


# --- client side ---------------------------------------------------------------------------


def rich_status(error: grpc.RpcError) -> status_pb2.Status | None:
    """The google.rpc.Status of a failed call, or None when it carried none (or a bad one)."""
    try:
        return rpc_status.from_call(error)
    except ValueError:
        # The code or message of the trailers disagrees with the details: trust neither.
        return None


def _detail(error: grpc.RpcError, kind: type[message.Message]) -> Any:
    return _detail_of(rich_status(error), kind)


def _detail_of(status: status_pb2.Status | None, kind: type[message.Message]) -> Any:
    """The first detail of type ``kind`` in an already parsed status."""
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(kind.DESCRIPTOR):
            unpacked = kind()
            detail.Unpack(unpacked)
            return unpacked
    return None


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """Client side: the ErrorInfo detail of a failed call, if any."""
    return _detail(error, error_details_pb2.ErrorInfo)


def bad_request(error: grpc.RpcError) -> error_details_pb2.BadRequest | None:
    """Client side: the BadRequest detail of a failed call, if any."""
    return _detail(error, error_details_pb2.BadRequest)


def retry_info(error: grpc.RpcError) -> error_details_pb2.RetryInfo | None:
    """Client side: the RetryInfo detail of a failed call, if any."""
    return _detail(error, error_details_pb2.RetryInfo)


def from_rpc_error(error: grpc.RpcError) -> errors.DomainError:
    """The domain exception a failed call stands for (the inverse of ``to_status``).

    Keeps the message, ErrorInfo reason/domain/metadata, BadRequest violations and the
    RetryInfo delay. Without an ErrorInfo (e.g. a connection failure) the reason is the
    status code's name, and without details the message is the class default. Raise the
    result ``from error`` to keep the chain.
    """
    code: grpc.StatusCode = error.code()
    cls = EXCEPTIONS.get(code, errors.Internal)
    text: str = error.details() or ""
    status = rich_status(error)  # parsed once for all the details below
    info: error_details_pb2.ErrorInfo | None = _detail_of(status, error_details_pb2.ErrorInfo)
    kwargs: dict[str, object] = {
        "metadata": dict(info.metadata) if info is not None else {},
        "domain": (info.domain or None) if info is not None else None,
    }
    if issubclass(cls, errors.InvalidArgument):
        bad: error_details_pb2.BadRequest | None = _detail_of(status, error_details_pb2.BadRequest)
        if bad is not None:
            kwargs["violations"] = [
                errors.FieldViolation(v.field, v.description) for v in bad.field_violations
            ]
    if issubclass(cls, errors.RetryLater):
        retry: error_details_pb2.RetryInfo | None = _detail_of(status, error_details_pb2.RetryInfo)
        if retry is not None and retry.HasField("retry_delay"):
            kwargs["retry_after_seconds"] = retry.retry_delay.ToNanoseconds() / 1e9
    exc = cls(text or None, **kwargs)  # type: ignore[arg-type]
    # Set after construction: a foreign server's reason need not follow our naming rule.
    exc.reason = (info.reason if info is not None and info.reason else None) or code.name
    return exc
