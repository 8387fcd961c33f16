"""``mediagrid worker``: job handlers that claim work from the jobs service over gRPC; and
``mediagrid jobs create|get|ls|watch|cancel|retry|stats``: the JobService from a terminal.

``jobs create --watch`` and ``jobs watch`` follow a job to its end with one line per change
(on stderr) and exit 0 only when it succeeded, so a script can wait for a job:
``mediagrid jobs create video.probe --payload @p.json --watch && ...``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import typer
from google.protobuf import json_format
from google.protobuf.message import Message
from mediagrid.jobs.v1 import job_pb2, job_service_pb2
from rich.console import Console
from rich.table import Table

from common.channels import open_channel
from common.cli_output import (
    OUTPUT,
    Output,
    emit,
    field_table,
    name_table,
    stderr,
    stdout,
    when,
)
from common.cli_support import address_option, connect, fail, run_client, token_option
from services.jobs import convert
from services.jobs.client import JobsClient
from services.jobs.states import FINAL, JobState

console = Console(stderr=True)
T = TypeVar("T")

jobs_app = typer.Typer(
    help="Jobs: create, follow, list, cancel and retry; queue statistics.", no_args_is_help=True
)
FINAL_STATES = frozenset(convert.state_to_proto(state) for state in FINAL)
# A state's map key in counts (``JOB_STATE_QUEUED``) -> the word people use (``queued``).
STATE_WORDS = {convert.state_name(state): state.value for state in JobState}
JOB_ARGUMENT = typer.Argument(..., help="jobs/{job} (or its id)")


batch_app = typer.Typer(
    help="Batches: many jobs created together, followed and cancelled as one.",
    no_args_is_help=True,
)
jobs_app.add_typer(batch_app, name="batch")


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")

    @app.command()
    def worker(
        types: str = typer.Option(
            "",
            "--types",
            help="Comma-separated job types to run (default: every declared type with a handler).",
        ),
        concurrency: int = typer.Option(0, "--concurrency", help="Handlers at once (0 = setting)."),
        address: str = typer.Option(
            "",
            "--address",
            help="Jobs service host:port (default: MEDIAGRID_JOBS_ADDRESS, else GRPC_HOST:PORT).",
        ),
        token: str = typer.Option(
            "", "--token", help="Bearer token (default MEDIAGRID_WORKER_TOKEN).", show_default=False
        ),
        api_key: str = typer.Option(
            "",
            "--api-key",
            help="API key of a service user (default MEDIAGRID_WORKER_API_KEY).",
            show_default=False,
        ),
        worker_id: str = typer.Option("", "--worker-id", help="Worker id (default host-pid-rand)."),
    ) -> None:
        """Run job handlers: claim jobs over gRPC until SIGTERM, then stop gracefully.

        Logs and telemetry are set up from the settings exactly as for ``serve``."""
        from common import gc_tuning
        from common.cli_session import server_address
        from common.cli_support import settings_or_exit
        from common.settings import ConfigurationError
        from common.telemetry import configure_telemetry
        from services.jobs.worker.main import run_worker, runnable_types
        from services.jobs.worker.runtime import UnknownJobType

        if token and api_key:
            console.print("[red]give --token or --api-key, not both[/red]")
            raise typer.Exit(2)
        settings = settings_or_exit(server_logs=True)
        gc_tuning.tune(settings.gc_gen0_threshold)
        telemetry = configure_telemetry(settings)
        try:
            wanted = [t.strip() for t in types.split(",") if t.strip()]
            asyncio.run(
                run_worker(
                    settings,
                    types=wanted or runnable_types(settings),
                    concurrency=concurrency or None,
                    address=server_address(settings, "jobs", address or None),
                    token=api_key or token or None,
                    worker_id=worker_id or None,
                )
            )
        except (UnknownJobType, ConfigurationError) as exc:
            # A bad job type declaration surfaces while the runtime loads the registry.
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
        finally:
            telemetry.shutdown()


# --- parsing ------------------------------------------------------------------------------


def job_name(value: str) -> str:
    """``jobs/ID`` or a bare ``ID`` -> ``jobs/ID``."""
    return value if value.startswith("jobs/") else f"jobs/{value}"


def state_name(state: int) -> str:
    """A job's state as people say it (``queued``): the domain state's value."""
    return convert.state_from_proto(state, "state").value


def parse_states(text: str) -> list[job_pb2.JobState.ValueType]:
    """``queued,running`` -> JobState values; ValueError names an unknown state."""
    states = []
    for word in filter(None, (w.strip().lower() for w in text.split(","))):
        try:
            states.append(convert.state_to_proto(JobState(word)))
        except ValueError:
            known = ", ".join(JobState)
            raise ValueError(f"unknown job state {word!r} (one of: {known})") from None
    return states


def parse_payload(text: str) -> dict[str, object]:
    """A JSON object, or ``@PATH`` of a file holding one; ValueError says what is wrong."""
    if not text:
        return {}
    where = ""
    if text.startswith("@"):
        where = f"{text[1:]}: "
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise ValueError(f"{where}cannot be read ({exc.strerror})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{where}must be a JSON object, not {type(value).__name__}")
    return value


def parse_specs(lines: Sequence[str]) -> list[job_pb2.JobSpec]:
    """JSON Lines, one JobSpec per line as in the proto's JSON form (``{"type": "noop",
    "payload": {...}, "priority": 2}``); blank lines are skipped. ValueError names the line."""
    specs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            specs.append(json_format.Parse(line, job_pb2.JobSpec()))
        except json_format.ParseError as exc:
            raise ValueError(f"line {number}: {exc}") from None
    if not specs:
        raise ValueError('no jobs: one JSON object per line, such as {"type": "noop"}')
    return specs


# --- rendering ----------------------------------------------------------------------------


def _progress(job: job_pb2.Job) -> str:
    percent = ""
    if job.progress_percent or job.state == job_pb2.JOB_STATE_RUNNING:
        percent = f"{job.progress_percent:.0f}%"
    return f"{percent} {job.progress_message}".strip()


def _state(job: job_pb2.Job) -> str:
    if job.state == job_pb2.JOB_STATE_QUEUED and job.queue_position:
        return f"queued (#{job.queue_position})"
    return state_name(job.state)


def job_table(jobs: Sequence[Message]) -> Table:
    table = name_table("name", "type", "state", "priority", "progress", "attempts", "created")
    for job in jobs:
        assert isinstance(job, job_pb2.Job)
        attempts = f"{job.attempts}/{job.max_attempts}" if job.max_attempts else str(job.attempts)
        table.add_row(
            job.name,
            job.type,
            _state(job),
            str(job.priority),
            _progress(job),
            attempts,
            when(job.create_time),
        )
    return table


def job_detail(jobs: Sequence[Message]) -> Table:
    """One job, every field that is set."""
    [job] = jobs
    assert isinstance(job, job_pb2.Job)
    rows = [
        ("name", job.name),
        ("type", job.type),
        ("owner", job.owner),
        ("state", _state(job)),
        ("priority", str(job.priority)),
        ("progress", _progress(job)),
        ("attempts", f"{job.attempts} of {job.max_attempts or 'unlimited'}"),
        ("worker", job.worker_id),
        ("batch", job.batch),
        ("request id", job.request_id),
        ("files", ", ".join(job.files)),
        ("created", when(job.create_time)),
        ("scheduled", when(job.schedule_time)),
        ("started", when(job.start_time)),
        ("finished", when(job.finish_time)),
        ("error", job.error),
    ]
    if job.HasField("payload"):
        rows.append(("payload", json.dumps(json_format.MessageToDict(job.payload))))
    if job.HasField("result"):
        rows.append(("result", json.dumps(json_format.MessageToDict(job.result))))
    return field_table(rows)


def _counts(batch: job_pb2.Batch) -> str:
    """``queued 3, succeeded 7``: the states some of the batch's jobs are in."""
    return ", ".join(
        f"{STATE_WORDS.get(key, key)} {n}" for key, n in sorted(batch.state_counts.items()) if n
    )


