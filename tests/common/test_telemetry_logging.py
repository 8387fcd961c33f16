"""Logs: one JSON object per line with the standard keys and every ``extra`` field, or text."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.context import request_id_var
from common.logging import JsonFormatter, TextFormatter, configure_logging
from common.settings import Settings


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    logger = logging.getLogger("mediagrid.test")
    return logger.makeRecord(
        logger.name, logging.INFO, __file__, 1, message, args, None, extra=extra
    )


def test_json_line_has_standard_keys_and_extra_fields() -> None:
    line = JsonFormatter().format(
        record(
            "%s %s",
            "/pkg.Svc/Get",
            "OK",
            method="/pkg.Svc/Get",
            status="OK",
            duration_ms=1.25,
            request_id="r-1",
            principal="users/7",
        )
    )
    entry = json.loads(line)
    assert entry["message"] == "/pkg.Svc/Get OK"
    assert entry["level"] == "INFO"
    assert entry["logger"] == "mediagrid.test"
    assert entry["time"].endswith("+00:00")
    assert entry["method"] == "/pkg.Svc/Get"
    assert entry["status"] == "OK"
    assert entry["duration_ms"] == 1.25
    assert entry["request_id"] == "r-1"
    assert entry["principal"] == "users/7"
    assert "\n" not in line


def test_request_id_of_the_current_call_is_added() -> None:
    token = request_id_var.set("req-42")
    try:
        entry = json.loads(JsonFormatter().format(record("inside a call")))
    finally:
        request_id_var.reset(token)
    assert entry["request_id"] == "req-42"


def test_exceptions_stay_on_one_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger = logging.getLogger("mediagrid.test")
        rec = logger.makeRecord(
            logger.name, logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    assert "RuntimeError: boom" in json.loads(line)["exception"]


@given(
    message=st.text(max_size=50),
    value=st.one_of(st.integers(), st.text(max_size=20), st.none(), st.binary(max_size=8)),
)
def test_any_message_and_extra_value_give_one_valid_json_line(message: str, value: object) -> None:
    line = JsonFormatter().format(record("%s", message, anything=value))
    assert "\n" not in line
    assert json.loads(line)["message"] == message


def test_text_format_appends_extra_fields() -> None:
    line = TextFormatter().format(record("hello", status="OK"))
    assert "INFO" in line and "mediagrid.test: hello" in line and "[status=OK]" in line


@pytest.mark.usefixtures("restore_root_logger")
def test_configure_logging_applies_format_and_level() -> None:
    stream = io.StringIO()
    configure_logging(Settings(log_format="json", log_level="WARNING"), stream)
    logging.getLogger("mediagrid.x").info("hidden")
    logging.getLogger("mediagrid.x").warning("shown", extra={"bucket": "b"})
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["shown"]
    assert json.loads(lines[0])["bucket"] == "b"


def test_records_inside_a_span_carry_its_trace_id() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        entry = json.loads(JsonFormatter().format(record("inside a span")))
    assert entry["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert entry["span_id"] == format(span.get_span_context().span_id, "016x")
    assert "trace_id" not in json.loads(JsonFormatter().format(record("outside")))
