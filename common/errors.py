"""Domain exceptions. Code raises these; ``common.grpc_errors`` turns them into gRPC statuses.

Each exception carries an UPPER_SNAKE_CASE ``reason`` (ErrorInfo.reason), optional
``metadata`` (ErrorInfo.metadata) and, for validation errors, field violations. The class
docstring is the default message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar, overload

T = TypeVar("T")
D = TypeVar("D")

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


class Violations:
    """The bad fields of one request, collected in request order and raised together.

    A handler that checks several fields reports every bad one in a single
    INVALID_ARGUMENT, so the caller fixes the request in one round trip::

        found = Violations()
        size = found.check(lambda: validation.page_size(request.page_size), 0)
        if request.permission and not known(request.permission):
            found.add("permission", "is not a known permission")
        found.raise_if_any()

    A validator that raises ``InvalidArgument.field(...)`` at its one field is the
    degenerate case: a handler that checks a single field just lets it propagate (with its
    own reason). Collected violations keep their order; the reasons of the validators that
    ``check`` ran are dropped in favour of the one given to ``raise_if_any``.
    """

    def __init__(self) -> None:
        self._found: list[FieldViolation] = []

    @overload
    def check(self, validate: Callable[[], T]) -> T | None: ...
    @overload
    def check(self, validate: Callable[[], T], default: D) -> T | D: ...
    def check(self, validate: Callable[[], T], default: D | None = None) -> T | D | None:
        """``validate()``'s result; on ``InvalidArgument`` its violations are kept and
        ``default`` is returned (a placeholder: ``raise_if_any`` raises before it is used)."""
        try:
            return validate()
        except InvalidArgument as exc:
            self._found.extend(exc.violations)
            return default

    def add(self, field: str, description: str) -> None:
        self._found.append(FieldViolation(field, description))

    def extend(self, violations: Iterable[FieldViolation]) -> None:
        """Keeps the violations of a validator that returns them instead of raising."""
        self._found.extend(violations)

    def raise_if_any(self, reason: str | None = None, *, limit: int | None = None) -> None:
        """Raises ``InvalidArgument`` with the first ``limit`` (default: all) violations, if any.

        ``reason`` defaults to ``InvalidArgument.default_reason``.
        """
        if self._found:
            raise InvalidArgument(reason=reason, violations=self._found[:limit])

    def __iter__(self) -> Iterator[FieldViolation]:
        return iter(tuple(self._found))

    def __len__(self) -> int:
        return len(self._found)

    def __bool__(self) -> bool:
        return bool(self._found)


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
