"""``mediagrid legacy import-files|import-redis``: move the old design's data (docs/migration.md).

Exit codes: 0 everything imported; 1 a file failed or a record was rejected (invalid or
conflicting; see the printed table), or a dependency failed; 2 bad arguments/configuration.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from common.settings import Settings

legacy_app = typer.Typer(
    help="Import data of the pre-mediagrid system (local files, Redis).", no_args_is_help=True
)
console = Console(stderr=True, soft_wrap=True)
RUN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def register(app: typer.Typer) -> None:
    app.add_typer(legacy_app, name="legacy")


def _out() -> Console:
    out = Console()
    return out if out.is_terminal else Console(width=200)


def default_run_name(source: Path) -> str:
    """``<directory name>-<8 hex of its absolute path>``: the same directory, the same run."""
    resolved = source.resolve()
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", resolved.name).strip("-._") or "root"
    return f"{stem[:80]}-{hashlib.sha256(str(resolved).encode()).hexdigest()[:8]}"


def _size(n: int) -> str:
    if n < 1024:
        return f"{n:,} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:,.1f} {unit} ({n:,} B)"


@contextlib.asynccontextmanager
async def _database(s3: bool) -> AsyncIterator[tuple[asyncpg.Pool, Settings]]:
    """Pool on the configured (or embedded) database, with every migration applied."""
    from common import db
    from common.cli_support import fail, settings_or_exit
    from common.embedded import embedded_dependencies
    from common.registry import resolve
    from common.runtime import migrate_all

    settings = settings_or_exit()
    if s3 and settings.s3_is_embedded and settings.embedded_s3 == "moto":
        fail(
            "MEDIAGRID_EMBEDDED_S3=moto keeps objects in memory: the imported files would be "
            "lost when this command exits (unset it for the embedded SeaweedFS, or set "
            "MEDIAGRID_S3_ENDPOINT_URL / AWS credentials)",
            2,
        )
    # The embedded SeaweedFS keeps its objects in MEDIAGRID_DATA_DIR/s3 (the one `mediagrid
    # serve` uses, joined when it runs): what is imported here is there when the suite starts.
    async with embedded_dependencies(settings, s3=s3) as effective:
        pool = await db.create_pool(effective)
        try:
            await migrate_all(pool, resolve(["all"]))
            yield pool, effective
        finally:
            await pool.close()


@legacy_app.command("import-files")
def import_files(
    source: Path = typer.Option(
        None, "--source", file_okay=False, help="the old upload directory: DIR/<user-id>/..."
    ),
    owner: str = typer.Option(
        None, "--owner", help="users/{id}: every file belongs to this user (flat directory)"
    ),
    run_name: str = typer.Option(
        None, "--run", help="run name (default: from the directory's path); re-run to resume"
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="list what would be imported"),
    rollback: str = typer.Option(
        None, "--rollback", help="remove every file and S3 object run RUN created", metavar="RUN"
    ),
    verify: str = typer.Option(
        "engine",
        "--verify",
        help="engine: the upload engine's SHA-256 and size; readback: read each object back",
    ),
    concurrency: int = typer.Option(4, "--concurrency", min=1, max=64),
) -> None:
    """Upload a local directory tree into S3 as mediagrid files, resumably."""
    from common.cli_support import fail, run

    if rollback is None and source is None:
        fail("give --source DIR (or --rollback RUN)", 2)
    if verify not in ("engine", "readback"):
        fail("--verify must be engine or readback", 2)
    name = rollback or run_name or default_run_name(source)
    if not RUN_NAME_RE.fullmatch(name):
        fail(f"--run {name!r}: use 1-100 letters, digits, '.', '_' or '-'", 2)

    async def main() -> int:
        from common.aws import AwsClients
        from services.files.repository import FileRepository
        from services.files.storage import Storage
        from services.migration.files_import import FileImporter, FileResult, Outcome
        from services.migration.repository import LegacyRepository
        from services.users.activity import DatabaseActivityRecorder
        from services.users.repository import UserRepository

        async with _database(s3=True) as (pool, effective):
            storage = await Storage.open(
                AwsClients(effective), effective.bucket("files"), create=effective.is_local
            )
            try:
                users = UserRepository(pool)

                def shown(result: FileResult) -> None:
                    if result.outcome == "failed":
                        console.print(
                            f"[red]failed[/red] {result.source_path}: {result.reason}",
                            highlight=False,
                        )

                importer = FileImporter(
                    settings=effective,
                    files=FileRepository(pool),
                    storage=storage,
                    legacy=LegacyRepository(pool),
                    users=users,
                    activity=DatabaseActivityRecorder(users),
                    verify="readback" if verify == "readback" else "engine",
                    concurrency=concurrency,
                    on_result=shown,
                )
                if rollback:
                    undone = await importer.rollback(rollback)
                    await DatabaseActivityRecorder(users).record(
                        "legacy.rollback-files",
                        f"legacy-runs/{rollback}",
                        {"files": str(undone.files_removed)},
                    )
                    table = Table(title=f"rollback of run {rollback}")
                    table.add_column("removed")
                    table.add_column("count", justify="right")
                    table.add_row("file records", str(undone.files_removed))
                    table.add_row("S3 object versions", str(undone.objects_removed))
                    table.add_row("open uploads aborted", str(undone.uploads_aborted))
                    _out().print(table)
                    return 0
                report = await importer.run(source, name, owner=owner, dry_run=dry_run)
            finally:
                await storage.close()
            if not dry_run:
                await DatabaseActivityRecorder(users).record(
                    "legacy.import-files",
                    f"legacy-runs/{name}",
                    {
                        "imported": str(report.count("imported")),
                        "failed": str(len(report.failures)),
                    },
                )
        title = f"legacy import-files run {name}" + (" (dry run)" if dry_run else "")
        summary = Table(title=title)
        summary.add_column("outcome")
        summary.add_column("files", justify="right")
        summary.add_column("bytes", justify="right")
        outcomes: tuple[Outcome, ...] = ("planned", "imported", "skipped", "failed")
        for outcome in outcomes:
            if outcome == "planned" and not dry_run:
                continue
            summary.add_row(
                outcome,
                str(report.count(outcome)),
                _size(report.bytes(outcome)),
            )
        _out().print(summary)
        if report.failures:
            failures = Table(title="failures")
            failures.add_column("source path", overflow="fold")
            failures.add_column("reason", overflow="fold")
            for failure in report.failures:
                failures.add_row(failure.source_path, failure.reason)
            _out().print(failures)
            console.print(
                f"{len(report.failures)} file(s) failed; fix them and run again with "
                f"--run {name} to resume, or --rollback {name} to undo the run",
                highlight=False,
            )
            return 1
        return 0

    code = run(main())
    if code:
        raise typer.Exit(code)


@legacy_app.command("import-redis")
def import_redis(
    url: str = typer.Option("redis://127.0.0.1:6379/0", "--url", help="the legacy Redis"),
    prefix: str = typer.Option("", "--prefix", help="key prefix of the legacy data, if any"),
    resume: bool = typer.Option(False, "--resume", help="continue from the saved SCAN cursor"),
    batch: int = typer.Option(500, "--batch", min=1, max=10_000, help="SCAN COUNT per batch"),
    limit: int = typer.Option(
        None, "--limit", min=1, help="stop after this many records (resume later)"
    ),
) -> None:
    """Import legacy users and jobs from Redis into PostgreSQL, resumably."""
    from common.cli_support import run

    async def main() -> int:
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        from common.errors import Unavailable
        from services.jobs.repository import JobRepository
        from services.migration.redis_import import RedisImporter
        from services.migration.repository import LegacyRepository
        from services.users.activity import DatabaseActivityRecorder
        from services.users.repository import UserRepository

        async with _database(s3=False) as (pool, effective):
            client = aioredis.from_url(url, decode_responses=False)
            legacy = LegacyRepository(pool)
            try:
                importer = RedisImporter(
                    settings=effective,
                    redis=client,
                    url=url,
                    prefix=prefix,
                    users=UserRepository(pool),
                    jobs=JobRepository(pool),
                    legacy=legacy,
                    batch=batch,
                    limit=limit,
                )
                report = await importer.run(resume=resume)
            except RedisError as exc:
                raise Unavailable(f"Redis {url}: {exc}", reason="REDIS_UNAVAILABLE") from exc
            finally:
                await client.aclose()
            await DatabaseActivityRecorder(UserRepository(pool)).record(
                "legacy.import-redis",
                "legacy-sources/redis",
                {
                    "source": report.source,
                    "records": str(report.records),
                    "rejected": str(len(report.rejects)),
                },
            )
        table = Table(title=f"legacy import-redis {report.source}")
        for column in ("phase", "imported", "already imported", "rejected"):
            table.add_column(column, justify="right" if column != "phase" else "left")
        for phase, counts in report.counts.items():
            table.add_row(phase, str(counts.imported), str(counts.already), str(counts.rejected))
        _out().print(table)
        if report.rejects:
            rejects = Table(title="rejects (also in users.legacy_rejects)")
            for column in ("key", "kind", "reason", "detail"):
                rejects.add_column(column, overflow="fold")
            for r in report.rejects:
                rejects.add_row(r.key, r.kind, r.reason, r.detail)
            _out().print(rejects)
        if report.stopped_early:
            console.print(f"stopped after {report.records} records; continue with --resume")
        return 1 if any(r.kind != "skipped" for r in report.rejects) else 0

    code = run(main())
    if code:
        raise typer.Exit(code)
