"""The test stores every suite fixture shares: database names, admin statements, moto resets,
and the Settings that point a suite at them."""

from __future__ import annotations

import urllib.request
from typing import Any

import asyncpg

from common.settings import Settings

# Long enough for a busy machine's PostgreSQL to answer; a black hole costs only this once.
PROBE_SECONDS = 3.0


def with_database(dsn: str, database: str) -> str:
    """Replace the database name of a DSN (keeps ?host=... for unix sockets)."""
    head, sep, query = dsn.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{database}{sep}{query}"


async def can_administer(dsn: str) -> bool:
    """True when ``dsn`` really logs in (a port that answers is not enough: the server may
    want a password we do not have) as a role that may create the tests' databases."""
    try:
        conn = await asyncpg.connect(dsn, timeout=PROBE_SECONDS)
    except Exception:  # refused, a password asked for, not PostgreSQL at all: not usable
        return False
    try:
        allowed = await conn.fetchval(
            "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user",
            timeout=PROBE_SECONDS,
        )
        return allowed is True
    except Exception:
        return False
    finally:
        await conn.close()


async def run_admin(dsn: str, *statements: str) -> None:
    """Run statements on a connection of their own (CREATE/DROP DATABASE need one)."""
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def reset_s3(endpoint: str) -> None:
    """Empty moto's server (every bucket and object)."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def suite_settings(database_url: str, s3_endpoint: str, **overrides: Any) -> Settings:
    """Settings of an in-process suite on that database and moto's S3, port 0."""
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "s3_endpoint_url": s3_endpoint,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "s3_payload_signing": False,
        "grpc_port": 0,
        "grpc_shutdown_grace_seconds": 2,
        "health_check_interval_seconds": 0.5,
        "db_connect_attempts": 3,
        "db_connect_backoff_seconds": 0.05,
        "log_format": "text",
    }
    values.update(overrides)
    return Settings(**values)
