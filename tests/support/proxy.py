"""A small asyncio TCP proxy for fault injection (this machine has no tc/netem/toxiproxy).

``TcpProxy(host, port)`` listens on 127.0.0.1 (port 0 by default) and forwards every
connection to the target. Faults:

- ``pause()`` / ``resume()``: stop forwarding bytes in both directions (connections stay open,
  so the peer sees a hang, not an error); new connections are accepted but stall too.
- ``refuse()`` / ``accept()``: stop listening (connect gets ECONNREFUSED) and listen again
  on the same port.
- ``drop_new = True``: accept connections and close them at once (a server that resets);
  ``to_drop = n`` does that to the next n connections only.
- ``close_connections()``: abort every open connection (the server went away).
- ``latency(seconds)``: hold every chunk that long before passing it on (0 = pass again).
- ``reset_new = True``: answer new connections with a TCP RST (SO_LINGER 0), as a host whose
  server crashed does; ``to_reset = n`` resets the next n only.
- ``reset_fraction(f, seed)``: reset that fraction of new connections, drawn from a seeded RNG.

``HttpFaultProxy`` is a TcpProxy that understands HTTP/1.1 requests (Content-Length and
chunked bodies), so it can fail a fraction of *requests* on kept-alive connections, as a
flaky S3 endpoint does: each chosen request is answered with a 503 SlowDown or a reset
before any of its bytes reach the server (a retry of it is always safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import struct
from collections.abc import Sequence
from urllib.parse import parse_qs, urlsplit


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (for "the server appears later" tests)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class TcpProxy:
    """Forwards to ``target_host:target_port``, or to the unix socket ``target_path``."""

    def __init__(
        self,
        target_host: str = "127.0.0.1",
        target_port: int = 0,
        *,
        target_path: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.target_path = target_path
        self.host = host
        self.port = 0
        self.drop_new = False
        self.to_drop = 0  # drop this many of the next connections, then forward again
        self.reset_new = False
        self.to_reset = 0  # reset this many of the next connections, then forward again
        self.reset_ratio = 0.0
        self.resets = 0  # connections answered with a reset so far
        self.delay = 0.0
        self.accepted = 0
        self._rng = random.Random(0)
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self, port: int | None = None) -> int:
        """Listen (on ``port``, or the previous port, or any free one); return the port."""
        wanted = self.port if port is None else port
        self._server = await asyncio.start_server(
            self._on_client, self.host, wanted, reuse_address=True
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def refuse(self) -> None:
        """Stop listening: new connections are refused; open ones are left alone."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def accept(self) -> None:
        """Listen again on the same port after ``refuse()``."""
        if self._server is None:
            await self.start()

    def pause(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def latency(self, seconds: float) -> None:
        """Delay every chunk (both ways, open and new connections) by ``seconds``."""
        if seconds < 0:
            raise ValueError(f"latency must be >= 0, got {seconds}")
        self.delay = seconds

    def reset_fraction(self, fraction: float, seed: int = 0) -> None:
        """Reset ``fraction`` (0..1) of new connections; the choice is repeatable by ``seed``."""
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction must be within 0..1, got {fraction}")
        self.reset_ratio = fraction
        self._rng = random.Random(seed)

    def heal(self) -> None:
        """Back to plain forwarding for new connections and new chunks (``refuse`` aside)."""
        self.resume()
        self.delay = 0.0
        self.drop_new = self.reset_new = False
        self.to_drop = self.to_reset = 0
        self.reset_ratio = 0.0

    async def close_connections(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        await asyncio.sleep(0)

    async def stop(self) -> None:
        await self.refuse()
        self.resume()
        await self.close_connections()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        # Let the per-connection handlers end by themselves: a cancelled one makes asyncio's
        # stream callback log an error.
        if self._handlers:
            await asyncio.wait(self._handlers)

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @classmethod
    def for_dsn(cls, dsn: str) -> TcpProxy:
        """A proxy in front of the PostgreSQL of ``dsn`` (TCP, or pgserver's unix socket)."""
        parts = urlsplit(dsn)
        socket_dir = parse_qs(parts.query).get("host", [None])[0]
        if socket_dir and socket_dir.startswith("/"):
            port = parts.port or 5432
            return cls(target_path=os.path.join(socket_dir, f".s.PGSQL.{port}"))
        return cls(parts.hostname or "127.0.0.1", parts.port or 5432)

    def dsn(self, database: str = "postgres", user: str = "postgres") -> str:
        """A TCP DSN through the proxy (trust authentication, as in tests)."""
        return f"postgresql://{user}@{self.host}:{self.port}/{database}"

    # --- forwarding -----------------------------------------------------------------------
    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            await self._forward(reader, writer)
        finally:
            self._handlers.discard(handler)

    def _should_reset(self) -> bool:
        if self.to_reset > 0:
            self.to_reset -= 1
            return True
        if self.reset_new:
            return True
        return self.reset_ratio > 0 and self._rng.random() < self.reset_ratio

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.drop_new or self.to_drop > 0:
            self.to_drop = max(0, self.to_drop - 1)
            writer.transport.abort()
            return
        if self._should_reset():
            self.resets += 1
            reset(writer)
            return
        self._writers.add(writer)
        try:
            await self._flowing.wait()
            if self.target_path is not None:
                up_reader, up_writer = await asyncio.open_unix_connection(self.target_path)
            else:
                up_reader, up_writer = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
        except OSError:
            self._writers.discard(writer)
            writer.transport.abort()
            return
        self._writers.add(up_writer)
        pipes = [
            asyncio.create_task(self._pipe_requests(reader, up_writer, writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pipes:
                task.cancel()
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()
            await asyncio.wait(pipes)
            self._tasks.difference_update(pipes)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                await self._pass(writer, data)

    async def _pass(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        await self._flowing.wait()
        writer.write(data)
        await writer.drain()

    async def _pipe_requests(
        self,
        reader: asyncio.StreamReader,
        upstream: asyncio.StreamWriter,
        client: asyncio.StreamWriter,
    ) -> None:
        """Client-to-server direction; a plain pipe unless a subclass reads requests."""
        await self._pipe(reader, upstream)


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST instead of a FIN (SO_LINGER on, timeout 0)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


SLOW_DOWN = (
    b"HTTP/1.1 503 Slow Down\r\n"
    b"Content-Type: application/xml\r\n"
    b"Connection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s"
)
SLOW_DOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class HttpFaultProxy(TcpProxy):
    """A TcpProxy that fails a seeded fraction of HTTP/1.1 requests (see the module doc).

    ``fail_requests(fraction, seed, kinds)``: each request is failed with probability
    ``fraction``; the kind of failure cycles through ``kinds`` ("503" and/or "reset").
    ``requests`` counts requests seen, ``failed`` those failed.
    """

    def __init__(
        self, target_host: str = "127.0.0.1", target_port: int = 0, *, host: str = "127.0.0.1"
    ) -> None:
        super().__init__(target_host, target_port, host=host)
        self.request_fail_ratio = 0.0
        self.fault_kinds: tuple[str, ...] = ("503", "reset")
        self.requests = 0
        self.failed = 0
        self.failed_by_kind: dict[str, int] = {}
        self._request_rng = random.Random(0)

    def fail_requests(
        self, fraction: float, seed: int = 0, kinds: Sequence[str] = ("503", "reset")
    ) -> None:
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction must be within 0..1, got {fraction}")
        unknown = set(kinds) - {"503", "reset"}
        if not kinds or unknown:
            raise ValueError(f"kinds must be a non-empty list of '503'/'reset', got {kinds}")
        self.request_fail_ratio = fraction
        self.fault_kinds = tuple(kinds)
        self._request_rng = random.Random(seed)

    def heal(self) -> None:
        super().heal()
        self.request_fail_ratio = 0.0

    async def _pipe_requests(
        self,
        reader: asyncio.StreamReader,
        upstream: asyncio.StreamWriter,
        client: asyncio.StreamWriter,
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # the client closed between requests
                self.requests += 1
                if self.request_fail_ratio and self._request_rng.random() < self.request_fail_ratio:
                    await self._fail(reader, client)
                    return
                await self._pass(upstream, head)
                await self._pipe_body(reader, upstream, _headers(head))

    async def _fail(self, reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        kind = self.fault_kinds[self.failed % len(self.fault_kinds)]
        self.failed += 1
        self.failed_by_kind[kind] = self.failed_by_kind.get(kind, 0) + 1
        if kind == "reset":
            reset(client)
            return
        # The client may be waiting for "100 Continue" or still sending the body: answer,
        # then swallow what it still sends until it closes (closing on unread bytes would turn
        # the answer into a reset). The upstream connection never sees this request.
        client.write(SLOW_DOWN % (len(SLOW_DOWN_BODY), SLOW_DOWN_BODY))
        await client.drain()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                while await reader.read(65536):
                    pass

    async def _pipe_body(
        self, reader: asyncio.StreamReader, upstream: asyncio.StreamWriter, headers: dict[str, str]
    ) -> None:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size_line = await reader.readuntil(b"\r\n")
                await self._pass(upstream, size_line)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers, then the empty line
                        line = await reader.readuntil(b"\r\n")
                        await self._pass(upstream, line)
                        if line == b"\r\n":
                            return
                await self._copy(reader, upstream, size + 2)
        else:
            await self._copy(reader, upstream, int(headers.get("content-length", "0") or 0))

    async def _copy(
        self, reader: asyncio.StreamReader, upstream: asyncio.StreamWriter, remaining: int
    ) -> None:
        while remaining > 0:
            data = await reader.read(min(65536, remaining))
            if not data:
                raise asyncio.IncompleteReadError(b"", remaining)
            remaining -= len(data)
            await self._pass(upstream, data)


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    headers = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers
