"""The suite interceptor over real channels: request id, authentication, access log."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import given
from hypothesis import strategies as st

from common.context import current_principal, current_request_id, optional_principal
from common.errors import InvalidArgument, NotFound
from common.grpc_errors import error_info
from common.interceptors import bearer_token, outgoing_metadata, request_id_from
from tests.support.auth import StaticAuthenticator, bearer, principal
from tests.support.hypo import relaxed
from tests.support.rpc import (
    demo_service,
    method,
    serving,
    stream_stream,
    stream_unary,
    unary,
    unary_stream,
)

AUTH = StaticAuthenticator(
    {"alice-token": principal("alice"), "root-token": principal("root", "admin")}
)


async def whoami(request: bytes, context: Any) -> bytes:
    return current_principal().name.encode()


async def request_id(request: bytes, context: Any) -> bytes:
    return (current_request_id() or "").encode()


async def anonymous(request: bytes, context: Any) -> bytes:
    found = optional_principal()
    return b"anonymous" if found is None else found.name.encode()


async def whoami_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for _ in range(3):
        await asyncio.sleep(0)
        yield current_principal().name.encode()


async def whoami_bidi(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for item in requests:
        yield item + b":" + current_principal().name.encode()


async def missing(request: bytes, context: Any) -> bytes:
    raise NotFound("nothing here")


async def aborts(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "by hand")
    raise AssertionError("unreachable")


def service() -> Any:
    return demo_service(
        {
            "WhoAmI": unary(whoami),
            "RequestId": unary(request_id),
            "Anonymous": unary(anonymous),
            "WhoAmIStream": unary_stream(whoami_stream),
            "WhoAmIBidi": stream_stream(whoami_bidi),
            "Missing": unary(missing),
            "Aborts": unary(aborts),
        },
        public_methods=[method("Anonymous")],
    )


async def test_request_id_from_header_or_generated() -> None:
    async with serving(service()) as (_, channel):
        call = channel.unary_unary(method("RequestId"))
        assert await call(b"", metadata=(("x-request-id", "req-42.a:b/c"),)) == b"req-42.a:b/c"
        generated = (await call(b"")).decode()
        assert re.fullmatch(r"[0-9a-f]{32}", generated)
        assert (await call(b"")).decode() != generated  # one per call
        # A value that could forge log lines is replaced, not logged verbatim.
        forged = (await call(b"", metadata=(("x-request-id", "x" * 300),))).decode()
        assert re.fullmatch(r"[0-9a-f]{32}", forged)


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ((), "MISSING_TOKEN"),
        ((("authorization", "Basic YWxpY2U6cHc="),), "MALFORMED_TOKEN"),
        ((("authorization", "Bearer"),), "MALFORMED_TOKEN"),
        ((("authorization", "Bearer "),), "MALFORMED_TOKEN"),
        ((("authorization", "Bearer a b"),), "MALFORMED_TOKEN"),
        (
            (("authorization", "Bearer alice-token"), ("authorization", "Bearer root-token")),
            "MALFORMED_TOKEN",
        ),
        ((("authorization", "Bearer nobody-token"),), "INVALID_TOKEN"),
    ],
    ids=["missing", "wrong-scheme", "no-token", "empty-token", "two-tokens", "repeated", "unknown"],
)
async def test_bad_credentials_are_unauthenticated(metadata: Any, reason: str) -> None:
    async with serving(service(), authenticator=AUTH) as (_, channel):
        for call in (
            channel.unary_unary(method("WhoAmI"))(b"", metadata=metadata),
            _drain(channel.unary_stream(method("WhoAmIStream"))(b"", metadata=metadata)),
            _drain(channel.stream_stream(method("WhoAmIBidi"))(iter([b"a"]), metadata=metadata)),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            info = error_info(caught.value)
            assert info is not None and info.reason == reason


async def _drain(call: Any) -> list[Any]:
    return [item async for item in call]


async def test_valid_token_reaches_the_handler_in_every_cardinality() -> None:
    async with serving(service(), authenticator=AUTH) as (_, channel):
        assert (
            await channel.unary_unary(method("WhoAmI"))(b"", metadata=bearer("alice-token"))
            == b"users/alice"
        )
        # Scheme is case-insensitive and surrounding whitespace is tolerated.
        upper = (("authorization", "  BEARER   root-token "),)
        assert await channel.unary_unary(method("WhoAmI"))(b"", metadata=upper) == b"users/root"
        streamed = await _drain(
            channel.unary_stream(method("WhoAmIStream"))(b"", metadata=bearer("alice-token"))
        )
        assert streamed == [b"users/alice"] * 3
        bidi = channel.stream_stream(method("WhoAmIBidi"))(
            iter([b"1", b"2"]), metadata=bearer("root-token")
        )
        assert await _drain(bidi) == [b"1:users/root", b"2:users/root"]


async def test_concurrent_calls_see_their_own_principal() -> None:
    async with serving(service(), authenticator=AUTH) as (_, channel):
        tokens = ["alice-token", "root-token"] * 15
        results = await asyncio.gather(
            *(
                _drain(channel.unary_stream(method("WhoAmIStream"))(b"", metadata=bearer(t)))
                for t in tokens
            )
        )
    for token, result in zip(tokens, results, strict=True):
        expected = b"users/alice" if token == "alice-token" else b"users/root"
        assert result == [expected] * 3


async def test_outgoing_metadata_forwards_request_id_and_token() -> None:
    """A handler calling the next service passes the request id and the caller's token on."""

    async def relay(request: bytes, context: Any) -> bytes:
        if request == b"forward":
            metadata = outgoing_metadata()
        else:  # the service's own authority: its own token, the same request id
            metadata = (*outgoing_metadata(forward_token=False), *bearer("root-token"))
        reply: bytes = await relay_channel[0].unary_unary(method("Relayed"))(b"", metadata=metadata)
        return reply

    async def relayed(request: bytes, context: Any) -> bytes:
        return f"{current_request_id()}|{current_principal().name}".encode()

    relay_channel: list[grpc.aio.Channel] = []
    service = demo_service({"Relay": unary(relay), "Relayed": unary(relayed)})
    async with serving(service, authenticator=AUTH) as (_, channel):
        relay_channel.append(channel)
        metadata = (*bearer("alice-token"), ("x-request-id", "chain-1"))
        call = channel.unary_unary(method("Relay"))
        assert await call(b"forward", metadata=metadata) == b"chain-1|users/alice"
        assert await call(b"own", metadata=metadata) == b"chain-1|users/root"
    assert outgoing_metadata() == ()  # outside a call there is nothing to forward


