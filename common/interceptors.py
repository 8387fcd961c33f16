"""The suite's server interceptor: request id, authentication, error mapping, access log.

It wraps each RPC behaviour (all four cardinalities) so that the work happens inside the
handler's task: context variables set here are visible to the handler, and exceptions
raised by the handler (or while it streams) are mapped by ``common.grpc_errors``.

Responses are serialized and requests parsed inside the wrapper (streamed requests through
a wrapped request iterator and ``context.read()``), so a handler that returns the wrong
type, or a client that sends bytes that do not parse, ends in a mapped status (INTERNAL
with a correlation id; INVALID_ARGUMENT/MALFORMED_REQUEST) instead of gRPC's UNKNOWN with a
Python error text or an INTERNAL with a traceback in the log. Every parsed request then goes
through the input hygiene layer (``common.hygiene``: NUL characters, out-of-range Timestamps
and Durations, NaN/Infinity, deep Structs) before the handler sees it.

Streaming handlers written in the ``context.write`` style (grpc.health.v1 Watch) are turned
into async generators, so every streaming handler looks the same to the interceptors outside
this one (OpenTelemetry's).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import re
import time
import uuid
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Iterable,
)
from typing import TYPE_CHECKING, Any, Protocol

import grpc

from common import deadlines, grpc_errors, hygiene
from common.context import Principal, current_principal_var, request_id_var
from common.errors import FieldViolation, InvalidArgument, Unauthenticated
from common.rpc_metrics import RpcMetrics, rpc_metrics
from common.wire_format import invalid_utf8_field

if TYPE_CHECKING:
    from common.tls import CertificateAuthenticator

log = logging.getLogger("mediagrid.access")

# Infrastructure services every caller may use without a token.
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# Probes call health checks every few seconds; like a service's ``quiet_methods``, their
# successful calls are logged at DEBUG.
QUIET_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})

# A caller-supplied request id is logged verbatim, so only a safe shape is accepted.
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:/-]{1,128}$")
# RFC 6750 b64token.
_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")


class Authenticator(Protocol):
    """Turns a bearer token into a principal or raises ``Unauthenticated``."""

    async def authenticate(self, token: str) -> Principal: ...


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of an ``authorization: Bearer <token>`` header.

    None when there is no authorization header; "" when there is one but it is not exactly
    one ``Bearer`` (any case) followed by one RFC 6750 token, or when it is repeated.
    """
    values = [_text(value) for key, value in (metadata or ()) if key.lower() == "authorization"]
    if not values:
        return None
    if len(values) > 1:
        return ""
    parts = values[0].split()
    if len(parts) != 2 or parts[0].lower() != "bearer" or not _TOKEN_RE.fullmatch(parts[1]):
        return ""
    return parts[1]


# Generated request ids: 64 random bits per process, then a counter. Unique across processes
# and replicas like a uuid4 (32 hex digits), without reading the OS's random source per call;
# a request id correlates log lines and guards nothing.
_REQUEST_ID_PREFIX = uuid.uuid4().hex[:16]
_request_ids = itertools.count()


def new_request_id() -> str:
    return f"{_REQUEST_ID_PREFIX}{next(_request_ids) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


