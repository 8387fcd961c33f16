"""Domain exceptions. Code raises these; ``common.grpc_errors`` turns them into gRPC statuses.

Each exception carries an UPPER_SNAKE_CASE ``reason`` (ErrorInfo.reason), optional
``metadata`` (ErrorInfo.metadata) and, for validation errors, field violations. The class
docstring is the default message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request (google.rpc.BadRequest.FieldViolation)."""

    field: str
    description: str


class DomainError(Exception):
    """Something went wrong."""

    default_reason = "ERROR"

    def __init__(
        self,
        message: str | None = None,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.message = message or (self.__class__.__doc__ or self.default_reason).strip()
        self.reason = reason or self.default_reason
        self.metadata = {k: str(v) for k, v in (metadata or {}).items()}
        super().__init__(self.message)


class NotFound(DomainError):
    """The resource does not exist."""

    default_reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    """The resource already exists."""

    default_reason = "ALREADY_EXISTS"


class InvalidArgument(DomainError):
    """The request is invalid."""

    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str | None = None,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        violations: Iterable[FieldViolation] = (),
    ) -> None:
        self.violations = tuple(violations)
        if message is None and self.violations:
            message = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(message, reason=reason, metadata=metadata)

    @classmethod
    def field(cls, field: str, description: str, *, reason: str | None = None) -> InvalidArgument:
        """A validation error about one field."""
        return cls(reason=reason, violations=[FieldViolation(field, description)])


class OutOfRange(InvalidArgument):
    """The request asks for something past the valid range."""

    default_reason = "OUT_OF_RANGE"


class PermissionDenied(DomainError):
    """The caller may not do this."""

    default_reason = "PERMISSION_DENIED"


class Unauthenticated(DomainError):
    """The request has no valid credentials."""

    default_reason = "UNAUTHENTICATED"


class FailedPrecondition(DomainError):
    """The resource is not in a state that allows this."""

    default_reason = "FAILED_PRECONDITION"


class ResourceExhausted(DomainError):
    """A limit or quota was reached; retry later."""

    default_reason = "RESOURCE_EXHAUSTED"

    def __init__(
        self,
        message: str | None = None,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        self.retry_after_seconds = retry_after_seconds
        super().__init__(message, reason=reason, metadata=metadata)


class Unavailable(DomainError):
    """A dependency is unavailable; retry later."""

    default_reason = "UNAVAILABLE"


class Aborted(DomainError):
    """The operation conflicted with a concurrent one; retry it."""

    default_reason = "ABORTED"


class DataLoss(DomainError):
    """The data does not match what was promised (for example a checksum)."""

    default_reason = "DATA_LOSS"
