"""Job types are declared capabilities: who may create each, its payload, priority and run time.

Rules, in order, for CreateJob and every job of CreateBatch: known type (UNKNOWN_JOB_TYPE),
caller kind admitted (JOB_TYPE_NOT_ALLOWED), payload schema (INVALID_PAYLOAD), priority
within the caller's and the type's range (PRIORITY_OUT_OF_RANGE).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st
from mediagrid.jobs.v1 import job_pb2, job_service_pb2
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.context import Principal
from common.errors import DomainError, InvalidArgument, PermissionDenied
from common.grpc_errors import bad_request, error_info
from common.settings import (
    DEMO_HANDLERS_MODULE,
    ConfigurationError,
    JobTypeSetting,
    Settings,
)
from services.jobs import job_types
from services.jobs.job_types import EVERYONE, INTERNAL, JobType, JobTypeRegistry, check_specs
from services.jobs.models import JobSpec
from services.jobs.worker.api import HandlerSpec
from services.jobs.worker.main import handler_modules
from services.jobs.worker.runtime import WorkerRuntime
from tests.jobs.jobs_support import OWNER, Jobs, JobsFactory, declare
from tests.support.auth import bearer
from tests.support.hypo import relaxed

ROOT = Path(__file__).resolve().parents[2]
TEST_SETTINGS = Settings(environment="test")
PROD_SETTINGS = Settings(environment="prod", database_url="postgresql://u@db.example/mediagrid")
# The types the code declares (demo types on, as in dev/test), without the tests' own.
DECLARED = {t.name for t in job_types.registry(TEST_SETTINGS)}

OK = grpc.StatusCode.OK
DENIED = grpc.StatusCode.PERMISSION_DENIED
CALLERS = ("user", "other user", "service", "owning service", "admin")
ANYONE = dict.fromkeys(CALLERS, OK)
ONLY_ITS_SERVICE = {**dict.fromkeys(CALLERS, DENIED), "owning service": OK}
# Every declared type x caller kind: the expected status of creating one valid job.
EXPECTED: dict[str, dict[str, grpc.StatusCode]] = {
    "noop": ANYONE,
    "sleep": ANYONE,
    "fail": ANYONE,
    "stamp": ANYONE,
    "users.purge": ONLY_ITS_SERVICE,
    "video.probe": ONLY_ITS_SERVICE,
    "video.thumbnail": ONLY_ITS_SERVICE,
}
VIDEO = {"file": "files/f1", "bucket": "mediagrid-test-files", "key": "users/owner/f1/content"}
# A payload each type accepts, naming the owner's resources where it names any.
VALID_PAYLOADS: dict[str, dict[str, Any]] = {
    "noop": {},
    "sleep": {"seconds": 0, "steps": 1},
    "fail": {"mode": "permanent"},
    "stamp": {},
    "users.purge": {"user": OWNER},
    "video.probe": VIDEO,
    "video.thumbnail": {**VIDEO, "times": [0.0, 1.5], "width": 320},
}


def owning_service(job_type: str) -> Principal:
    return Principal(
        name="users/owning-svc",
        user_id="owning-svc",
        role="service",
        permissions=frozenset({"jobs.create:*", f"jobs.create:job-types/{job_type}"}),
    )


def spec(job_type: str, payload: dict[str, Any] | None = None, **fields: Any) -> job_pb2.JobSpec:
    message = job_pb2.JobSpec(type=job_type, **fields)
    if payload:
        message.payload.update(payload)
    return message


async def create_code(
    svc: Jobs, message: job_pb2.JobSpec, md: Any, owner: str = ""
) -> tuple[grpc.StatusCode, grpc.aio.AioRpcError | None]:
    try:
        await svc.jobs.CreateJob(
            job_service_pb2.CreateJobRequest(job=message, owner=owner), metadata=md
        )
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc
    return OK, None


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def fields_of(error: grpc.aio.AioRpcError) -> list[str]:
    details = bad_request(error)
    return [v.field for v in details.field_violations] if details else []


# --- the matrix -------------------------------------------------------------------------


def test_every_declared_type_has_a_row_for_every_caller_kind() -> None:
    assert set(EXPECTED) == DECLARED == set(VALID_PAYLOADS)
    assert all(set(row) == set(CALLERS) for row in EXPECTED.values())


@pytest.mark.parametrize("job_type", sorted(EXPECTED))
async def test_who_may_create_each_declared_type(jobs_service: JobsFactory, job_type: str) -> None:
    svc = await jobs_service(principals={"owning-token": owning_service(job_type)})
    callers = {
        "user": (svc.owner, ""),
        "other user": (svc.other, ""),
        "service": (svc.service, ""),  # role service, without the type's grant
        "owning service": (bearer("owning-token"), OWNER),  # creates it for the owner
        "admin": (svc.admin, ""),
    }
    for caller, (md, owner) in callers.items():
        code, error = await create_code(svc, spec(job_type, VALID_PAYLOADS[job_type]), md, owner)
        assert code == EXPECTED[job_type][caller], (job_type, caller, code)
        if error is not None:
            info = error_info(error)
            assert info is not None and info.reason == "JOB_TYPE_NOT_ALLOWED"
            assert info.metadata["type"] == job_type
            assert info.metadata["field"] == "job.type"


async def test_an_unknown_type_is_invalid_argument_naming_the_field(svc: Jobs) -> None:
    error = await refused(svc.create("nobody.declared.this"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(error)
    assert info is not None and info.reason == "UNKNOWN_JOB_TYPE"
    assert info.metadata["type"] == "nobody.declared.this"
    assert fields_of(error) == ["job.type"]


async def test_wildcard_grants_do_not_own_a_type(jobs_service: JobsFactory) -> None:
    wildcard = Principal(
        name="users/wild",
        user_id="wild",
        role="service",
        permissions=frozenset(
            {"jobs.create:*", "jobs.create:job-types/*", "jobs.create:job-types"}
        ),
    )
    svc = await jobs_service(principals={"wild-token": wildcard})
    message = spec("users.purge", {"user": OWNER})
    assert (await create_code(svc, message, bearer("wild-token"), OWNER))[0] == DENIED
    assert (await create_code(svc, message, bearer("wild-token")))[0] == DENIED


# --- the order of the rules -------------------------------------------------------------


async def test_rules_apply_in_order(svc: Jobs) -> None:
    # Unknown type first, whatever else is wrong.
    error = await refused(svc.create("nope.type", priority=101, payload={"x": 1}))
    assert error_info(error).reason == "UNKNOWN_JOB_TYPE"  # type: ignore[union-attr]
    # Admission before the payload: a user learns nothing of an internal type's schema.
    error = await refused(svc.create("users.purge", payload={"bad": True}))
    assert error_info(error).reason == "JOB_TYPE_NOT_ALLOWED"  # type: ignore[union-attr]
    # The payload before the priority.
    error = await refused(svc.create("sleep", payload={"seconds": -1}, priority=101))
    assert error_info(error).reason == "INVALID_PAYLOAD"  # type: ignore[union-attr]
    error = await refused(svc.create("sleep", payload={"seconds": 1}, priority=101))
    assert error_info(error).reason == "PRIORITY_OUT_OF_RANGE"  # type: ignore[union-attr]


# --- payload schemas --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job_type", "payload", "fields"),
    [
        ("sleep", {"seconds": 5000}, ["job.payload.seconds"]),
        ("sleep", {"seconds": 1, "steps": 0}, ["job.payload.steps"]),
        ("sleep", {"hours": 1}, ["job.payload.hours"]),
        ("fail", {"mode": "sometimes"}, ["job.payload.mode"]),
        ("noop", {"anything": 1}, ["job.payload.anything"]),
        ("users.purge", {"user": "files/abc"}, ["job.payload.user"]),
        ("users.purge", {}, ["job.payload.user"]),
        ("video.probe", {"file": "files/f1"}, ["job.payload.bucket", "job.payload.key"]),
        ("video.thumbnail", {**VIDEO, "times": [0, -1]}, ["job.payload.times[1]"]),
        ("video.thumbnail", {**VIDEO, "key": "elsewhere/x"}, ["job.payload.key"]),
    ],
)
async def test_schema_violations_name_the_field(
    jobs_service: JobsFactory, job_type: str, payload: dict[str, Any], fields: list[str]
) -> None:
    svc = await jobs_service(principals={"owning-token": owning_service(job_type)})
    md = (
        bearer("owning-token")
        if job_type in ("users.purge", "video.probe", "video.thumbnail")
        else svc.owner
    )
    code, error = await create_code(svc, spec(job_type, payload), md)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and error is not None
    assert error_info(error).reason == "INVALID_PAYLOAD"  # type: ignore[union-attr]
    assert sorted(fields_of(error)) == sorted(fields)


async def test_payload_errors_do_not_echo_the_input(svc: Jobs) -> None:
    secret = "hunter2-secret-value"
    error = await refused(svc.create("sleep", payload={"seconds": secret, "steps": secret}))
    details = bad_request(error)
    assert details is not None
    shown = [error.details() or "", *(f"{v.description}" for v in details.field_violations)]
    assert not any(secret in text for text in shown)


async def test_a_type_without_a_model_takes_any_object_within_the_size_limit(
    jobs_service: JobsFactory,
) -> None:
    svc = await jobs_service(job_payload_max_bytes=1024)
    job = await svc.create("test.noop", payload={"nested": {"list": [1, "two", None]}})
    assert json_format.MessageToDict(job.payload)["nested"]["list"][1] == "two"
    error = await refused(svc.create("test.noop", payload={"blob": "x" * 2000}))
    assert fields_of(error) == ["job.payload"]


# --- demo types -------------------------------------------------------------------------


def test_demo_types_exist_only_while_the_setting_is_on() -> None:
    demo = {"noop", "sleep", "fail", "stamp"}
    assert TEST_SETTINGS.demo_job_types and Settings(environment="dev").demo_job_types
    assert demo <= DECLARED
    for environment in ("staging", "prod"):
        prod_like = Settings(environment=environment, database_url="postgresql://u@h/d")
        assert prod_like.demo_job_types is False
        assert not demo & {t.name for t in job_types.registry(prod_like)}
        assert DEMO_HANDLERS_MODULE not in handler_modules(prod_like)
        # Listing the demo handlers explicitly does not bring them back.
        listed = prod_like.model_copy(update={"worker_handler_modules": [DEMO_HANDLERS_MODULE]})
        assert handler_modules(listed) == []
    assert DEMO_HANDLERS_MODULE in handler_modules(TEST_SETTINGS)
    on = Settings(environment="prod", database_url="postgresql://u@h/d", demo_job_types=True)
    assert demo <= {t.name for t in job_types.registry(on)}


async def test_demo_types_are_refused_when_the_setting_is_off(jobs_service: JobsFactory) -> None:
    svc = await jobs_service(demo_job_types=False)
    for name in ("noop", "sleep", "fail", "stamp"):
        error = await refused(svc.create(name))
        assert error_info(error).reason == "UNKNOWN_JOB_TYPE"  # type: ignore[union-attr]
    assert (await svc.create("test.noop")).type == "test.noop"


# --- priorities -------------------------------------------------------------------------


async def test_priority_caps_per_caller_kind(jobs_service: JobsFactory) -> None:
    svc = await jobs_service(declare=declare("ranged.type", priority_min=0, priority_max=10))
    for md in (svc.owner, svc.admin):
        assert (await svc.create("test.noop", md=md, priority=100)).priority == 100
        assert (await svc.create("test.noop", md=md, priority=-100)).priority == -100
        error = await refused(svc.create("test.noop", md=md, priority=101))
        assert error_info(error).reason == "PRIORITY_OUT_OF_RANGE"  # type: ignore[union-attr]
        assert fields_of(error) == ["job.priority"]
    assert (await svc.create("test.noop", md=svc.service, priority=1000)).priority == 1000
    error = await refused(svc.create("test.noop", md=svc.service, priority=1001))
    assert fields_of(error) == ["job.priority"]
    # A type's own range narrows every caller's.
    for md in (svc.owner, svc.service, svc.admin):
        assert (await svc.create("ranged.type", md=md, priority=10)).priority == 10
        for priority in (11, -1):
            error = await refused(svc.create("ranged.type", md=md, priority=priority))
            assert fields_of(error) == ["job.priority"]


async def test_the_service_cap_is_a_setting(jobs_service: JobsFactory) -> None:
    svc = await jobs_service(job_service_priority_max=500)
    assert (await svc.create("test.noop", md=svc.service, priority=500)).priority == 500
    error = await refused(svc.create("test.noop", md=svc.service, priority=501))
    assert fields_of(error) == ["job.priority"]


def test_the_service_cap_may_not_be_below_the_user_cap() -> None:
    with pytest.raises(ValidationError, match="JOB_SERVICE_PRIORITY_MAX"):
        Settings(environment="test", job_priority_max=200, job_service_priority_max=100)


# --- batches ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "bad", "code", "reason"),
    [
        (3, {"type": "nope.type"}, grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_JOB_TYPE"),
        (4, {"type": "users.purge"}, DENIED, "JOB_TYPE_NOT_ALLOWED"),
        (2, {"type": "sleep", "payload": {"seconds": -1}}, None, "INVALID_PAYLOAD"),
        (1, {"type": "test.noop", "priority": 101}, None, "PRIORITY_OUT_OF_RANGE"),
    ],
)
async def test_one_bad_job_refuses_the_whole_batch(
    svc: Jobs, index: int, bad: dict[str, Any], code: grpc.StatusCode | None, reason: str
) -> None:
    jobs = [spec("test.noop") for _ in range(6)]
    jobs[index] = spec(bad["type"], bad.get("payload"), priority=bad.get("priority", 0))
    error = await refused(
        svc.jobs.CreateBatch(job_service_pb2.CreateBatchRequest(jobs=jobs), metadata=svc.owner)
    )
    assert error.code() == (code or grpc.StatusCode.INVALID_ARGUMENT)
    info = error_info(error)
    assert info is not None and info.reason == reason
    if code == DENIED:
        assert info.metadata["field"] == f"jobs[{index}].type"
    else:
        assert all(f.startswith(f"jobs[{index}].") for f in fields_of(error))
        assert fields_of(error)
    counts = await svc.jobs.GetJobCounts(
        job_service_pb2.GetJobCountsRequest(owner=OWNER), metadata=svc.admin
    )
    assert counts.total == 0


async def test_a_batch_reports_every_bad_index(svc: Jobs) -> None:
    jobs = [spec("sleep", {"seconds": -1} if i % 2 else {"seconds": 0}) for i in range(6)]
    error = await refused(
        svc.jobs.CreateBatch(job_service_pb2.CreateBatchRequest(jobs=jobs), metadata=svc.owner)
    )
    assert fields_of(error) == [f"jobs[{i}].payload.seconds" for i in (1, 3, 5)]


# --- worker side ------------------------------------------------------------------------


def test_a_handler_runs_at_most_the_declared_run_time_of_its_type() -> None:
    async def handler(job: object) -> None:
        return None

    runtime = WorkerRuntime(
        None,
        types=["noop", "sleep", "not.declared"],
        resources=None,  # type: ignore[arg-type]
        settings=TEST_SETTINGS,
        metadata=(),
        handlers={
            "noop": HandlerSpec("noop", handler, 9999, None),  # declared: 60 s
            "sleep": HandlerSpec("sleep", handler, 5, None),  # shorter than declared: kept
            "not.declared": HandlerSpec("not.declared", handler, 9999, None),
        },
    )
    assert runtime.handlers["noop"].timeout_seconds == 60
    assert runtime.handlers["sleep"].timeout_seconds == 5
    assert runtime.handlers["not.declared"].timeout_seconds == 9999


# --- configuration ----------------------------------------------------------------------


def test_a_deployment_declares_types_in_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "MEDIAGRID_JOB_TYPES",
        '[{"type": "ocr.page", "creators": ["user", "service"], "max_run_seconds": 120,'
        ' "priority_min": -10, "priority_max": 50},'
        ' {"type": "billing.close", "creators": ["internal"], "max_run_seconds": 30}]',
    )
    settings = Settings(environment="test")
    declared = job_types.registry(settings)
    ocr, billing = declared.get("ocr.page"), declared.get("billing.close")
    assert ocr is not None and billing is not None
    assert ocr.creators == {"user", "service"} and ocr.payload is None
    assert ocr.priority_range("user", settings) == (-10, 50)
    assert billing.internal and billing.max_run_seconds == 30


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "x.y", "creators": ["internal", "user"], "max_run_seconds": 1},
        {"type": "x.y", "creators": [], "max_run_seconds": 1},
        {"type": "x.y", "creators": ["root"], "max_run_seconds": 1},
        {"type": "X Y", "creators": ["user"], "max_run_seconds": 1},
        {"type": "x.y", "creators": ["user"], "max_run_seconds": 0},
        {
            "type": "x.y",
            "creators": ["user"],
            "max_run_seconds": 1,
            "priority_min": 5,
            "priority_max": 1,
        },
        {"type": "x.y", "creators": ["user"], "max_run_seconds": 1, "payload": {}},
    ],
)
def test_bad_declarations_are_refused_at_start(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        JobTypeSetting(**bad)


def test_a_type_declared_twice_or_a_missing_module_stops_the_start() -> None:
    twice = TEST_SETTINGS.model_copy(update={"job_types": declare("noop")})
    with pytest.raises(ConfigurationError, match="noop"):
        job_types.registry(twice)
    missing = TEST_SETTINGS.model_copy(update={"job_type_modules": ["services.nope.job_types"]})
    with pytest.raises(ConfigurationError, match=r"services\.nope\.job_types"):
        job_types.registry(missing)


def test_docs_list_every_declared_type() -> None:
    text = (ROOT / "docs" / "jobs.md").read_text()
    section = text[text.index("## Job types") :]
    assert all(f"`{name}`" in section for name in DECLARED)


# --- the admission function, as a property ----------------------------------------------


class Sized(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(default=0, ge=0, le=10)


KINDS = job_types.CALLER_KINDS
NAMES = ("a.one", "a.two", "b.three")


@st.composite
def registries(draw: st.DrawFn) -> JobTypeRegistry:
    types = []
    for name in draw(st.sets(st.sampled_from(NAMES), min_size=1)):
        creators = draw(st.sampled_from([INTERNAL, EVERYONE, *(frozenset({k}) for k in KINDS)]))
        low = draw(st.none() | st.integers(-200, 200))
        high = draw(st.none() | st.integers(low if low is not None else -200, 1200))
        model = draw(st.sampled_from([None, Sized]))
        types.append(JobType(name, creators, 60, model, low, high))
    return JobTypeRegistry(types)


@st.composite
def principals(draw: st.DrawFn) -> Principal:
    role = draw(st.sampled_from(KINDS))
    grants = draw(st.sets(st.sampled_from([*NAMES, "*", "a.*"])))
    return Principal(
        name="users/p",
        user_id="p",
        role=role,
        permissions=frozenset({"jobs.create:*", *(f"jobs.create:job-types/{g}" for g in grants)}),
    )


SPECS = st.lists(
    st.builds(
        lambda t, n, p: JobSpec(type=t, payload=n, priority=p, max_attempts=1),
        st.sampled_from([*NAMES, "c.undeclared"]),
        st.sampled_from([{}, {"n": 3}, {"n": 11}, {"m": 1}]),
        st.integers(-150, 1100),
    ),
    min_size=1,
    max_size=8,
)


def expected_outcome(
    declared: JobTypeRegistry, principal: Principal, specs: list[JobSpec]
) -> tuple[str | None, int | None]:
    """The reason that refuses the call (and the index it names), or (None, None)."""
    for index, s in enumerate(specs):
        if s.type not in declared:
            return "UNKNOWN_JOB_TYPE", index
    for index, s in enumerate(specs):
        job_type = declared.types[s.type]
        owner = (
            principal.role == "service"
            and f"jobs.create:job-types/{s.type}" in principal.permissions
        )
        if principal.role not in job_type.creators and not owner:
            return "JOB_TYPE_NOT_ALLOWED", index
    for index, s in enumerate(specs):
        model = declared.types[s.type].payload
        if model is not None and s.payload not in ({}, {"n": 3}):
            return "INVALID_PAYLOAD", index
    for index, s in enumerate(specs):
        job_type = declared.types[s.type]
        cap = 1000 if principal.role == "service" else 100
        low = max(-100, job_type.priority_min if job_type.priority_min is not None else -100)
        high = min(cap, job_type.priority_max if job_type.priority_max is not None else cap)
        if not low <= s.priority <= high:
            return "PRIORITY_OUT_OF_RANGE", index
    return None, None


@relaxed(max_examples=400)
@given(declared=registries(), principal=principals(), specs=SPECS)
def test_admission_follows_the_rules(
    declared: JobTypeRegistry, principal: Principal, specs: list[JobSpec]
) -> None:
    reason, index = expected_outcome(declared, principal, specs)
    try:
        check_specs(declared, principal, specs, TEST_SETTINGS, job_types.batch_path)
    except DomainError as exc:
        assert exc.reason == reason
        if isinstance(exc, PermissionDenied):
            assert exc.metadata["field"] == f"jobs[{index}].type"
            # Internal types are never admitted through a role, only through the literal grant.
            assert declared.types[exc.metadata["type"]].internal or principal.role not in (
                declared.types[exc.metadata["type"]].creators
            )
        else:
            assert isinstance(exc, InvalidArgument)
            assert exc.violations[0].field.startswith(f"jobs[{index}].")
    else:
        assert reason is None


@pytest.mark.parametrize("demo", [True, False])
def test_declarations_and_handlers_follow_one_demo_rule(demo: bool) -> None:
    from common.settings import DEMO_HANDLERS_MODULE, DEMO_JOB_TYPES_MODULE
    from services.jobs.job_types import declared_modules
    from services.jobs.worker.main import handler_modules

    # Neither list names its demo module: the setting alone decides, for both alike.
    settings = Settings(
        environment="test",
        demo_job_types=demo,
        job_type_modules=["services.users.job_types"],
        worker_handler_modules=["services.users.handlers"],
    )
    assert (DEMO_JOB_TYPES_MODULE in declared_modules(settings)) is demo
    assert (DEMO_HANDLERS_MODULE in handler_modules(settings)) is demo