def batch_table(batches: Sequence[Message]) -> Table:
    [batch] = batches
    assert isinstance(batch, job_pb2.Batch)
    return field_table(
        (
            ("name", batch.name),
            ("display name", batch.display_name),
            ("owner", batch.owner),
            ("jobs", str(batch.total_jobs)),
            ("states", _counts(batch)),
            ("progress", f"{batch.progress_percent:.0f}%"),
            ("done", "yes" if batch.done else "no"),
            ("created", when(batch.create_time)),
        )
    )


def stats_table(stats: job_service_pb2.GetQueueStatsResponse) -> Table:
    table = Table()
    for column in ("type", "priority", "ready", "scheduled"):
        table.add_column(column)
    for depth in stats.depths:
        table.add_row(depth.type, str(depth.priority), str(depth.ready), str(depth.scheduled))
    return table


# --- running ------------------------------------------------------------------------------


def _call(address: str, token: str | None, body: Callable[[JobsClient], Awaitable[T]]) -> T:
    """Run ``body`` with a client; a failed call exits 1 with its status, Ctrl-C 130."""

    async def main() -> T:
        async with open_channel(address) as channel:
            metadata = (("authorization", f"Bearer {token}"),) if token else ()
            return await body(JobsClient(channel, metadata))

    return run_client(main(), address)


