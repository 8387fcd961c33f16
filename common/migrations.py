"""Versioned SQL migrations, one folder of numbered ``NNN_name.sql`` files per service schema.

Runs under a PostgreSQL advisory lock so that replicas starting together apply each
migration once; each file runs in its own transaction and is recorded in
``<schema>.schema_migrations`` with a checksum (an edited, already-applied file is an error).

Files are applied in version order (numerically: 100 before 1000). A pending file numbered
below the newest applied one is applied too, with a warning (parts of a service may number
their migrations in separate ranges). The connection's ``statement_timeout`` is lifted
while migrating: waiting for another replica's lock or building an index may take longer
than a request may.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from common.db import declare_session_state

log = logging.getLogger("mediagrid.migrations")

_FILE_RE = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.sql$")
# One lock for all schemas: migrations are rare and short, and one lock cannot deadlock.
ADVISORY_LOCK_KEY = 0x6D656469  # "medi"


class MigrationError(Exception):
    """A migration cannot be applied (bad file name, edited history, SQL error)."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def label(self) -> str:
        return f"{self.version:03d}_{self.name}"

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path) -> list[Migration]:
    migrations: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_RE.fullmatch(path.name)
        if not match:
            raise MigrationError(f"{path}: migration files are named NNN_lower_snake.sql")
        migrations.append(Migration(int(match.group(1)), match.group(2), path.read_text()))
    migrations.sort(key=lambda m: m.version)
    versions = [m.version for m in migrations]
    if len(versions) != len(set(versions)):
        raise MigrationError(f"{directory}: two migrations share a version number")
    return migrations


def _check_schema(schema: str) -> None:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", schema):
        raise MigrationError(f"invalid schema name {schema!r}")


async def migrate(conn: asyncpg.Connection, schema: str, directory: Path) -> list[int]:
    """Apply pending migrations of ``schema``; return the versions applied now."""
    _check_schema(schema)
    migrations = discover(directory)
    declare_session_state(conn)  # an advisory lock and a session setting, both undone below
    timeout = await conn.fetchval("SELECT current_setting('statement_timeout')")
    await conn.execute("SELECT set_config('statement_timeout', '0', false)")
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        try:
            return await _apply_pending(conn, schema, migrations)
        finally:
            if not conn.is_closed():
                await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    finally:
        if not conn.is_closed():
            await conn.execute("SELECT set_config('statement_timeout', $1, false)", timeout)


async def _apply_pending(
    conn: asyncpg.Connection, schema: str, migrations: list[Migration]
) -> list[int]:
    """Apply what is missing; the caller holds the advisory lock."""
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    await conn.execute(
        f"""CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                checksum text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())"""
    )
    rows = await conn.fetch(f"SELECT version, checksum FROM {schema}.schema_migrations")
    done = {row["version"]: row["checksum"] for row in rows}
    for migration in migrations:
        if migration.version in done and done[migration.version] != migration.checksum:
            raise MigrationError(
                f"{schema} migration {migration.label} was edited after it was applied; "
                "add a new migration instead"
            )
    newest = max(done, default=0)
    pending = [m for m in migrations if m.version not in done]
    late = [m.label for m in pending if m.version < newest]
    if late:
        # Allowed on purpose: parts of a service number their files in separate ranges
        # (files 001-099, videos 100-...), so a lower number can arrive after a higher one.
        log.warning(
            "%s migration(s) %s are numbered below the applied %03d; applying them now",
            schema,
            ", ".join(late),
            newest,
        )
    applied_now: list[int] = []
    for migration in pending:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL search_path TO {schema}, public")
            try:
                await conn.execute(migration.sql)
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"{schema} migration {migration.label} failed: {exc}") from exc
            await conn.execute(
                f"INSERT INTO {schema}.schema_migrations (version, name, checksum) "
                "VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
        log.info("applied %s migration %s", schema, migration.label)
        applied_now.append(migration.version)
    return applied_now


async def pending(conn: asyncpg.Connection, schema: str, directory: Path) -> list[int]:
    """Versions not yet applied (all of them when the schema has no migrations table)."""
    _check_schema(schema)
    exists = await conn.fetchval("SELECT to_regclass($1)", f"{schema}.schema_migrations")
    known = {m.version for m in discover(directory)}
    if exists is None:
        return sorted(known)
    rows = await conn.fetch(f"SELECT version FROM {schema}.schema_migrations")
    return sorted(known - {row["version"] for row in rows})
