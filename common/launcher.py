"""Process-level start-up for the CLI: embedded dependencies when unconfigured, then the suite."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from common import db
from common.registry import resolve
from common.runtime import migrate_all, running_suite
from common.server import serve_until_signalled
from common.settings import Settings

log = logging.getLogger("mediagrid.launcher")


async def serve_forever(settings: Settings, names: Sequence[str]) -> None:
    async with running_suite(settings, names) as (server, _ctx):
        await serve_until_signalled(server)


async def migrate_only(settings: Settings, names: Sequence[str]) -> dict[str, list[int]]:
    pool = await db.create_pool(settings)
    try:
        return await migrate_all(pool, resolve(list(names)))
    finally:
        await pool.close()
