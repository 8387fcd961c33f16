"""Every domain exception reaches a real client with the right status and details, in all
four cardinalities; unexpected exceptions become INTERNAL with a correlation id."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import wrappers_pb2
from google.rpc import error_details_pb2

from common import db, errors
from common.grpc_errors import (
    MAX_MESSAGE_BYTES,
    bad_request,
    dependency_status,
    error_info,
    from_rpc_error,
    retry_info,
)
from common.resilience import CircuitOpen
from tests.support.proxy import TcpProxy
from tests.support.rpc import (
    demo_service,
    method,
    serving,
    stream_stream,
    stream_unary,
    test_settings,
    unary,
    unary_stream,
)

USERS_SERVICE = "mediagrid.users.v1.ProbeService"

V = errors.FieldViolation
# (exception, code, reason)
CASES: list[tuple[errors.DomainError, grpc.StatusCode, str]] = [
    (
        errors.NotFound("no such user", metadata={"name": "users/7"}),
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
    ),
    (errors.AlreadyExists(reason="EMAIL_TAKEN"), grpc.StatusCode.ALREADY_EXISTS, "EMAIL_TAKEN"),
    (
        errors.InvalidArgument(violations=[V("email", "must contain @"), V("age", "must be >= 0")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    ),
    (
        errors.OutOfRange.field("page_size", "must be <= 1000"),
        grpc.StatusCode.OUT_OF_RANGE,
        "OUT_OF_RANGE",
    ),
    (
        errors.PermissionDenied(metadata={"permission": "files.read"}),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    ),
    (
        errors.Unauthenticated(reason="SESSION_EXPIRED"),
        grpc.StatusCode.UNAUTHENTICATED,
        "SESSION_EXPIRED",
    ),
    (
        errors.FailedPrecondition("job is done"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "FAILED_PRECONDITION",
    ),
    (
        errors.ResourceExhausted(reason="QUOTA", retry_after_seconds=2.5),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "QUOTA",
    ),
    (errors.Unavailable(metadata={"dependency": "s3"}), grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE"),
    (errors.Aborted("lost the race"), grpc.StatusCode.ABORTED, "ABORTED"),
    (errors.DataLoss(reason="CHECKSUM_MISMATCH"), grpc.StatusCode.DATA_LOSS, "CHECKSUM_MISMATCH"),
    (errors.Internal("broken invariant"), grpc.StatusCode.INTERNAL, "INTERNAL"),
    (CircuitOpen("s3 circuit open"), grpc.StatusCode.UNAVAILABLE, "CIRCUIT_OPEN"),
    (errors.DomainError("bare base class"), grpc.StatusCode.INTERNAL, "ERROR"),
]
IDS = [type(case[0]).__name__ for case in CASES]


def test_every_domain_exception_has_a_case() -> None:
    """A new exception class added to common.errors must be added to CASES."""
    classes = {
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, errors.DomainError)
    } - {errors.RetryLater}  # a base class, never raised itself
    assert classes <= {type(case[0]) for case in CASES}


def _raiser(exc: BaseException) -> Any:
    async def handler(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise exc

    return handler


def _check(
    error: grpc.aio.AioRpcError, exc: errors.DomainError, code: grpc.StatusCode, reason: str
) -> None:
    assert error.code() == code
    assert error.details() == exc.message
    info = error_info(error)
    assert info is not None
    assert info.reason == reason
    assert info.domain == "users.mediagrid"
    assert dict(info.metadata) == exc.metadata
    bad = bad_request(error)
    if isinstance(exc, errors.InvalidArgument):
        assert bad is not None
        assert [(v.field, v.description) for v in bad.field_violations] == [
            (v.field, v.description) for v in exc.violations
        ]
    else:
        assert bad is None
    retry = retry_info(error)
    if isinstance(exc, errors.ResourceExhausted):
        assert retry is not None
        assert retry.retry_delay.ToNanoseconds() == 2_500_000_000
    else:
        assert retry is None


@pytest.mark.parametrize(("exc", "code", "reason"), CASES, ids=IDS)
async def test_domain_errors_in_all_cardinalities(
    exc: errors.DomainError, code: grpc.StatusCode, reason: str
) -> None:
    async def streams(request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield b"one"
        yield b"two"
        raise exc

    async def consumes(requests: AsyncIterator[bytes], context: Any) -> bytes:
        async for _ in requests:
            pass
        raise exc

    async def echoes(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for item in requests:
            yield item
        raise exc

    handlers = {
        "Unary": unary(_raiser(exc)),
        "ServerStream": unary_stream(streams),
        "ClientStream": stream_unary(consumes),
        "BidiStream": stream_stream(echoes),
    }
    service = demo_service(handlers, service=USERS_SERVICE)
    async with serving(service) as (_, channel):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(method("Unary", USERS_SERVICE))(b"x")
        _check(caught.value, exc, code, reason)

        received: list[bytes] = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for item in channel.unary_stream(method("ServerStream", USERS_SERVICE))(b"x"):
                received.append(item)
        assert received == [b"one", b"two"]  # messages before the error still arrive
        _check(caught.value, exc, code, reason)

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.stream_unary(method("ClientStream", USERS_SERVICE))(iter([b"a", b"b"]))
        _check(caught.value, exc, code, reason)

        received = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            call = channel.stream_stream(method("BidiStream", USERS_SERVICE))(iter([b"a", b"b"]))
            async for item in call:
                received.append(item)
        assert received == [b"a", b"b"]
        _check(caught.value, exc, code, reason)


async def test_unexpected_exception_is_internal_with_correlation_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def leaky(request: bytes, context: Any) -> bytes:
        raise RuntimeError("secret-connection-string=postgres://admin:hunter2@db")

    async def leaky_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield b"first"
        raise KeyError("secret-key-hunter2")

    service = demo_service({"Leak": unary(leaky), "LeakStream": unary_stream(leaky_stream)})
    caplog.set_level(logging.INFO)
    async with serving(service) as (_, channel):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(method("Leak"))(b"x")
        received: list[bytes] = []
        with pytest.raises(grpc.aio.AioRpcError) as caught_stream:
            async for item in channel.unary_stream(method("LeakStream"))(b"x"):
                received.append(item)
    assert received == [b"first"]
    for error in (caught.value, caught_stream.value):
        assert error.code() == grpc.StatusCode.INTERNAL
        info = error_info(error)
        assert info is not None and info.reason == "INTERNAL" and info.domain == "demo.mediagrid"
        correlation_id = info.metadata["correlation_id"]
        assert len(correlation_id) == 32
        assert correlation_id in (error.details() or "")
        # Nothing of the exception reaches the client, in the message or any trailer.
        visible = (
            (error.details() or "")
            + repr(error.trailing_metadata())
            + (error.debug_error_string() or "")
        )
        assert "hunter2" not in visible and "Traceback" not in visible
        # ... but the server log has the traceback under the same correlation id.
        logged = [
            r
            for r in caplog.records
            if r.name == "mediagrid.errors" and correlation_id in r.getMessage()
        ]
        assert len(logged) == 1 and logged[0].exc_info is not None
        assert logged[0].levelno == logging.ERROR
        assert "hunter2" in caplog.text and "Traceback" in caplog.text


async def test_context_abort_passes_through_unchanged() -> None:
    async def aborts(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "handled by hand")
        raise AssertionError("abort returns never")

    async def aborts_mid_stream(
        request: bytes, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        yield b"one"
        await context.abort(grpc.StatusCode.OUT_OF_RANGE, "stop here")

    service = demo_service({"Abort": unary(aborts), "AbortStream": unary_stream(aborts_mid_stream)})
    async with serving(service) as (_, channel):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(method("Abort"))(b"x")
        with pytest.raises(grpc.aio.AioRpcError) as caught_stream:
            async for _ in channel.unary_stream(method("AbortStream"))(b"x"):
                pass
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == "handled by hand"
    assert error_info(caught.value) is None  # not rewritten into an INTERNAL or a rich status
    assert caught_stream.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert caught_stream.value.details() == "stop here"


async def test_set_code_and_return_none_passes_through() -> None:
    async def sets_code(request: bytes, context: grpc.aio.ServicerContext) -> bytes | None:
        context.set_code(grpc.StatusCode.NOT_FOUND)
        context.set_details("set by hand")
        return None

    async with serving(demo_service({"SetCode": unary(sets_code)})) as (_, channel):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(method("SetCode"))(b"x")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "set by hand"


def _string_value_handler(fn: Any, streaming: bool = False) -> grpc.RpcMethodHandler:
    make = (
        grpc.unary_stream_rpc_method_handler if streaming else grpc.unary_unary_rpc_method_handler
    )
    return make(
        fn,
        request_deserializer=wrappers_pb2.StringValue.FromString,
        response_serializer=wrappers_pb2.StringValue.SerializeToString,
    )


async def test_bad_handler_results_and_bad_requests_are_mapped_never_unknown() -> None:
    """gRPC itself answers UNKNOWN with a Python error text for these; we must not."""

    async def returns_none(request: wrappers_pb2.StringValue, context: Any) -> None:
        return None

    async def returns_wrong_type(request: wrappers_pb2.StringValue, context: Any) -> Any:
        return {"not": "a message"}

    async def yields_wrong_type(
        request: wrappers_pb2.StringValue, context: Any
    ) -> AsyncIterator[Any]:
        yield wrappers_pb2.StringValue(value="fine")
        yield 42

    async def echo(request: wrappers_pb2.StringValue, context: Any) -> wrappers_pb2.StringValue:
        return wrappers_pb2.StringValue(value=request.value.upper())

    service = demo_service(
        {
            "None": _string_value_handler(returns_none),
            "Wrong": _string_value_handler(returns_wrong_type),
            "WrongStream": _string_value_handler(yields_wrong_type, streaming=True),
            "Echo": _string_value_handler(echo),
        }
    )
    request = wrappers_pb2.StringValue(value="hi").SerializeToString()
    async with serving(service) as (_, channel):
        assert (
            await channel.unary_unary(method("Echo"))(request)
            == wrappers_pb2.StringValue(value="HI").SerializeToString()
        )
        for name in ("None", "Wrong"):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(method(name))(request)
            assert caught.value.code() == grpc.StatusCode.INTERNAL, name
            assert "correlation id" in (caught.value.details() or "")
        received: list[bytes] = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for item in channel.unary_stream(method("WrongStream"))(request):
                received.append(item)
        assert len(received) == 1
        assert caught.value.code() == grpc.StatusCode.INTERNAL
        # A request that does not parse is the caller's fault: INVALID_ARGUMENT.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(method("Echo"))(b"\xff\xff\xff\xff")
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        info = error_info(caught.value)
        assert info is not None and info.reason == "MALFORMED_REQUEST"
        # A string field with invalid UTF-8 is named (field 1 of StringValue is "value").
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(method("Echo"))(b"\x0a\x02\xc3\x28")
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        info = error_info(caught.value)
        assert info is not None and info.reason == "INVALID_UTF8"
        bad = bad_request(caught.value)
        assert bad is not None and [v.field for v in bad.field_violations] == ["value"]


async def test_oversized_errors_are_cut_to_fit_the_trailers() -> None:
    """Without a budget a 20 KB message arrives as RESOURCE_EXHAUSTED with no details."""
    ids = ",".join(f"{i:036d}" for i in range(200))  # a list too long to send
    huge = errors.InvalidArgument(
        "é" * 20_000,
        metadata={"first": "kept", "ids": ids, "short": "kept too"},
        violations=[V(f"items[{i}].name", "d" * 5_000) for i in range(50)],
    )
    async with serving(demo_service({"Huge": unary(_raiser(huge))})) as (_, channel):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(method("Huge"))(b"x")
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error.details() or ""
    assert details.startswith("éé") and details.endswith("…")
    assert len(details.encode()) <= MAX_MESSAGE_BYTES
    info = error_info(error)
    bad = bad_request(error)
    assert info is not None and info.reason == "INVALID_ARGUMENT"
    # Data is never cut: the list is left out whole, and the client is told.
    assert dict(info.metadata) == {"first": "kept", "short": "kept too", "truncated": "true"}
    assert bad is not None and 1 <= len(bad.field_violations) < 50
    for i, violation in enumerate(bad.field_violations):
        assert violation.field == f"items[{i}].name"  # paths whole, in order
        assert violation.description.endswith("…")  # descriptions are text: cut
    back = from_rpc_error(error)
    assert isinstance(back, errors.InvalidArgument) and back.metadata["truncated"] == "true"


async def test_from_rpc_error_without_rich_status() -> None:
    """A transport failure (nothing listening) becomes Unavailable with the code as reason."""
    async with grpc.aio.insecure_channel("127.0.0.1:1") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(method("Nothing"))(b"x", timeout=5)
    exc = from_rpc_error(caught.value)
    assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert isinstance(exc, errors.Unavailable)
    assert exc.reason == caught.value.code().name
    assert exc.domain is None and exc.metadata == {}


async def test_unimplemented_method_is_not_unknown() -> None:
    async with serving(demo_service({})) as (_, channel):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(method("Missing"))(b"x")
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert isinstance(from_rpc_error(caught.value), errors.Internal)


def test_reasons_must_be_upper_snake_case() -> None:
    with pytest.raises(ValueError, match="UPPER_SNAKE_CASE"):
        errors.NotFound(reason="not found")
    with pytest.raises(ValueError, match="retry_after_seconds"):
        errors.ResourceExhausted(retry_after_seconds=-1)
    assert errors.NotFound(reason="USER_NOT_FOUND").reason == "USER_NOT_FOUND"


def _sv_handler(factory: Any, fn: Any) -> grpc.RpcMethodHandler:
    return factory(
        fn,
        request_deserializer=wrappers_pb2.StringValue.FromString,
        response_serializer=wrappers_pb2.StringValue.SerializeToString,
    )


async def test_streamed_requests_are_parsed_and_malformed_ones_rejected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Protobuf messages in every cardinality, iterator and context.read() styles alike."""

    async def count(requests: AsyncIterator[wrappers_pb2.StringValue], context: Any) -> Any:
        values = [r.value async for r in requests]
        return wrappers_pb2.StringValue(value=",".join(values))

    async def count_read(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        values = []
        while (request := await context.read()) is not grpc.aio.EOF:
            values.append(request.value)
        return wrappers_pb2.StringValue(value=",".join(values))

    async def upper(requests: AsyncIterator[wrappers_pb2.StringValue], context: Any) -> Any:
        async for request in requests:
            yield wrappers_pb2.StringValue(value=request.value.upper())

    async def repeat(request: wrappers_pb2.StringValue, context: Any) -> Any:
        for _ in range(2):
            yield wrappers_pb2.StringValue(value=request.value)

    service = demo_service(
        {
            "Count": _sv_handler(grpc.stream_unary_rpc_method_handler, count),
            "CountRead": _sv_handler(grpc.stream_unary_rpc_method_handler, count_read),
            "Upper": _sv_handler(grpc.stream_stream_rpc_method_handler, upper),
            "Repeat": _sv_handler(grpc.unary_stream_rpc_method_handler, repeat),
        }
    )

    def sv(value: str) -> bytes:
        return bytes(wrappers_pb2.StringValue(value=value).SerializeToString())

    def parsed(raw: bytes) -> str:
        return str(wrappers_pb2.StringValue.FromString(raw).value)

    caplog.set_level(logging.ERROR, logger="mediagrid.errors")
    async with serving(service) as (_, channel):
        assert (
            parsed(await channel.stream_unary(method("Count"))(iter([sv("a"), sv("b")]))) == "a,b"
        )
        read = channel.stream_unary(method("CountRead"))
        assert parsed(await read(iter([sv("a"), sv("b")]))) == "a,b"
        upper_call = channel.stream_stream(method("Upper"))(iter([sv("x"), sv("y")]))
        assert [parsed(item) async for item in upper_call] == ["X", "Y"]
        repeat_call = channel.unary_stream(method("Repeat"))(sv("r"))
        assert [parsed(item) async for item in repeat_call] == ["r", "r"]
        garbage = b"\xff\xff\xff"
        for name, call in [
            ("Count", channel.stream_unary(method("Count"))(iter([sv("a"), garbage]))),
            ("CountRead", channel.stream_unary(method("CountRead"))(iter([sv("a"), garbage]))),
            ("Upper", _drain(channel.stream_stream(method("Upper"))(iter([sv("a"), garbage])))),
            ("Repeat", _drain(channel.unary_stream(method("Repeat"))(garbage))),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
            info = error_info(caught.value)
            assert info is not None and info.reason == "MALFORMED_REQUEST", name
    assert not caplog.records  # a caller's mistake is not a server error


async def _drain(call: Any) -> list[Any]:
    return [item async for item in call]


async def test_database_outage_in_a_handler_is_unavailable(
    pg_admin_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler that lets the driver's error through: UNAVAILABLE, not INTERNAL."""
    async with TcpProxy.for_dsn(pg_admin_dsn) as proxy:
        pool = await db.create_pool(test_settings(db_connect_attempts=1), proxy.dsn())

        async def query(request: bytes, context: Any) -> bytes:
            return str(await pool.fetchval("SELECT 7")).encode()

        try:
            async with serving(demo_service({"Query": unary(query)})) as (_, channel):
                assert await channel.unary_unary(method("Query"))(b"") == b"7"
                await proxy.refuse()
                await proxy.close_connections()
                caplog.set_level(logging.WARNING, logger="mediagrid.errors")
                for _ in range(2):  # the broken connection, then a refused new one
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await channel.unary_unary(method("Query"))(b"")
                    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                    info = error_info(caught.value)
                    assert info is not None
                    assert info.reason in ("DATABASE_UNAVAILABLE", "DEPENDENCY_UNAVAILABLE")
                    assert info.metadata["correlation_id"] in caplog.text
        finally:
            pool.terminate()
    assert "unavailable in /mediagrid.demo.v1.DemoService/Query" in caplog.text


async def test_pooled_connections_whose_backend_was_killed_are_retried_on_fresh_ones(
    pg_admin_dsn: str,
) -> None:
    """pg_terminate_backend under the pool, 10 rounds: every call after a kill is OK (the
    dead connection is discarded and the read runs again on a fresh one), never INTERNAL."""
    # An application_name of this test's own: no other test's kill can hit these connections,
    # and this test kills nobody else's.
    settings = test_settings(
        db_pool_min_size=1, db_pool_max_size=2, service_name=f"kill-{uuid.uuid4().hex[:8]}"
    )
    pool = db.SuitePool(await db.create_pool(settings, pg_admin_dsn), settings)

    async def query(request: bytes, context: Any) -> bytes:
        return str(await pool.fetchval("SELECT 7", idempotent=True)).encode()

    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        async with serving(demo_service({"Query": unary(query)})) as (_, channel):
            call = channel.unary_unary(method("Query"))
            for _ in range(10):
                # Both pooled connections are in use at once, so both exist before the kill.
                assert await asyncio.gather(call(b""), call(b"")) == [b"7", b"7"]
                killed = await admin.fetchval(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                    "FROM pg_stat_activity WHERE application_name = $1",
                    settings.service_name,
                )
                assert killed >= 1
                assert await asyncio.gather(call(b""), call(b"")) == [b"7", b"7"]
    finally:
        await admin.close()
        pool.terminate()


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (
            asyncpg.InternalClientError("cannot switch to state 12; another operation"),
            "DATABASE_UNAVAILABLE",
        ),
        (
            asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
            "DATABASE_UNAVAILABLE",
        ),
        (asyncpg.InterfaceError("connection is closed"), "DATABASE_UNAVAILABLE"),
        (TimeoutError(), "DEPENDENCY_UNAVAILABLE"),
    ],
)
def test_driver_and_timeout_failures_are_unavailable_with_retry_info(
    exc: BaseException, reason: str
) -> None:
    status = dependency_status(exc, "/mediagrid.jobs.v1.JobService/GetJob")
    assert status is not None
    assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    kinds = {detail.type_url.rsplit("/", 1)[-1] for detail in status.details}
    assert {"google.rpc.ErrorInfo", "google.rpc.RetryInfo"} <= kinds
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert info.reason == reason