async def test_public_methods_health_and_reflection_need_no_token() -> None:
    async with serving(service(), authenticator=AUTH) as (_, channel):
        assert await channel.unary_unary(method("Anonymous"))(b"") == b"anonymous"
        # A public method still authenticates nothing: a token is simply not required.
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = await _drain(
            stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
        )
        names = {s.name for s in responses[0].list_services_response.service}
        assert "mediagrid.demo.v1.DemoService" in names
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(method("WhoAmI"))(b"")
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_one_access_log_line_per_call(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mediagrid.access")
    async with serving(service(), authenticator=AUTH) as (_, channel):
        await channel.unary_unary(method("WhoAmI"))(
            b"", metadata=(*bearer("alice-token"), ("x-request-id", "r-1"))
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await channel.unary_unary(method("Missing"))(b"", metadata=bearer("alice-token"))
        with pytest.raises(grpc.aio.AioRpcError):
            await channel.unary_unary(method("WhoAmI"))(b"")
        await _drain(
            channel.unary_stream(method("WhoAmIStream"))(b"", metadata=bearer("root-token"))
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await channel.unary_unary(method("Aborts"))(b"", metadata=bearer("root-token"))
        with pytest.raises(grpc.aio.AioRpcError):
            await channel.unary_unary(method("NoSuchMethod"))(b"")
    records = [r for r in caplog.records if r.name == "mediagrid.access"]
    by_method: dict[str, list[logging.LogRecord]] = {}
    for record in records:
        by_method.setdefault(record.method, []).append(record)  # type: ignore[attr-defined]
    whoami_records = by_method[method("WhoAmI")]
    assert [r.status for r in whoami_records] == ["OK", "UNAUTHENTICATED"]  # type: ignore[attr-defined]
    assert whoami_records[0].request_id == "r-1"  # type: ignore[attr-defined]
    assert whoami_records[0].principal == "users/alice"  # type: ignore[attr-defined]
    assert whoami_records[1].principal is None  # type: ignore[attr-defined]
    [missing_record] = by_method[method("Missing")]
    assert missing_record.status == "NOT_FOUND"  # type: ignore[attr-defined]
    # context.abort() bypasses our mapping: the status comes from context.code().
    [abort_record] = by_method[method("Aborts")]
    assert abort_record.status == "FAILED_PRECONDITION"  # type: ignore[attr-defined]
    [unknown_record] = by_method[method("NoSuchMethod")]
    assert unknown_record.status == "UNIMPLEMENTED"  # type: ignore[attr-defined]
    [stream_record] = by_method[method("WhoAmIStream")]
    assert stream_record.status == "OK"  # type: ignore[attr-defined]
    for record in records:
        assert record.duration_ms >= 0  # type: ignore[attr-defined]
        assert record.method in record.getMessage() and record.status in record.getMessage()  # type: ignore[attr-defined]


async def test_quiet_methods_log_success_at_debug_and_failures_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="mediagrid.access")
    quiet = demo_service(
        {
            "WhoAmI": unary(whoami),
            "Missing": unary(missing),
        },
        quiet_methods=[method("WhoAmI"), method("Missing")],
    )
    async with serving(quiet, authenticator=AUTH) as (_, channel):
        await channel.unary_unary(method("WhoAmI"))(b"", metadata=bearer("alice-token"))
        with pytest.raises(grpc.aio.AioRpcError):
            await channel.unary_unary(method("WhoAmI"))(b"")
        with pytest.raises(grpc.aio.AioRpcError):
            await channel.unary_unary(method("Missing"))(b"", metadata=bearer("alice-token"))
        stub = health_pb2_grpc.HealthStub(channel)
        await stub.Check(health_pb2.HealthCheckRequest(service=""))
    levels = {
        (r.method.rsplit("/", 1)[1], r.status): r.levelno  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "mediagrid.access"
    }
    assert levels == {
        ("WhoAmI", "OK"): logging.DEBUG,
        ("WhoAmI", "UNAUTHENTICATED"): logging.INFO,
        ("Missing", "NOT_FOUND"): logging.INFO,
        ("Check", "OK"): logging.DEBUG,
    }


async def test_cancelled_stream_is_logged_as_cancelled(caplog: pytest.LogCaptureFixture) -> None:
    started = asyncio.Event()

    async def forever(request: bytes, context: Any) -> AsyncIterator[bytes]:
        while True:
            started.set()
            yield b"tick"
            await asyncio.sleep(0.01)

    caplog.set_level(logging.INFO, logger="mediagrid.access")
    async with serving(demo_service({"Forever": unary_stream(forever)})) as (_, channel):
        call = channel.unary_stream(method("Forever"))(b"")
        assert await call.read() == b"tick"
        call.cancel()
        for _ in range(200):
            if any(r.name == "mediagrid.access" for r in caplog.records):
                break
            await asyncio.sleep(0.01)
    [record] = [r for r in caplog.records if r.name == "mediagrid.access"]
    assert record.status == "CANCELLED"  # type: ignore[attr-defined]


# --- bearer_token parsing (property tests) -------------------------------------------------

b64token = st.from_regex(r"\A[A-Za-z0-9\-._~+/]+=*\Z")
scheme = st.sampled_from(["Bearer", "bearer", "BEARER", "bEaReR"])
spaces = st.text(alphabet=" \t", min_size=0, max_size=3)


@relaxed()
@given(
    token=b64token,
    scheme=scheme,
    before=spaces,
    between=spaces,
    after=spaces,
    as_bytes=st.booleans(),
)
def test_bearer_token_accepts_well_formed_headers(
    token: str, scheme: str, before: str, between: str, after: str, as_bytes: bool
) -> None:
    value = f"{before}{scheme} {between}{token}{after}"
    metadata = [("x-other", "1"), ("authorization", value.encode() if as_bytes else value)]
    assert bearer_token(metadata) == token


@relaxed()
@given(value=st.text(max_size=60))
def test_bearer_token_rejects_everything_else(value: str) -> None:
    parts = value.split()
    well_formed = (
        len(parts) == 2
        and parts[0].lower() == "bearer"
        and re.fullmatch(r"[A-Za-z0-9\-._~+/]+=*", parts[1]) is not None
    )
    result = bearer_token([("authorization", value)])
    assert result == (parts[1] if well_formed else "")


@relaxed()
@given(
    metadata=st.lists(st.tuples(st.sampled_from(["x-a", "x-b", "cookie"]), st.text(max_size=10)))
)
def test_bearer_token_absent_is_none(metadata: list[tuple[str, str]]) -> None:
    assert bearer_token(metadata) is None
    assert bearer_token(None) is None


@relaxed()
@given(value=st.text(max_size=200))
def test_request_id_is_always_safe(value: str) -> None:
    result = request_id_from([("x-request-id", value)])
    assert re.fullmatch(r"[A-Za-z0-9._:/-]{1,128}", result)
    assert result == value.strip() or re.fullmatch(r"[0-9a-f]{32}", result)


async def test_write_style_streams_work_inside_opentelemetry() -> None:
    """OpenTelemetry's server interceptor (outermost, as the runtime installs it) iterates
    streaming responses; handlers that call context.write() (health Watch) must still work."""
    from opentelemetry.instrumentation.grpc import aio_server_interceptor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    async def writes(request: bytes, context: grpc.aio.ServicerContext) -> None:
        await context.write(b"one")
        await context.write(current_principal().name.encode())
        raise NotFound("gone after two")

    service = demo_service({"Writes": unary_stream(writes), "WhoAmI": unary(whoami)})
    telemetry = [aio_server_interceptor(tracer_provider=provider)]  # type: ignore[no-untyped-call]
    async with serving(service, authenticator=AUTH, extra_interceptors=telemetry) as (_, channel):
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
        received: list[bytes] = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for item in channel.unary_stream(method("Writes"))(
                b"", metadata=bearer("alice-token")
            ):
                received.append(item)
        assert received == [b"one", b"users/alice"]
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        info = error_info(caught.value)
        assert info is not None and info.reason == "NOT_FOUND"
        reply = await channel.unary_unary(method("WhoAmI"))(b"", metadata=bearer("root-token"))
        assert reply == b"users/root"
    provider.shutdown()
    names = {span.name for span in exporter.get_finished_spans()}
    assert {method("Writes"), method("WhoAmI")} <= names


async def count_bytes(requests: AsyncIterator[bytes], context: Any) -> bytes:
    total = 0
    async for item in requests:
        total += len(item)
    return str(total).encode()


async def reject_first_message(requests: AsyncIterator[bytes], context: Any) -> bytes:
    async for _ in requests:
        raise InvalidArgument.field("data", "refused at the first message", reason="REFUSED")
    return b""


async def many_chunks(count: int = 20, size: int = 16 * 1024) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield b"x" * size
        await asyncio.sleep(0.005)  # a client producing data as it goes (a file, a camera)


async def count_bytes_bidi(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    total = 0
    async for item in requests:
        total += len(item)
    yield str(total).encode()


@pytest.mark.parametrize("attempt", range(8))
async def test_a_client_still_streaming_gets_the_real_status_not_internal(attempt: int) -> None:
    """An early failure of a client-streaming call (no token, or the handler refusing the
    first message) reaches a client that is still sending as the real status: the server
    drains the rest of the stream (bounded) before answering."""
    service = demo_service(
        {
            "Count": stream_unary(count_bytes),
            "CountBidi": stream_stream(count_bytes_bidi),
            "Reject": stream_unary(reject_first_message),
        }
    )
    async with serving(service, authenticator=AUTH) as (_server, channel):
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await channel.stream_unary(method("Count"))(many_chunks())
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED

        with pytest.raises(grpc.aio.AioRpcError) as anonymous_bidi:
            async for _ in channel.stream_stream(method("CountBidi"))(many_chunks()):
                pass
        assert anonymous_bidi.value.code() == grpc.StatusCode.UNAUTHENTICATED

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await channel.stream_unary(method("Reject"))(
                many_chunks(), metadata=bearer("alice-token")
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        info = error_info(refused.value)
        assert info is not None and info.reason == "REFUSED"

        counted = await channel.stream_unary(method("Count"))(
            many_chunks(4, 1024), metadata=bearer("alice-token")
        )
        assert counted == b"4096"
