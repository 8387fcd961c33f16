"""The suite's server interceptor: request id, authentication, error mapping, access log.

It wraps each RPC behaviour (all four cardinalities) so that the work happens inside the
handler's task: context variables set here are visible to the handler, and exceptions
raised by the handler (or while it streams) are mapped by ``common.grpc_errors``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any, Protocol

import grpc

from common import grpc_errors
from common.context import Principal, current_principal_var, request_id_var

log = logging.getLogger("mediagrid.access")

# Infrastructure services every caller may use without a token.
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class Authenticator(Protocol):
    """Turns a bearer token into a principal or raises ``Unauthenticated``."""

    async def authenticate(self, token: str) -> Principal: ...


def bearer_token(metadata: Any) -> str | None:
    """The token of an ``authorization: Bearer <token>`` header, or None when absent."""
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return ""  # present but malformed
            return token.strip()
    return None


class SuiteInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Request id, optional authentication, status mapping and one access-log line per call."""

    def __init__(
        self,
        *,
        authenticator: Authenticator | None = None,
        public_methods: Collection[str] = (),
    ) -> None:
        self.authenticator = authenticator
        self.public_methods = frozenset(public_methods)

    def _needs_auth(self, method: str) -> bool:
        if self.authenticator is None or method in self.public_methods:
            return False
        return not method.startswith(OPEN_SERVICES)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return None
        return _wrap(handler, _Call(self, details))


class _Call:
    """Per-call state shared by the wrappers below."""

    def __init__(self, interceptor: SuiteInterceptor, details: grpc.HandlerCallDetails) -> None:
        self.interceptor = interceptor
        self.method: str = details.method
        self.metadata = details.invocation_metadata or ()
        self.started = time.perf_counter()
        self.code = grpc.StatusCode.OK

    async def enter(self) -> None:
        request_id = next(
            (str(v) for k, v in self.metadata if k == "x-request-id" and v), None
        ) or uuid.uuid4().hex
        request_id_var.set(request_id)
        current_principal_var.set(None)
        if not self.interceptor._needs_auth(self.method):
            return
        token = bearer_token(self.metadata)
        from common.errors import Unauthenticated

        if token is None:
            raise Unauthenticated("missing 'authorization: Bearer <token>' header", reason="MISSING_TOKEN")
        if token == "":
            raise Unauthenticated("malformed authorization header; expected 'Bearer <token>'", reason="MALFORMED_TOKEN")
        assert self.interceptor.authenticator is not None
        principal = await self.interceptor.authenticator.authenticate(token)
        current_principal_var.set(principal.model_copy(update={"token": token}))

    async def fail(self, exc: BaseException, context: grpc.aio.ServicerContext) -> None:
        status = grpc_errors.status_for(exc, self.method)
        self.code = grpc.StatusCode(
            next(c.value for c in grpc.StatusCode if c.value[0] == status.code)
        )
        await grpc_errors.abort(context, status)

    def finish(self, context: grpc.aio.ServicerContext) -> None:
        code = context.code() if hasattr(context, "code") else None
        if isinstance(code, grpc.StatusCode):
            self.code = code
        principal = current_principal_var.get()
        log.info(
            "%s %s %.1fms",
            self.method,
            self.code.name,
            (time.perf_counter() - self.started) * 1000,
            extra={
                "method": self.method,
                "status": self.code.name,
                "duration_ms": round((time.perf_counter() - self.started) * 1000, 3),
                "request_id": request_id_var.get(),
                "principal": principal.name if principal else None,
            },
        )


def _is_abort(exc: BaseException) -> bool:
    # context.abort() raises AbortError: the status is already set, let it through.
    return isinstance(exc, grpc.aio.AbortError)


def _wrap(handler: grpc.RpcMethodHandler, call: _Call) -> grpc.RpcMethodHandler:
    def unary_response(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def run(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                await call.enter()
                return await behavior(request, context)
            except Exception as exc:
                if _is_abort(exc):
                    raise
                await call.fail(exc, context)
            finally:
                call.finish(context)

        return run

    def stream_response(behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
        async def run(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                await call.enter()
                async for response in behavior(request, context):
                    yield response
            except Exception as exc:
                if _is_abort(exc):
                    raise
                await call.fail(exc, context)
            finally:
                call.finish(context)

        return run

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary_response(handler.unary_unary), **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary_response(handler.stream_unary), **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream_response(handler.unary_stream), **kwargs)
    return grpc.stream_stream_rpc_method_handler(stream_response(handler.stream_stream), **kwargs)