def request_id_from(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The caller's ``x-request-id`` when it has a safe shape, otherwise a new one."""
    for key, value in metadata or ():
        if key.lower() == "x-request-id":
            text = _text(value).strip()
            if _REQUEST_ID_RE.fullmatch(text):
                return text
            break
    return new_request_id()


def outgoing_metadata(*, forward_token: bool = True) -> tuple[tuple[str, str], ...]:
    """Metadata for a call to another service made while serving one.

    Carries the current request id (so both services log the same one) and, when
    ``forward_token`` is true and there is a caller, that caller's bearer token (the other
    service then checks the caller's own permissions). Pass ``forward_token=False`` for calls
    the service makes with its own authority and add its own token.
    """
    metadata: list[tuple[str, str]] = []
    request_id = request_id_var.get()
    if request_id:
        metadata.append(("x-request-id", request_id))
    principal = current_principal_var.get()
    if forward_token and principal is not None and principal.token:
        metadata.append(("authorization", f"Bearer {principal.token}"))
    return tuple(metadata)


# How long a failing client-streaming call keeps reading (and dropping) what the client is
# still sending before it sends the status. Without it a client whose send races the
# server's early status (say UNAUTHENTICATED on the first message of an upload) sees
# INTERNAL "Internal error from Core" instead of the real status.
ERROR_DRAIN_SECONDS = 2.0


async def _drain_requests(requests: Any, budget: float) -> None:
    """Read and drop the rest of a request stream, for at most ``budget`` seconds."""
    if budget <= 0 or not hasattr(requests, "__aiter__"):
        return
    with contextlib.suppress(Exception):
        async with asyncio.timeout(budget):
            async for _ in requests:
                pass


class SuiteInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Request id, optional authentication, status mapping and one access-log line per call."""

    def __init__(
        self,
        *,
        authenticator: Authenticator | None = None,
        public_methods: Collection[str] = (),
        error_drain_seconds: float = ERROR_DRAIN_SECONDS,
    ) -> None:
        self.authenticator = authenticator
        # Maps a verified client certificate to a principal when a call carries no token.
        self.certificates: CertificateAuthenticator | None = None
        self.public_methods = frozenset(public_methods)
        self.quiet_methods = QUIET_METHODS
        self.error_drain_seconds = error_drain_seconds
        # method -> (the handler gRPC found, its wrapper): wrapping is per method, not per call.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def _needs_auth(self, method: str) -> bool:
        if self.authenticator is None or method in self.public_methods:
            return False
        return not method.startswith(OPEN_SERVICES)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:  # gRPC answers UNIMPLEMENTED; still one access-log line
            log.info(
                "%s %s",
                details.method,
                grpc.StatusCode.UNIMPLEMENTED.name,
                extra={
                    "method": details.method,
                    "status": grpc.StatusCode.UNIMPLEMENTED.name,
                    "duration_ms": 0.0,
                    "request_id": request_id_from(details.invocation_metadata),
                    "principal": None,
                },
            )
            return None
        cached = self._wrapped.get(details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = _wrap(handler, self, details.method)
        if len(self._wrapped) >= _MAX_WRAPPED:  # handlers made per call would grow it forever
            self._wrapped.clear()
        self._wrapped[details.method] = (handler, wrapped)
        return wrapped


_MAX_WRAPPED = 4096


class _Call:
    """Per-call state shared by the wrappers below."""

    __slots__ = ("attributes", "code", "interceptor", "metadata", "method", "metrics", "started")

    def __init__(
        self,
        interceptor: SuiteInterceptor,
        method: str,
        context: grpc.aio.ServicerContext,
        attributes: dict[str, str],
    ) -> None:
        self.interceptor = interceptor
        self.method = method
        self.metadata = tuple(context.invocation_metadata() or ())
        self.started = time.perf_counter()
        self.code = grpc.StatusCode.OK
        self.metrics = rpc_metrics()
        self.attributes = attributes
        self.metrics.active.add(1, attributes)

    async def enter(self, context: grpc.aio.ServicerContext) -> None:
        self.started = time.perf_counter()
        # Outgoing calls made for this RPC are bounded by what is left of its deadline.
        deadlines.set_incoming(context.time_remaining())
        request_id_var.set(request_id_from(self.metadata))
        current_principal_var.set(None)
        if not self.interceptor._needs_auth(self.method):
            return
        token = bearer_token(self.metadata)
        if token is None and self.interceptor.certificates is not None:
            principal = await self.interceptor.certificates.authenticate(context.auth_context())
            if principal is not None:
                current_principal_var.set(principal)
                return
        if token is None:
            raise Unauthenticated(
                "missing 'authorization: Bearer <token>' header", reason="MISSING_TOKEN"
            )
        if token == "":
            raise Unauthenticated(
                "malformed authorization header; expected one 'Bearer <token>'",
                reason="MALFORMED_TOKEN",
            )
        assert self.interceptor.authenticator is not None
        principal = await self.interceptor.authenticator.authenticate(token)
        current_principal_var.set(principal.model_copy(update={"token": token}))

    async def fail(self, exc: BaseException, context: grpc.aio.ServicerContext) -> None:
        status = grpc_errors.status_for(exc, self.method)
        self.code = grpc_errors.status_code(status.code)
        await grpc_errors.abort(context, status)

    def finish(self, context: grpc.aio.ServicerContext) -> None:
        # context.code() reports what abort()/set_code() set (grpc.aio >= 1.38); None if unset.
        code = context.code()
        if isinstance(code, grpc.StatusCode):
            self.code = code
        elif self.code == grpc.StatusCode.OK and context.cancelled():
            self.code = grpc.StatusCode.CANCELLED  # the client went away mid-call
        duration_ms = (time.perf_counter() - self.started) * 1000
        self.metrics.active.add(-1, self.attributes)
        self.metrics.duration.record(
            duration_ms, {**self.attributes, "rpc.grpc.status_code": self.code.value[0]}
        )
        level = logging.INFO
        if self.code == grpc.StatusCode.OK and self.method in self.interceptor.quiet_methods:
            level = logging.DEBUG
        if not log.isEnabledFor(level):
            return  # the line's fields are built only for a log that takes it
        principal = current_principal_var.get()
        log.log(
            level,
            "%s %s %.1fms",
            self.method,
            self.code.name,
            duration_ms,
            extra={
                "method": self.method,
                "status": self.code.name,
                "duration_ms": round(duration_ms, 3),
                "request_id": request_id_var.get(),
                "principal": principal.name if principal else None,
            },
        )


def _parse(deserialize: Callable[[bytes], Any] | None, raw: Any) -> Any:
    """The request parsed and through the input hygiene layer (``common.hygiene``)."""
    if deserialize is None:
        return raw
    try:
        request = deserialize(raw)
    except Exception as exc:
        raise _unparsable(deserialize, raw) from exc
    hygiene.check_request(request)
    return request


def _unparsable(deserialize: Callable[[bytes], Any], raw: Any) -> InvalidArgument:
    """Why a request did not parse: a Struct nested too deep for the parser, or the field
    with invalid UTF-8, when that is it."""
    # Generated handlers deserialize with the message class's FromString (a bound classmethod).
    descriptor = getattr(getattr(deserialize, "__self__", None), "DESCRIPTOR", None)
    if descriptor is not None and isinstance(raw, bytes):
        too_deep = hygiene.too_deep_in_wire(raw, descriptor)
        if too_deep is not None:
            return too_deep.error()
        field = invalid_utf8_field(raw, descriptor)
        if field is not None:
            return InvalidArgument(
                reason="INVALID_UTF8", violations=[FieldViolation(field, "is not valid UTF-8")]
            )
    return InvalidArgument("the request message could not be parsed", reason="MALFORMED_REQUEST")


async def _parsed(requests: AsyncIterator[Any], deserialize: Callable[[bytes], Any]) -> Any:
    async for raw in requests:
        yield _parse(deserialize, raw)


class _HandlerContext:
    """The servicer context as a handler sees it: ``read()`` parses what it returns (when
    ``deserialize`` is given), ``write()`` hands messages to ``written`` (when given)."""

    def __init__(
        self,
        context: Any,
        *,
        deserialize: Callable[[bytes], Any] | None = None,
        written: asyncio.Queue[Any] | None = None,
    ) -> None:
        self._context = context
        self._deserialize = deserialize
        self._written = written

    async def read(self) -> Any:
        raw = await self._context.read()
        if raw is grpc.aio.EOF or self._deserialize is None:
            return raw
        return _parse(self._deserialize, raw)

    async def write(self, message: Any) -> None:
        if self._written is None:
            await self._context.write(message)
        else:
            await self._written.put(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def _as_generator(
    behavior: Callable[..., Coroutine[Any, Any, None]],
) -> Callable[..., AsyncIterator[Any]]:
    """A ``context.write()``-style handler as an async generator of its messages.

    Every streaming handler then looks the same to the interceptors outside this one (the
    OpenTelemetry server interceptor iterates responses with ``async for`` and would break
    grpc.health.v1 Watch, which writes). The handler runs in a task (same context
    variables); ``write()`` waits until the message is taken, as gRPC's does.
    """

    async def run(request: Any, context: Any) -> AsyncIterator[Any]:
        written: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
        handler_context = _HandlerContext(context, written=written)
        task: asyncio.Task[None] = asyncio.create_task(behavior(request, handler_context))
        getter: asyncio.Task[Any] | None = None
        try:
            while True:
                getter = asyncio.create_task(written.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                    continue
                getter.cancel()
                while not written.empty():
                    yield written.get_nowait()
                task.result()  # the handler's exception, if any
                return
        finally:
            if getter is not None and not getter.done():
                getter.cancel()
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
            if not task.cancelled():
                task.exception()  # retrieved: no "never retrieved" noise

    return run


def _serializer(serialize: Callable[[Any], bytes] | None) -> Callable[[Any], bytes]:
    def run(response: Any) -> bytes:
        if response is None:
            raise TypeError("the handler returned None instead of a response message")
        if serialize is None:
            if not isinstance(response, bytes):
                raise TypeError(f"the handler returned {type(response).__name__}, not bytes")
            return response
        return serialize(response)

    return run


def _wrap(
    handler: grpc.RpcMethodHandler, interceptor: SuiteInterceptor, method: str
) -> grpc.RpcMethodHandler:
    """A handler for ``method`` that runs the original one inside a fresh ``_Call`` per call."""
    serialize = _serializer(handler.response_serializer)
    deserialize = handler.request_deserializer
    streaming_request = bool(handler.request_streaming)
    streaming = streaming_request or bool(handler.response_streaming)
    attributes = RpcMetrics.attributes(method, streaming=streaming)

    def arguments(request: Any, context: Any) -> tuple[Any, Any]:
        """What the handler gets: the parsed request (or a parsing iterator) and context."""
        if deserialize is None:
            return request, context
        if streaming_request:
            return _parsed(request, deserialize), _HandlerContext(context, deserialize=deserialize)
        return _parse(deserialize, request), context

    async def handle_error(call: _Call, exc: BaseException, context: Any, request: Any) -> None:
        if isinstance(exc, grpc.aio.AbortError):
            raise exc  # context.abort(): the status is set already; pass it through
        if streaming_request:
            await _drain_requests(request, interceptor.error_drain_seconds)
        await call.fail(exc, context)

    def unary_response(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def run(request: Any, context: grpc.aio.ServicerContext) -> Any:
            call = _Call(interceptor, method, context, attributes)
            try:
                await call.enter(context)
                response = await behavior(*arguments(request, context))
                if response is None and context.code() not in (None, grpc.StatusCode.OK):
                    return None  # set_code() + return: gRPC sends that status
                return serialize(response)
            except asyncio.CancelledError:
                call.code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                await handle_error(call, exc, context, request)
            finally:
                call.finish(context)

        return run

    def stream_response(
        behavior: Callable[..., AsyncIterator[Any]],
    ) -> Callable[..., AsyncIterator[Any]]:
        async def run(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            call = _Call(interceptor, method, context, attributes)
            try:
                await call.enter(context)
                responses = behavior(*arguments(request, context))
                if hasattr(responses, "__aiter__"):
                    async for response in responses:
                        yield serialize(response)
                else:  # a plain generator, as gRPC itself accepts
                    for response in responses:  # type: ignore[attr-defined]
                        yield serialize(response)
            except (asyncio.CancelledError, GeneratorExit):  # aclose() when the call ends early
                call.code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                await handle_error(call, exc, context, request)
            finally:
                call.finish(context)

        return run

    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary_response(handler.unary_unary))
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary_response(handler.stream_unary))
    behavior = handler.unary_stream or handler.stream_stream
    # The same test gRPC applies: a coroutine function writes with context.write(); anything
    # else returns an iterator of responses.
    if inspect.iscoroutinefunction(behavior):
        behavior = _as_generator(behavior)
    factory = (
        grpc.unary_stream_rpc_method_handler
        if handler.unary_stream
        else grpc.stream_stream_rpc_method_handler
    )
    return factory(stream_response(behavior))