async def follow(client: JobsClient, name: str) -> job_pb2.Job:
    """Watch ``name`` to its final state, one line per change on stderr."""
    last: job_pb2.Job | None = None
    async for job in client.watch_job(name):
        last = job
        detail = ""
        if job.state == job_pb2.JOB_STATE_RUNNING:
            detail = _progress(job)
        elif job.state in FINAL_STATES and job.error:
            detail = job.error
        stderr.print(f"{when(job.update_time)}  {name}  {_state(job)}  {detail}".rstrip())
    return last if last is not None else await client.get_job(name)


def finish(job: job_pb2.Job, output: Output) -> None:
    """Print the job; exit 1 unless it succeeded (so scripts can wait on it)."""
    emit([job], output, job_detail, single=True)
    if job.state != job_pb2.JOB_STATE_SUCCEEDED:
        error = f": {job.error}" if job.error else ""
        stderr.print(f"[red]{job.name} {state_name(job.state)}[/red]{error}")
        raise typer.Exit(1)


def _one_job(
    name: str,
    address: str | None,
    token: str | None,
    output: Output,
    method: Callable[[JobsClient, str], Awaitable[job_pb2.Job]],
) -> None:
    """Call ``method`` on one job and print the job it answers with."""
    target, bearer = connect("jobs", address, token)
    job = _call(target, bearer, lambda client: method(client, job_name(name)))
    emit([job], output, job_detail, single=True)


def _bad(option: str, exc: ValueError) -> None:
    fail(f"{option}: {exc}", 2)


# --- commands -----------------------------------------------------------------------------


@jobs_app.command("create")
def create(
    job_type: str = typer.Argument(..., metavar="TYPE", help="a job type, e.g. video.probe"),
    payload: str = typer.Option("", "--payload", help="a JSON object, or @FILE holding one"),
    priority: int = typer.Option(0, "--priority", help="higher runs first"),
    files: list[str] = typer.Option([], "--file", help="files/{file} the job works on (repeat)"),
    request_id: str = typer.Option(
        "", "--request-id", help="idempotency key: the same id never creates a second job"
    ),
    max_attempts: int = typer.Option(0, "--max-attempts", help="0: the type's default"),
    delay: float = typer.Option(0, "--delay", help="seconds from now before it may start"),
    watch: bool = typer.Option(
        False, "--watch", help="follow it to its end; exit 1 unless it succeeds"
    ),
    address: str | None = address_option(),
    token: str | None = token_option(),
    output: Output = OUTPUT,
) -> None:
    """Create a job; prints its name (`J=$(mediagrid jobs create noop)`)."""
    try:
        data = parse_payload(payload)
    except ValueError as exc:
        _bad("--payload", exc)
    if delay < 0:
        fail("--delay: must not be negative", 2)
    target, bearer = connect("jobs", address, token)
    when = datetime.now(UTC) + timedelta(seconds=delay) if delay else None

    async def body(client: JobsClient) -> tuple[job_pb2.Job, job_pb2.Job | None]:
        job = await client.create_job(
            job_type,
            data,
            priority=priority,
            files=files,
            request_id=request_id or None,
            max_attempts=max_attempts,
            schedule_time=when,
        )
        if not watch:
            return job, None
        stderr.print(f"created {job.name}")
        return job, await follow(client, job.name)

    job, final = _call(target, bearer, body)
    if final is not None:
        finish(final, output)
    elif output is Output.table:
        typer.echo(job.name)
    else:
        emit([job], output, job_detail, single=True)


