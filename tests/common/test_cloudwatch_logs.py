"""The CloudWatch Logs handler against moto's CloudWatch Logs server: batches within the
PutLogEvents limits, never blocking the caller, dropping (and saying so) when full."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import boto3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.cloudwatch_logs import (
    EVENT_OVERHEAD_BYTES,
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    CloudWatchLogsHandler,
    Event,
    batches,
    cut,
)
from common.logging import JsonFormatter, configure_logging
from common.settings import Settings
from tests.support.hypo import relaxed


@pytest.fixture
def logs(s3_endpoint: str) -> Any:
    """A CloudWatch Logs client of the moto server the suite's tests already run."""
    return boto3.client(
        "logs",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def messages(logs: Any, group: str, stream: str) -> list[str]:
    events = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)
    return [e["message"] for e in events["events"]]


def record(message: str, created: float | None = None) -> logging.LogRecord:
    rec = logging.LogRecord("mediagrid.test", logging.INFO, __file__, 1, message, None, None)
    if created is not None:
        rec.created = created
    return rec


def test_records_arrive_in_order_as_json(logs: Any) -> None:
    group = f"/mediagrid/test/{uuid.uuid4().hex}"
    handler = CloudWatchLogsHandler(logs, group, "s1", interval=0.05)
    handler.setFormatter(JsonFormatter())
    for index in range(25):
        handler.emit(record(f"line {index}"))
    handler.close()
    shipped = [json.loads(m) for m in messages(logs, group, "s1")]
    assert [m["message"] for m in shipped] == [f"line {i}" for i in range(25)]
    assert {m["logger"] for m in shipped} == {"mediagrid.test"}
    assert handler.sent == 25 and handler.dropped == 0


def test_a_full_queue_drops_without_blocking_and_says_so(logs: Any) -> None:
    group = f"/mediagrid/test/{uuid.uuid4().hex}"
    handler = CloudWatchLogsHandler(logs, group, "s1", queue_size=5, interval=0.05, start=False)
    # The sender is not running: an emit that waited for room would never return.
    for index in range(12):
        handler.emit(record(f"line {index}"))
    assert handler.dropped == 7
    handler.start()
    handler.close()
    shipped = messages(logs, group, "s1")
    assert shipped[:5] == [f"line {i}" for i in range(5)]
    assert shipped[5] == "7 log event(s) dropped: the CloudWatch Logs queue was full"


def test_an_oversized_line_is_cut_and_still_sent(logs: Any) -> None:
    group = f"/mediagrid/test/{uuid.uuid4().hex}"
    handler = CloudWatchLogsHandler(logs, group, "s1", interval=0.05)
    handler.emit(record("é" * 200_000))  # 400,000 UTF-8 bytes
    handler.close()
    [shipped] = messages(logs, group, "s1")
    assert len(shipped.encode()) <= MAX_EVENT_BYTES and shipped.endswith("...[cut]")


def test_configure_logging_adds_the_handler_from_settings(
    settings: Settings, logs: Any, s3_endpoint: str
) -> None:
    group = f"/mediagrid/test/{uuid.uuid4().hex}"
    configured = settings.model_copy(
        update={
            "cloudwatch_log_group": group,
            "cloudwatch_log_stream": "from-settings",
            "cloudwatch_logs_endpoint_url": s3_endpoint,
            "cloudwatch_log_interval_seconds": 0.05,
        }
    )
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging(configured)
        [shipper] = [h for h in root.handlers if isinstance(h, CloudWatchLogsHandler)]
        logging.getLogger("mediagrid.test").warning("shipped", extra={"job": "jobs/1"})
        shipper.close()
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    [line] = messages(logs, group, "from-settings")
    assert json.loads(line)["message"] == "shipped" and json.loads(line)["job"] == "jobs/1"


@relaxed()
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=MAX_EVENT_BYTES), max_size=40),
    gaps=st.lists(st.integers(min_value=0, max_value=10 * 3600 * 1000), max_size=40),
)
def test_batches_respect_the_put_log_events_limits(sizes: list[int], gaps: list[int]) -> None:
    at = 1_700_000_000_000
    events = []
    for index, size in enumerate(sizes):
        at += gaps[index] if index < len(gaps) else 0
        events.append(Event(at, "x" * size))
    given_order = list(reversed(events))
    split = batches(given_order)
    # Time order; lines logged in the same millisecond keep the order they were logged in.
    assert [e for batch in split for e in batch] == sorted(given_order, key=lambda e: e.timestamp)
    for batch in split:
        assert 1 <= len(batch) <= MAX_BATCH_EVENTS
        assert sum(len(e.message) + EVENT_OVERHEAD_BYTES for e in batch) <= MAX_BATCH_BYTES
        assert batch[-1].timestamp - batch[0].timestamp < 24 * 3600 * 1000
        assert [e.timestamp for e in batch] == sorted(e.timestamp for e in batch)


@relaxed()
@given(st.text(max_size=2000), st.integers(min_value=1, max_value=4))
def test_cut_keeps_short_lines_and_valid_utf8(text: str, repeat: int) -> None:
    line = text * (repeat * 100)
    kept = cut(line)
    assert len(kept.encode()) <= MAX_EVENT_BYTES
    if len(line.encode()) <= MAX_EVENT_BYTES:
        assert kept == line
    else:
        assert kept.endswith("...[cut]") and line.startswith(kept[: -len(" ...[cut]")])
