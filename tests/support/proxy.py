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
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
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
        self.accepted = 0
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

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.drop_new or self.to_drop > 0:
            self.to_drop = max(0, self.to_drop - 1)
            writer.transport.abort()
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
            asyncio.create_task(self._pipe(reader, up_writer)),
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
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
