"""Domain exceptions. Code raises these; ``common.grpc_errors`` turns them into gRPC statuses.

Each exception carries an UPPER_SNAKE_CASE ``reason`` (ErrorInfo.reason), optional
``metadata`` (ErrorInfo.metadata) and, for validation errors, field violations. The class
docstring is the default message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# google.rpc.ErrorInfo.reason: UPPER_SNAKE_CASE, at most 63 characters (AIP-193).
REASON_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,61}[A-Z0-9]$")


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
        metadata: Mapping[str, object] | None = None,
        domain: str | None = None,
    ) -> None:
        """``domain`` overrides the ErrorInfo domain (default: the service of the RPC); it is
        set when an error received from another service is passed on unchanged."""
        self.message = message or (self.__class__.__doc__ or self.default_reason).strip()
        self.reason = reason or self.default_reason
        if not REASON_RE.fullmatch(self.reason):
            raise ValueError(f"error reason {self.reason!r} is not UPPER_SNAKE_CASE (max 63 chars)")
        self.metadata = {str(k): str(v) for k, v in (metadata or {}).items()}
        self.domain = domain
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, reason={self.reason!r})"


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
        metadata: Mapping[str, object] | None = None,
        domain: str | None = None,
        violations: Iterable[FieldViolation] = (),
    ) -> None:
        self.violations = tuple(violations)
        if message is None and self.violations:
            message = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(message, reason=reason, metadata=metadata, domain=domain)

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


class RetryLater(DomainError):
    """An error the client should retry after a delay (sent as a google.rpc.RetryInfo)."""

    def __init__(
        self,
        message: str | None = None,
        *,
        reason: str | None = None,
        metadata: Mapping[str, object] | None = None,
        domain: str | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        if retry_after_seconds is not None and not retry_after_seconds >= 0:
            raise ValueError(f"retry_after_seconds must be >= 0, got {retry_after_seconds!r}")
        self.retry_after_seconds = retry_after_seconds
        super().__init__(message, reason=reason, metadata=metadata, domain=domain)


class ResourceExhausted(RetryLater):
    """A limit or quota was reached; retry later."""

    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(RetryLater):
    """A dependency is unavailable; retry later."""

    default_reason = "UNAVAILABLE"

    @classmethod
    def not_deployed(cls, service: str) -> Unavailable:
        """A peer service (full gRPC name) that this deployment does not run."""
        return cls(
            f"{service} is not available in this deployment",
            reason="DEPENDENCY_UNAVAILABLE",
            metadata={"service": service},
        )


class Aborted(DomainError):
    """The operation conflicted with a concurrent one; retry it."""

    default_reason = "ABORTED"


class DataLoss(DomainError):
    """The data does not match what was promised (for example a checksum)."""

    default_reason = "DATA_LOSS"


class Internal(DomainError):
    """The server failed unexpectedly."""

    default_reason = "INTERNAL"
