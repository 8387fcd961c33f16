"""A logging handler that ships records to CloudWatch Logs, for hosts outside containers.

Containers log JSON to stdout/stderr and the ECS ``awslogs`` driver ships it; a process on
a plain host sets ``MEDIAGRID_CLOUDWATCH_LOG_GROUP`` instead. The handler never blocks the
code that logs: ``emit`` puts the formatted line on a bounded queue and returns; a daemon
thread sends batches with PutLogEvents. When the queue is full the record is dropped and
counted; the next batch carries a line saying how many were dropped.

PutLogEvents limits respected: at most 10,000 events and 1,048,576 bytes per batch (each
event counts its UTF-8 size plus 26 bytes), events of at most 256 KiB (longer ones are
cut), in time order, spanning less than 24 hours.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.settings import Settings

log = logging.getLogger("mediagrid.cloudwatch")

MAX_BATCH_EVENTS = 10_000
MAX_BATCH_BYTES = 1_048_576
EVENT_OVERHEAD_BYTES = 26
MAX_EVENT_BYTES = 256 * 1024 - EVENT_OVERHEAD_BYTES
MAX_BATCH_SPAN_MS = 24 * 3600 * 1000 - 1
# Errors worth trying a batch again for; anything else drops the batch (and says so).
RETRYABLE = frozenset({"ThrottlingException", "ServiceUnavailableException", "RequestTimeout"})


def default_stream(service_name: str) -> str:
    return f"{service_name}/{socket.gethostname()}/{os.getpid()}"


@dataclass(frozen=True)
class Event:
    timestamp: int  # milliseconds since the epoch
    message: str

    @property
    def size(self) -> int:
        return len(self.message.encode()) + EVENT_OVERHEAD_BYTES


def cut(message: str) -> str:
    """``message`` within the per-event limit (UTF-8 bytes, never splitting a character)."""
    data = message.encode()
    if len(data) <= MAX_EVENT_BYTES:
        return message
    marker = " ...[cut]"
    return data[: MAX_EVENT_BYTES - len(marker)].decode(errors="ignore") + marker


def batches(events: list[Event]) -> list[list[Event]]:
    """Split time-ordered ``events`` into batches PutLogEvents accepts."""
    out: list[list[Event]] = []
    current: list[Event] = []
    size = 0
    for event in sorted(events, key=lambda e: e.timestamp):
        if current and (
            len(current) >= MAX_BATCH_EVENTS
            or size + event.size > MAX_BATCH_BYTES
            or event.timestamp - current[0].timestamp > MAX_BATCH_SPAN_MS
        ):
            out.append(current)
            current, size = [], 0
        current.append(event)
        size += event.size
    if current:
        out.append(current)
    return out


class CloudWatchLogsHandler(logging.Handler):
    """Queue records; a daemon thread sends them in batches (see the module docstring)."""

    def __init__(
        self,
        client: Any,
        group: str,
        stream: str,
        *,
        queue_size: int = 10_000,
        interval: float = 5.0,
        create: bool = True,
        start: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.client = client
        self.group = group
        self.stream = stream
        self.interval = interval
        self.create = create
        self.clock = clock
        self.dropped = 0
        self.sent = 0
        self._reported_drops = 0
        self._queue: queue.Queue[Event] = queue.Queue(maxsize=queue_size)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._ready = False
        self._thread = threading.Thread(target=self._run, name="cloudwatch-logs", daemon=True)
        if start:
            self.start()

    def start(self) -> None:
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == log.name:
            return  # never ship our own complaints about shipping
        try:
            event = Event(int(record.created * 1000), cut(self.format(record)))
        except Exception:
            self.handleError(record)
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1

    def flush(self) -> None:
        self._wake.set()

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (within ``timeout`` seconds), then stop the thread."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        super().close()

    # --- the sending thread -------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            stopping = self._stopping.is_set()
            self._send_queued()
            if stopping:
                return

    def _drain(self) -> list[Event]:
        events: list[Event] = []
        while True:
            try:
                events.append(self._queue.get_nowait())
            except queue.Empty:
                break
        dropped = self.dropped - self._reported_drops
        if dropped:
            self._reported_drops += dropped
            note = f"{dropped} log event(s) dropped: the CloudWatch Logs queue was full"
            events.append(Event(int(self.clock() * 1000), note))
        return events

    def _send_queued(self) -> None:
        events = self._drain()
        if not events:
            return
        if not self._ready:
            self._ensure_stream()
        for batch in batches(events):
            self._put(batch)

    def _ensure_stream(self) -> None:
        if self.create:
            for call, kwargs in (
                (self.client.create_log_group, {"logGroupName": self.group}),
                (
                    self.client.create_log_stream,
                    {"logGroupName": self.group, "logStreamName": self.stream},
                ),
            ):
                try:
                    call(**kwargs)
                except self.client.exceptions.ResourceAlreadyExistsException:
                    pass
                except Exception as exc:
                    log.warning("CloudWatch Logs: %s failed: %s", call.__name__, exc)
        self._ready = True

    def _put(self, batch: list[Event]) -> None:
        events = [{"timestamp": e.timestamp, "message": e.message} for e in batch]
        for attempt in range(1, 4):
            try:
                self.client.put_log_events(
                    logGroupName=self.group, logStreamName=self.stream, logEvents=events
                )
                self.sent += len(batch)
                return
            except Exception as exc:
                code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
                if code == "ResourceNotFoundException" and attempt == 1:
                    self._ready = False
                    self._ensure_stream()
                    continue
                if code in RETRYABLE and attempt < 3:
                    time.sleep(0.2 * 2**attempt)
                    continue
                self.dropped += len(batch)
                self._reported_drops += len(batch)
                log.warning("CloudWatch Logs: %d event(s) not sent: %s", len(batch), exc)
                return


def cloudwatch_handler(settings: Settings) -> CloudWatchLogsHandler | None:
    """The handler the settings ask for (``cloudwatch_log_group``), or None."""
    if not settings.cloudwatch_log_group:
        return None
    import boto3

    credentials: dict[str, str] = {}
    if settings.aws_access_key_id and settings.aws_secret_access_key:
        credentials = {
            "aws_access_key_id": settings.aws_access_key_id.get_secret_value(),
            "aws_secret_access_key": settings.aws_secret_access_key.get_secret_value(),
        }
    client = boto3.session.Session(region_name=settings.aws_region, **credentials).client(
        "logs", endpoint_url=settings.cloudwatch_logs_endpoint_url
    )
    return CloudWatchLogsHandler(
        client,
        settings.cloudwatch_log_group,
        settings.cloudwatch_log_stream or default_stream(settings.service_name),
        queue_size=settings.cloudwatch_log_queue_size,
        interval=settings.cloudwatch_log_interval_seconds,
    )
