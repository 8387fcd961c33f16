"""Pure units: parsers and validators (property tests), handler loading, metrics."""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from common.errors import InvalidArgument
from common.settings import Settings
from services.jobs.metrics import JobMetrics
from services.jobs.models import Finished
from services.jobs.repository import _new_ids
from services.jobs.states import JobState
from services.jobs.validation import TYPE_RE, parse_name, validate_spec
from services.jobs.worker.api import HandlerSpec
from services.jobs.worker.main import load_handler_modules
from services.jobs.worker.runtime import UnknownJobType, WorkerRuntime

SETTINGS = Settings(environment="test")


@given(st.text(max_size=60))
def test_parse_name_refuses_what_is_not_collection_slash_uuid(text: str) -> None:
    try:
        parsed = parse_name(text, "jobs")
    except InvalidArgument as exc:
        assert exc.reason == "INVALID_NAME"
    else:
        assert text.startswith("jobs/") and uuid.UUID(text[5:]) == parsed


@given(st.uuids(), st.sampled_from(["jobs", "batches"]))
def test_parse_name_accepts_collection_slash_uuid(job_id: uuid.UUID, collection: str) -> None:
    assert parse_name(f"{collection}/{job_id}", collection) == job_id
    other = "batches" if collection == "jobs" else "jobs"
    with pytest.raises(InvalidArgument):
        parse_name(f"{other}/{job_id}", collection)


@given(
    job_type=st.text(max_size=30),
    priority=st.integers(-500, 500),
    attempts=st.integers(-5, 50),
    offset=st.integers(-10 * 86400, 40 * 86400),
)
def test_validate_spec_either_returns_a_valid_spec_or_names_the_fields(
    job_type: str, priority: int, attempts: int, offset: int
) -> None:
    now = datetime.now(UTC)
    spec, violations = validate_spec(
        type=job_type,
        payload={},
        priority=priority,
        schedule_time=now + timedelta(seconds=offset),
        max_attempts=attempts,
        request_id="",
        files=[],
        settings=SETTINGS,
        now=now,
    )
    if spec is None:
        assert violations and all(v.field.startswith("job.") for v in violations)
    else:
        assert not violations
        assert TYPE_RE.match(spec.type)
        assert SETTINGS.job_priority_min <= spec.priority <= SETTINGS.job_priority_max
        assert 1 <= spec.max_attempts <= SETTINGS.job_max_attempts_limit


def test_a_worker_refuses_types_without_handlers() -> None:
    async def noop(job: object) -> None:
        return None

    with pytest.raises(UnknownJobType, match=r"video\.nothing"):
        WorkerRuntime(
            None,  # type: ignore[arg-type]
            types=["a", "video.nothing"],
            resources=None,  # type: ignore[arg-type]
            settings=SETTINGS,
            handlers={"a": HandlerSpec("a", noop, 1, None)},  # type: ignore[arg-type]
        )


def test_missing_handler_modules_are_skipped_but_broken_ones_fail(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert load_handler_modules(["services.jobs.builtin_handlers", "services.nope.handlers"]) == [
        "services.jobs.builtin_handlers"
    ]
    (tmp_path / "mg_broken_handlers.py").write_text("import mg_dependency_that_is_missing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="mg_dependency_that_is_missing"):
        load_handler_modules(["mg_broken_handlers"])
    sys.modules.pop("mg_broken_handlers", None)


def test_metrics_record_run_time_and_outcomes() -> None:
    reader = InMemoryMetricReader()
    metrics = JobMetrics(MeterProvider(metric_readers=[reader]).get_meter("test"))
    metrics.finished(
        [
            Finished(
                id=uuid.uuid4(), type="video.probe", state=JobState.SUCCEEDED, run_seconds=0.5
            ),
            Finished(id=uuid.uuid4(), type="video.probe", state=JobState.FAILED, run_seconds=1.5),
        ]
    )
    data = reader.get_metrics_data()
    found = {
        m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    outcomes = {
        p.attributes["outcome"]: p.value for p in found["mediagrid.jobs.outcomes"].data.data_points
    }
    assert outcomes == {"succeeded": 1, "failed": 1}
    points = found["mediagrid.jobs.run_time"].data.data_points
    assert sum(p.count for p in points) == 2
    assert sum(p.sum for p in points) == pytest.approx(2.0)


def test_worker_default_address_brackets_an_ipv6_host() -> None:
    from services.jobs.worker.main import default_address

    assert default_address(Settings(environment="test", grpc_host="::1", grpc_port=50051)) == (
        "[::1]:50051"
    )
    configured = Settings(environment="test", jobs_address="jobs.internal:7000")
    assert default_address(configured) == "jobs.internal:7000"


def test_a_worker_without_types_runs_every_declared_type_with_a_handler(
    settings: Settings,
) -> None:
    from services.jobs import job_types
    from services.jobs.worker.api import HANDLERS
    from services.jobs.worker.main import runnable_types

    with_demo = runnable_types(settings.model_copy(update={"demo_job_types": True}))
    declared = job_types.registry(settings.model_copy(update={"demo_job_types": True}))
    assert with_demo == sorted(with_demo) and with_demo
    assert {"video.probe", "video.thumbnail", "users.purge"} <= set(with_demo)
    assert all(t in HANDLERS and t in declared for t in with_demo)
    without_demo = runnable_types(settings.model_copy(update={"demo_job_types": False}))
    assert set(without_demo) < set(with_demo)  # the demo types leave with their declarations


@given(st.integers(min_value=0, max_value=300))
def test_new_job_ids_are_distinct_random_uuids_of_version_4(n: int) -> None:
    ids = _new_ids(n)
    assert len(ids) == n == len(set(ids))
    for job_id in ids:
        assert isinstance(job_id, uuid.UUID)
        assert job_id.version == 4 and job_id.variant == uuid.RFC_4122
        assert uuid.UUID(str(job_id)) == job_id and hash(uuid.UUID(str(job_id))) == hash(job_id)


def test_the_quiet_methods_name_real_worker_rpcs() -> None:
    """A misspelt path would silently log a worker's polls at INFO again."""
    from mediagrid.jobs.v1 import worker_service_pb2

    from services.jobs.app import QUIET_METHODS, WORKER_SERVICE

    service = worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"]
    assert service.full_name == WORKER_SERVICE
    rpcs = {f"/{WORKER_SERVICE}/{m.name}" for m in service.methods}
    assert QUIET_METHODS and set(QUIET_METHODS) <= rpcs
