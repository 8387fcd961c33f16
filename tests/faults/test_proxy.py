"""The fault proxy's modes, each against a real server on 127.0.0.1 (fast: runs in `make test`).

The scenarios in this folder trust these modes to inject exactly the fault they name.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from tests.support.proxy import HttpFaultProxy, TcpProxy


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def round_trip(port: int, payload: bytes = b"ping") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), 10)
    finally:
        writer.close()


async def test_latency_delays_every_chunk_and_zero_passes_again(echo_port: int) -> None:
    async with TcpProxy("127.0.0.1", echo_port) as proxy:
        proxy.latency(0.3)
        started = time.monotonic()
        assert await round_trip(proxy.port) == b"ping"
        # One delay each way: never faster than that (only a lower bound: no flaky ceiling).
        assert time.monotonic() - started >= 0.6
        proxy.latency(0)
        assert await round_trip(proxy.port) == b"ping"
        with pytest.raises(ValueError):
            proxy.latency(-1)


async def test_reset_answers_new_connections_with_rst_not_fin(echo_port: int) -> None:
    async with TcpProxy("127.0.0.1", echo_port) as proxy:
        proxy.reset_new = True
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        with pytest.raises(ConnectionResetError):
            writer.write(b"ping")
            await writer.drain()
            data = await asyncio.wait_for(reader.read(10), 10)
            assert data != b"", "closed with a FIN (clean EOF), not a reset"
            raise AssertionError(f"read {data!r} through a resetting proxy")
        writer.close()
        assert proxy.resets == 1
        proxy.heal()
        assert await round_trip(proxy.port) == b"ping"


async def test_to_reset_resets_only_the_next_n(echo_port: int) -> None:
    async with TcpProxy("127.0.0.1", echo_port) as proxy:
        proxy.to_reset = 2
        outcomes = []
        for _ in range(4):
            try:
                outcomes.append(await round_trip(proxy.port))
            except (ConnectionResetError, asyncio.IncompleteReadError):
                outcomes.append(b"reset")
        assert outcomes == [b"reset", b"reset", b"ping", b"ping"]


async def test_reset_fraction_is_seeded_and_repeatable(echo_port: int) -> None:
    async with TcpProxy("127.0.0.1", echo_port) as proxy:
        proxy.reset_fraction(0.3, seed=7)
        rng = random.Random(7)
        expected = [rng.random() < 0.3 for _ in range(40)]
        seen = []
        for _ in range(40):
            try:
                await round_trip(proxy.port)
                seen.append(False)
            except (ConnectionResetError, asyncio.IncompleteReadError):
                seen.append(True)
        assert seen == expected
        assert proxy.resets == sum(expected) > 0


async def test_pause_blackholes_and_resume_delivers(echo_port: int) -> None:
    async with TcpProxy("127.0.0.1", echo_port) as proxy:
        proxy.pause()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(round_trip(proxy.port), 0.5)
        proxy.resume()
        assert await round_trip(proxy.port) == b"ping"


@pytest.fixture
async def http_port() -> AsyncIterator[tuple[int, list[str]]]:
    """An HTTP/1.1 server answering each body's SHA-256; records every request it saw."""
    seen: list[str] = []

    async def digest(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append(hashlib.sha256(body).hexdigest())
        return web.Response(text=seen[-1])

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/{name}", digest)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert site._server is not None
    sockets = site._server.sockets  # type: ignore[attr-defined]
    try:
        yield int(sockets[0].getsockname()[1]), seen
    finally:
        await runner.cleanup()


async def put_all(port: int, bodies: list[bytes]) -> list[str]:
    """POST (not idempotent: aiohttp never retries it) each body on one kept-alive connection; '503'/'reset'/digest per request."""
    outcomes = []
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        for n, body in enumerate(bodies):
            try:
                async with session.post(f"http://127.0.0.1:{port}/o{n}", data=body) as reply:
                    text = await reply.text()
                    outcomes.append("503" if reply.status == 503 else text)
            except aiohttp.ClientError:
                outcomes.append("reset")
    return outcomes


async def test_http_proxy_fails_the_seeded_fraction_of_requests_before_the_server(
    http_port: tuple[int, list[str]],
) -> None:
    port, seen = http_port
    bodies = [random.Random(n).randbytes(n * 3000) for n in range(60)]
    async with HttpFaultProxy("127.0.0.1", port) as proxy:
        proxy.fail_requests(0.25, seed=3)
        outcomes = await put_all(proxy.port, bodies)
    rng = random.Random(3)
    chosen = [rng.random() < 0.25 for _ in bodies]
    assert [o in ("503", "reset") for o in outcomes] == chosen
    assert proxy.failed == sum(chosen) and set(proxy.failed_by_kind) == {"503", "reset"}
    assert outcomes.count("503") == proxy.failed_by_kind["503"]
    # The server saw exactly the requests that were not failed, byte for byte.
    passed = [hashlib.sha256(b).hexdigest() for b, c in zip(bodies, chosen, strict=True) if not c]
    assert seen == passed
    assert [o for o in outcomes if o not in ("503", "reset")] == passed


async def test_http_proxy_forwards_chunked_bodies(http_port: tuple[int, list[str]]) -> None:
    port, seen = http_port
    parts = [b"a" * 70000, b"b" * 5, b"c" * 100000]

    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    async with HttpFaultProxy("127.0.0.1", port) as proxy:
        async with aiohttp.ClientSession() as session:
            for _ in range(2):  # two requests on one connection: the boundary was found
                async with session.post(f"http://127.0.0.1:{proxy.port}/x", data=body()) as reply:
                    assert reply.status == 200
                    assert await reply.text() == hashlib.sha256(b"".join(parts)).hexdigest()
        assert proxy.requests == 2
    assert len(seen) == 2