@jobs_app.command("get")
def get(
    name: str = JOB_ARGUMENT,
    address: str | None = address_option(),
    token: str | None = token_option(),
    output: Output = OUTPUT,
) -> None:
    """Show one job: state, queue position, progress, attempts, payload, result, error."""
    _one_job(name, address, token, output, JobsClient.get_job)


@jobs_app.command("watch")
def watch(
    name: str = JOB_ARGUMENT,
    address: str | None = address_option(),
    token: str | None = token_option(),
    output: Output = OUTPUT,
) -> None:
    """Follow a job to its end, one line per change; exit 0 only if it succeeded."""
    target, bearer = connect("jobs", address, token)
    finish(_call(target, bearer, lambda client: follow(client, job_name(name))), output)


@jobs_app.command("ls")
def ls(
    state: str = typer.Option("", "--state", help="comma-separated: queued,running,failed,..."),
    job_type: list[str] = typer.Option([], "--type", help="a job type (repeat for several)"),
    user: str = typer.Option("", "--user", help="users/{user} (default: you; admins: anyone)"),
    batch: str = typer.Option("", "--batch", help="batches/{batch}"),
    limit: int = typer.Option(100, "--limit", min=1, help="at most this many"),
    address: str | None = address_option(),
    token: str | None = token_option(),
    output: Output = OUTPUT,
) -> None:
    """List jobs, newest first."""
    try:
        states = parse_states(state)
    except ValueError as exc:
        _bad("--state", exc)
    target, bearer = connect("jobs", address, token)

    async def body(client: JobsClient) -> list[job_pb2.Job]:
        listing = client.list_jobs(
            states=states,
            types=job_type,
            owner=user,
            batch=batch,
            page_size=min(limit, 100),
            limit=limit,
        )
        return [job async for job in listing]

    emit(_call(target, bearer, body), output, job_table)


@jobs_app.command("cancel")
def cancel(
    name: str = JOB_ARGUMENT,
    address: str | None = address_option(),
    token: str | None = token_option(),
    output: Output = OUTPUT,
) -> None:
    """Cancel a job (a running one is stopped by its worker)."""
    _one_job(name, address, token, output, JobsClient.cancel_job)


@jobs_app.command("retry")
def retry(
    name: str = JOB_ARGUMENT,
    address: str | None = address_option(),
    token: str | None = token_option(),
    output: Output = OUTPUT,
) -> None:
    """Queue a failed, dead or cancelled job again."""
    _one_job(name, address, token, output, JobsClient.retry_job)


@jobs_app.command("stats")
def stats(
    job_type: list[str] = typer.Option([], "--type", help="a job type (repeat for several)"),
    address: str | None = address_option(),
    token: str | None = token_option(),
) -> None:
    """Queue depth per type and priority, running jobs, the oldest wait (admins, services)."""
    target, bearer = connect("jobs", address, token)
    found = _call(target, bearer, lambda client: client.queue_stats(job_type))
    wait = found.oldest_wait.ToTimedelta().total_seconds()
    typer.echo(f"running: {found.running}; oldest ready job waiting: {wait:.1f} s")
    for window in found.windows:
        span = window.window.ToTimedelta().total_seconds()
        typer.echo(
            f"last {span:.0f} s: {window.succeeded} succeeded, {window.failed} failed "
            f"({window.jobs_per_second:.2f} jobs/s)"
        )
    stdout().print(stats_table(found))


# --- batches ------------------------------------------------------------------------------

BATCH_ARGUMENT = typer.Argument(..., help="batches/{batch} (or its id)")


