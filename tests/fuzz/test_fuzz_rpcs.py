"""Fuzzing every RPC of the suite with requests drawn from the protobuf descriptors.

The whole suite runs once for the module, in-process (real users service, PostgreSQL, moto
S3), on an event loop in a background thread; the test calls it over a real channel with raw
request bytes (``tests/support/proto_strategies.py``: extreme scalars, NUL, control
characters, invalid UTF-8, unknown enum numbers, Timestamps/Durations past their limits,
NaN/Inf and deep Structs, odd FieldMasks, plausible and mangled resource names). Each
example is sent by a regular user, an administrator, a service or an anonymous caller.

For every method of every service (one test per method), each example must:

- never end in INTERNAL or UNKNOWN; DEADLINE_EXCEEDED only for the Watch* streams, which
  may legitimately wait (server streams are read for a few messages under a short deadline);
- leave no ERROR log record with a traceback (a handler on the root logger for the duration);
- change nothing when it is rejected: every table of the schemas users, jobs and files (row
  count and a hash of the rows; session last-use times and login throttles excluded, as
  authentication and failed logins move them on any call) and the S3 listing (object
  versions, delete markers, multipart uploads) are the same before and after a non-OK call.

Examples per method: ``FUZZ_EXAMPLES`` (default 6, enough for `make test`); for a
deeper run: ``FUZZ_EXAMPLES=200 pytest tests/fuzz``. Generation is derandomized
and the example database is off, so a run is reproducible; ``FUZZ_SEED=N`` draws other
examples (reproducible with the same N). A method's test goes through all
its examples and then fails with each distinct problem once, with the example that showed it
(caller, requests in text format, and the raw bytes appended for invalid UTF-8); with
``FUZZ_REPORT=FILE`` every problem is also appended to FILE as a JSON line.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import boto3
import grpc
import pytest
from botocore.config import Config
from google.protobuf import duration_pb2
from google.protobuf.descriptor import MethodDescriptor
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from mediagrid.files.v1 import (
    file_pb2,
    file_service_pb2,
    file_service_pb2_grpc,
    video_service_pb2,
    video_service_pb2_grpc,
)
from mediagrid.jobs.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)
from mediagrid.users.v1 import user_service_pb2, user_service_pb2_grpc

from common.runtime import running_suite
from common.settings import Settings
from services.users.passwords import Passwords
from services.users.repository import UserRepository
from services.users.sessions import SessionManager
from tests.support.auth import bearer
from tests.support.proto_strategies import Names, WireRequest, requests
from tests.support.stores import run_admin, suite_settings, with_database

T = TypeVar("T")

# Not MEDIAGRID_*: tests/conftest.py removes those so that a developer's shell cannot leak in.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6"))
SEED = os.environ.get("FUZZ_SEED")

SERVICE_MODULES = (
    user_service_pb2,
    job_service_pb2,
    worker_service_pb2,
    file_service_pb2,
    video_service_pb2,
)
METHODS: list[MethodDescriptor] = [
    method
    for module in SERVICE_MODULES
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]

CALLERS = ("user", "user", "user", "anonymous", "admin", "service")
UNARY_DEADLINE = 15.0
STREAM_DEADLINE = 3.0
MAX_RESPONSES = 3
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
BUCKET_PREFIX = "mgfuzz"
SCHEMAS = ("users", "jobs", "files")


def _identity(data: bytes) -> bytes:
    return data


def _path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


# --- the suite on a loop of its own --------------------------------------------------------


class LoopThread:
    """An event loop in a daemon thread; ``run()`` executes a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-suite", daemon=True)
        self.thread.start()

    def run(self, coro: Awaitable[T], timeout: float = 60) -> T:
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(
            coro,  # type: ignore[arg-type]
            self.loop,
        )
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise TimeoutError(f"the suite's loop did not answer:\n{self.tasks()}") from None

    def tasks(self) -> str:
        """Where every task of the loop waits (for a hang's report)."""
        lines = []
        for task in asyncio.all_tasks(self.loop):
            frames = task.get_stack(limit=6)
            where = " <- ".join(
                f"{f.f_code.co_filename.split('/')[-1]}:{f.f_lineno}" for f in frames
            )
            lines.append(f"{task.get_name()}: {where}")
        return "\n".join(sorted(lines))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class ErrorLog(logging.Handler):
    """Collects ERROR records that carry a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self.guard = threading.Lock()  # not `lock`: Handler.handle() holds that one

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.stack_info:
            with self.guard:
                self.records.append(record)

    def take(self) -> list[logging.LogRecord]:
        with self.guard:
            taken, self.records = self.records, []
        return taken


def _describe(record: logging.LogRecord) -> str:
    exc = record.exc_info[1] if record.exc_info else None
    what = f"{type(exc).__name__}: {exc}" if exc is not None else "stack"
    return f"{record.name}: {record.getMessage()} -> {what}"[:600]


@dataclass
class Identity:
    kind: str  # user, admin, service, or victim (a second user)
    user_id: str = ""
    serial: int = 0


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str = ""
    reason: str = ""
    cut: bool = False  # the client stopped reading a stream that was still going

    def __str__(self) -> str:
        cut = " (cut by the client)" if self.cut else ""
        return f"{self.code.name} {self.reason} {self.details[:300]!r}{cut}"


@dataclass
class FuzzSuite:
    loop: LoopThread
    settings: Settings
    address: str
    ctx: Any
    admin_dsn: str
    database: str
    names: dict[str, list[str]] = field(default_factory=dict)
    identities: dict[str, Identity] = field(default_factory=dict)
    sessions_seen: dict[str, bool] = field(default_factory=dict)
    channel: grpc.Channel | None = None
    conn: asyncpg.Connection | None = None
    snapshot_sql: str = ""
    s3: Any = None

    # --- principals ---------------------------------------------------------------------
    async def _sessions(self) -> SessionManager:
        repository = UserRepository(self.ctx.pool)
        return SessionManager(repository, self.settings, Passwords.from_settings(self.settings))

    async def _token(self, kind: str) -> str:
        """A fresh session of a live principal of ``kind`` (recreated if a call removed it)."""
        repository = UserRepository(self.ctx.pool)
        identity = self.identities.setdefault(kind, Identity(kind))
        user = None
        if identity.user_id:
            with contextlib.suppress(Exception):
                user = await repository.get_user(identity.user_id)
        role = "user" if kind == "victim" else kind
        if user is None or user.status != "active" or user.role != role:
            identity.serial += 1
            user = await repository.create_user(
                email=f"fuzz-{kind}-{identity.serial}-{uuid.uuid4().hex[:6]}@example.com",
                display_name=f"fuzz {kind}",
                role=role,
                password_hash=None,
            )
            identity.user_id = user.id
            self.names.setdefault("users", []).append(user.name)
            self.names.setdefault("emails", []).append(user.email)
        token, session = await (await self._sessions()).open_session(user.id)
        if identity.serial and not self.sessions_seen.get(user.id):
            self.sessions_seen[user.id] = True  # one real session name per principal suffices
            self.names.setdefault("sessions", []).append(session.name)
        return token

    def metadata(self, kind: str) -> tuple[tuple[str, str], ...]:
        if kind == "anonymous":
            return ()
        return bearer(self.loop.run(self._token(kind)))

    # --- state --------------------------------------------------------------------------
    async def _prepare_snapshot(self) -> None:
        self.conn = await asyncpg.connect(self.settings.database_dsn())
        rows = await self.conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema = ANY($1::text[]) AND table_type = 'BASE TABLE'"
            " ORDER BY 1, 2",
            list(SCHEMAS),
        )
        parts = []
        for row in rows:
            schema, table = row["table_schema"], row["table_name"]
            if _volatile_table(schema, table):
                continue
            dropped = "".join(f" - '{c}'" for c in VOLATILE_COLUMNS.get(f"{schema}.{table}", ()))
            parts.append(
                f"SELECT '{schema}.{table}' AS t, count(*) AS n,"
                f" md5(coalesce(string_agg(md5((to_jsonb(r){dropped})::text), ','"
                f" ORDER BY md5((to_jsonb(r){dropped})::text)), '')) AS h"
                f' FROM "{schema}"."{table}" r'
            )
        self.snapshot_sql = " UNION ALL ".join(parts)

    async def _db_state(self) -> dict[str, tuple[int, str]]:
        assert self.conn is not None
        rows = await self.conn.fetch(self.snapshot_sql)
        return {row["t"]: (row["n"], row["h"]) for row in rows}

    def _s3_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for bucket in self.s3.list_buckets().get("Buckets", []):
            name = bucket["Name"]
            if not name.startswith(BUCKET_PREFIX):
                continue
            versions = self.s3.list_object_versions(Bucket=name)
            state[name] = (
                sorted(
                    (v["Key"], v["VersionId"], v.get("Size"), v.get("ETag"), v.get("IsLatest"))
                    for v in versions.get("Versions", [])
                ),
                sorted((m["Key"], m["VersionId"]) for m in versions.get("DeleteMarkers", [])),
                sorted(
                    (u["Key"], u["UploadId"])
                    for u in self.s3.list_multipart_uploads(Bucket=name).get("Uploads", [])
                ),
            )
        return state

    def snapshot(self) -> tuple[dict[str, tuple[int, str]], dict[str, Any]]:
        return self.loop.run(self._db_state()), self._s3_state()


# Tables any call may change: failed logins are counted whatever the outcome.
def _volatile_table(schema: str, table: str) -> bool:
    return schema == "users" and ("login" in table or "throttle" in table)


# Columns any authenticated call may move (the session's last use is touched on use).
VOLATILE_COLUMNS: dict[str, tuple[str, ...]] = {"users.sessions": ("last_use_time",)}


def _diff(before: Any, after: Any) -> list[str]:
    (db_before, s3_before), (db_after, s3_after) = before, after
    changed = [
        f"{table}: rows {db_before.get(table, (0, ''))[0]} -> {db_after.get(table, (0, ''))[0]}"
        for table in sorted(set(db_before) | set(db_after))
        if db_before.get(table) != db_after.get(table)
    ]
    changed += [
        f"s3 bucket {bucket} changed"
        for bucket in sorted(set(s3_before) | set(s3_after))
        if s3_before.get(bucket) != s3_after.get(bucket)
    ]
    return changed


# --- calls ---------------------------------------------------------------------------------


def _outcome_of(exc: grpc.RpcError) -> Outcome:
    code = exc.code()
    reason = ""
    with contextlib.suppress(Exception):
        status = rpc_status.from_call(exc)
        for detail in status.details if status else ():
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                reason = info.reason
    return Outcome(code, exc.details() or "", reason)


def invoke(
    channel: grpc.Channel,
    method: MethodDescriptor,
    messages: Sequence[WireRequest],
    metadata: Sequence[tuple[str, str]],
) -> Outcome:
    path = _path(method)
    raw = [m.raw() for m in messages]
    kwargs: dict[str, Any] = {"request_serializer": _identity, "response_deserializer": _identity}
    try:
        if not method.client_streaming and not method.server_streaming:
            channel.unary_unary(path, **kwargs)(raw[0], metadata=metadata, timeout=UNARY_DEADLINE)
            return Outcome(grpc.StatusCode.OK)
        if method.client_streaming and not method.server_streaming:
            channel.stream_unary(path, **kwargs)(
                iter(raw), metadata=metadata, timeout=UNARY_DEADLINE
            )
            return Outcome(grpc.StatusCode.OK)
        if method.client_streaming:
            call = channel.stream_stream(path, **kwargs)(
                iter(raw), metadata=metadata, timeout=UNARY_DEADLINE
            )
            limit = 100  # an upload's progress messages and its file
        else:
            call = channel.unary_stream(path, **kwargs)(
                raw[0], metadata=metadata, timeout=STREAM_DEADLINE
            )
            limit = MAX_RESPONSES
        for count, _ in enumerate(call, start=1):
            if count >= limit:
                call.cancel()
                return Outcome(grpc.StatusCode.OK, cut=True)
        return Outcome(grpc.StatusCode.OK)
    except grpc.RpcError as exc:
        return _outcome_of(exc)


@st.composite
def fuzz_calls(
    draw: Callable[..., Any], method: MethodDescriptor, names: Names
) -> tuple[str, list[WireRequest]]:
    caller = draw(st.sampled_from(CALLERS))
    count = draw(st.integers(1, 3)) if method.client_streaming else 1
    return caller, [draw(requests(method.input_type, names)) for _ in range(count)]


# --- set-up: principals and a few real resources for the names to hit ------------------------


def _seed(suite: FuzzSuite) -> None:
    """Create files, jobs, a batch, an upload, a video, a grant, an API key and a lease to aim at."""
    assert suite.channel is not None
    channel, names = suite.channel, suite.names

    def add(kind: str, name: str) -> None:
        names.setdefault(kind, []).append(name)

    user, victim = suite.metadata("user"), suite.metadata("victim")
    files = file_service_pb2_grpc.FileServiceStub(channel)
    videos = video_service_pb2_grpc.VideoServiceStub(channel)
    jobs = job_service_pb2_grpc.JobServiceStub(channel)
    workers = worker_service_pb2_grpc.WorkerServiceStub(channel)
    users = user_service_pb2_grpc.UserServiceStub(channel)

    def upload(md: Any, content_type: str, data: bytes, stub: Any, message: Any) -> None:
        header = file_pb2.UploadHeader(
            display_name="seed", content_type=content_type, size_bytes=len(data)
        )
        first = message(header=header)
        rest = message(data=data)
        for response in stub(iter([first, rest]), metadata=md, timeout=30):
            if response.HasField("file"):
                add("files", response.file.name)
                add("versions", response.file.version_id)
                if content_type.startswith("video/"):
                    add("videos", "videos/" + response.file.name.removeprefix("files/"))

    upload(user, "text/plain", b"hello", files.Upload, file_service_pb2.UploadRequest)
    upload(victim, "text/plain", b"secret", files.Upload, file_service_pb2.UploadRequest)
    upload(
        user,
        "video/mp4",
        b"\x00\x00\x00\x18ftypmp42" * 4,
        videos.UploadVideo,
        video_service_pb2.UploadVideoRequest,
    )
    url = files.CreateUploadUrl(
        file_service_pb2.CreateUploadUrlRequest(
            header=file_pb2.UploadHeader(
                display_name="u",
                content_type="text/plain",
                size_bytes=3,
                sha256=hashlib.sha256(b"abc").hexdigest(),
            )
        ),
        metadata=user,
    )
    add("uploads", url.upload)
    job = jobs.CreateJob(
        job_service_pb2.CreateJobRequest(job=job_pb2.JobSpec(type="noop")), metadata=user
    ).job
    add("jobs", job.name)
    batch = jobs.CreateBatch(
        job_service_pb2.CreateBatchRequest(
            display_name="b", jobs=[job_pb2.JobSpec(type="noop"), job_pb2.JobSpec(type="noop")]
        ),
        metadata=user,
    )
    add("batches", batch.batch.name)
    names["jobs"].extend(batch.job_names)
    claimed = workers.ClaimJobs(
        worker_service_pb2.ClaimJobsRequest(
            worker_id="fuzz-worker",
            types=["noop"],
            max_jobs=2,
            lease_duration=duration_pb2.Duration(seconds=600),
        ),
        metadata=suite.metadata("service"),
    )
    for claim in claimed.jobs:
        add("leases", claim.lease_id)
    grant = users.GrantPermission(
        user_service_pb2.GrantPermissionRequest(
            parent=names["users"][0], permission="files.read", resource=names["files"][1]
        ),
        metadata=suite.metadata("admin"),
    )
    add("grants", grant.grant.name)
    service = users.Authenticate(
        user_service_pb2.AuthenticateRequest(
            token=suite.metadata("service")[0][1][len("Bearer ") :]
        )
    ).principal.user
    key = users.CreateApiKey(
        user_service_pb2.CreateApiKeyRequest(parent=service), metadata=suite.metadata("admin")
    )
    add("apiKeys", key.api_key.name)


def _settings(database_dsn: str, s3_endpoint: str) -> Settings:
    return suite_settings(
        database_dsn,
        s3_endpoint,
        s3_create_buckets=True,
        bucket_prefix=BUCKET_PREFIX,
        # A ClaimJobs wait is capped by this: a drawn wait of hours must not hold an example.
        job_claim_max_wait_seconds=1.0,
        # Sweeps and the lease reaper would change rows between the snapshots of an example.
        job_reaper_interval_seconds=3600,
        job_retention_interval_seconds=7 * 24 * 3600,
        users_sweep_interval_seconds=86_400,
        upload_sweep_interval_seconds=86_400,
    )


@pytest.fixture(scope="module")
def fuzz_suite(pg_admin_dsn: str, template_db: str, s3_endpoint: str) -> Iterator[FuzzSuite]:
    loop = LoopThread()
    stack = contextlib.AsyncExitStack()
    database = f"mg_fuzz_{uuid.uuid4().hex[:12]}"
    loop.run(run_admin(pg_admin_dsn, f"CREATE DATABASE {database} TEMPLATE {template_db}"))
    settings = _settings(with_database(pg_admin_dsn, database), s3_endpoint)
    server, ctx = loop.run(stack.enter_async_context(running_suite(settings, ("all",), port=0)))
    suite = FuzzSuite(loop, settings, server.address, ctx, pg_admin_dsn, database)
    try:
        suite.channel = grpc.insecure_channel(server.address)
        suite.s3 = boto3.client(
            "s3",
            endpoint_url=s3_endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name=settings.aws_region,
            config=Config(s3={"payload_signing_enabled": False}),
        )
        for kind in ("user", "victim", "admin", "service"):
            suite.metadata(kind)
        _seed(suite)
        loop.run(suite._prepare_snapshot())
        yield suite
    finally:
        with contextlib.suppress(Exception):
            if suite.channel is not None:
                suite.channel.close()
            if suite.conn is not None:
                loop.run(suite.conn.close())
        loop.run(stack.aclose())
        loop.run(run_admin(pg_admin_dsn, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        loop.close()


@pytest.fixture(scope="module")
def error_log() -> Iterator[ErrorLog]:
    handler = ErrorLog()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=SEED is None,
    database=None,
    deadline=None,
    # Problems are collected, not raised (see test): there is nothing to shrink.
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)


@pytest.mark.timeout(max(120, EXAMPLES * 3))
@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.full_name.removeprefix("mediagrid."))
def test_rpc_survives_hostile_requests(
    method: MethodDescriptor, fuzz_suite: FuzzSuite, error_log: ErrorLog
) -> None:
    # A copy: the pool grows when a call removes a principal, and Hypothesis needs the same
    # choices to draw the same values.
    names = Names({kind: tuple(found) for kind, found in fuzz_suite.names.items()})
    assert fuzz_suite.channel is not None
    channel = fuzz_suite.channel

    findings: list[dict[str, str]] = []

    @FUZZ_SETTINGS
    @given(call=fuzz_calls(method, names))
    def check(call: tuple[str, list[WireRequest]]) -> None:
        caller, messages = call
        metadata = fuzz_suite.metadata(caller)
        error_log.take()
        before = fuzz_suite.snapshot()
        outcome = invoke(channel, method, messages, metadata)
        after = fuzz_suite.snapshot()  # also lets late log records of the call arrive
        problems = []
        if outcome.code in NEVER:
            problems.append(f"status {outcome}")
        if outcome.code == grpc.StatusCode.DEADLINE_EXCEEDED and not method.name.startswith(
            "Watch"
        ):
            problems.append(f"no answer within the deadline: {outcome}")
        problems += [f"logged a traceback: {_describe(r)}" for r in error_log.take()]
        if outcome.code != grpc.StatusCode.OK and not outcome.cut:
            changed = _diff(before, after)
            if changed:
                problems.append(f"rejected ({outcome}) but changed state: {'; '.join(changed)}")
        example = f"as {caller}: {messages!r}"
        findings.extend(
            {"method": _path(method), "problem": p, "example": example} for p in problems
        )

    if SEED is not None:
        check = seed(int(SEED))(check)
    check()
    _report(findings)
    distinct: dict[str, dict[str, str]] = {}
    for finding in findings:
        distinct.setdefault(_signature(finding["problem"]), finding)
    assert not distinct, (
        f"{len(findings)} problems in {_path(method)}, distinct ones:\n"
        + "\n".join(f"- {f['problem']}\n  example {f['example'][:1500]}" for f in distinct.values())
    )


def _signature(problem: str) -> str:
    """A problem without its ids and numbers: one line per kind of failure."""
    return re.sub(r"[0-9]+", "N", re.sub(r"[0-9a-f]{32}", "<id>", problem))[:200]


def _report(findings: Sequence[dict[str, str]]) -> None:
    """Append the findings to ``FUZZ_REPORT`` (JSON lines) when it names a file."""
    path = os.environ.get("FUZZ_REPORT")
    if path and findings:
        with open(path, "a", encoding="utf-8") as out:
            for finding in findings:
                out.write(json.dumps(finding, ensure_ascii=False) + "\n")


def test_every_service_of_the_suite_is_fuzzed() -> None:
    services = {method.containing_service.full_name for method in METHODS}
    assert services == {
        "mediagrid.users.v1.UserService",
        "mediagrid.jobs.v1.JobService",
        "mediagrid.jobs.v1.WorkerService",
        "mediagrid.files.v1.FileService",
        "mediagrid.files.v1.VideoService",
    }
    assert len(METHODS) >= 65


def test_the_oracles_see_a_change_and_a_traceback(
    fuzz_suite: FuzzSuite, error_log: ErrorLog
) -> None:
    """The snapshot notices an accepted call's rows and objects; the log handler a traceback."""
    assert fuzz_suite.channel is not None
    before = fuzz_suite.snapshot()
    header = file_pb2.UploadHeader(display_name="probe", content_type="text/plain", size_bytes=2)
    requests_ = [
        file_service_pb2.UploadRequest(header=header),
        file_service_pb2.UploadRequest(data=b"ok"),
    ]
    stub = file_service_pb2_grpc.FileServiceStub(fuzz_suite.channel)
    list(stub.Upload(iter(requests_), metadata=fuzz_suite.metadata("user"), timeout=30))
    changed = _diff(before, fuzz_suite.snapshot())
    assert any(line.startswith("files.files") for line in changed), changed
    assert any(line.startswith("s3 bucket") for line in changed), changed

    error_log.take()
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("mediagrid.probe").exception("handler failed")
    logging.getLogger("mediagrid.probe").error("no traceback here")
    assert [_describe(r) for r in error_log.take()] == [
        "mediagrid.probe: handler failed -> RuntimeError: boom"
    ]