def batch_name(value: str) -> str:
    """``batches/ID`` or a bare ``ID`` -> ``batches/ID``."""
    return value if value.startswith("batches/") else f"batches/{value}"


def batch_succeeded(batch: job_pb2.Batch) -> bool:
    return batch.state_counts.get("JOB_STATE_SUCCEEDED", 0) == batch.total_jobs


async def follow_batch(client: JobsClient, name: str) -> job_pb2.Batch:
    """Watch the batch until every job finished, a line per change on stderr."""
    last: job_pb2.Batch | None = None
    async for batch in client.watch_batch(name):
        last = batch
        stderr.print(f"{name}  {batch.progress_percent:.0f}%  {_counts(batch)}")
    return last if last is not None else await client.get_batch(name)


def finish_batch(batch: job_pb2.Batch, output: Output) -> None:
    """Print the batch; exit 1 unless every job succeeded."""
    emit([batch], output, batch_table, single=True)
    if not batch_succeeded(batch):
        stderr.print(f"[red]{batch.name}: not every job succeeded[/red]")
        raise typer.Exit(1)


@batch_app.command("create")
def batch_create(
    source: str = typer.Argument(
        ..., metavar="FILE", help="JSON Lines, one job spec per line ('-': stdin)"
    ),
    display_name: str = typer.Option("", "--name", help="a name for people"),
    request_id: str = typer.Option(
        "", "--request-id", help="idempotency key: the same id never creates a second batch"
    ),
    watch: bool = typer.Option(
        False, "--watch", help="follow it to its end; exit 1 unless every job succeeds"
    ),
    address: str | None = address_option(),
    token: str | None = token_option(),
    output: Output = OUTPUT,
) -> None:
    """Create a batch from FILE; prints the batch's name (`-o json`: also its jobs' names)."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        fail(f"{source}: cannot be read ({exc.strerror})", 2)
    try:
        specs = parse_specs(text.splitlines())
    except ValueError as exc:
        _bad(source, exc)
    target, bearer = connect("jobs", address, token)

    async def body(
        client: JobsClient,
    ) -> tuple[job_service_pb2.CreateBatchResponse, job_pb2.Batch | None]:
        made = await client.create_batch(specs, display_name=display_name, request_id=request_id)
        if not watch:
            return made, None
        stderr.print(f"created {made.batch.name} ({len(made.job_names)} jobs)")
        return made, await follow_batch(client, made.batch.name)

    made, final = _call(target, bearer, body)
    if final is not None:
        finish_batch(final, output)
    elif output is Output.table:
        typer.echo(made.batch.name)
    else:
        emit([made], output, lambda _: Table(), single=True)


@batch_app.command("get")
def batch_get(
    name: str = BATCH_ARGUMENT,
    address: str | None = address_option(),
    token: str | None = token_option(),
    output: Output = OUTPUT,
) -> None:
    """Show a batch: its jobs' states and progress."""
    target, bearer = connect("jobs", address, token)
    batch = _call(target, bearer, lambda client: client.get_batch(batch_name(name)))
    emit([batch], output, batch_table, single=True)


@batch_app.command("watch")
def batch_watch(
    name: str = BATCH_ARGUMENT,
    address: str | None = address_option(),
    token: str | None = token_option(),
    output: Output = OUTPUT,
) -> None:
    """Follow a batch until every job finished; exit 0 only if every job succeeded."""
    target, bearer = connect("jobs", address, token)
    finish_batch(
        _call(target, bearer, lambda client: follow_batch(client, batch_name(name))), output
    )


@batch_app.command("cancel")
def batch_cancel(
    name: str = BATCH_ARGUMENT,
    address: str | None = address_option(),
    token: str | None = token_option(),
    output: Output = OUTPUT,
) -> None:
    """Cancel every job of a batch that has not finished."""
    target, bearer = connect("jobs", address, token)
    done = _call(target, bearer, lambda client: client.cancel_batch(batch_name(name)))
    stderr.print(f"cancelled {done.cancelled_count} jobs of {done.batch.name}")
    emit([done.batch], output, batch_table, single=True)
