"""The ``faults.record`` handler, loaded by the scenarios' worker processes.

Each run appends ``start <job> <attempt>`` when it begins, ``done <job> <attempt>`` when
its work is over and ``cancelled <job> <attempt>`` when the runtime cancels it, to the file named by ``FAULTS_RUN_LOG`` (one short ``O_APPEND`` write per
line: atomic across the workers' processes), so a scenario can count how often every
handler ran and whether two runs of one job overlapped. Payload: ``{"seconds": float}``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

from services.jobs.worker.api import JobContext, handler


def _append(line: str) -> None:
    fd = os.open(os.environ["FAULTS_RUN_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@handler("faults.record", timeout_seconds=60)
async def record(job: JobContext) -> Mapping[str, Any] | None:
    _append(f"start {job.name} {job.attempt}")
    seconds = float(job.payload.get("seconds", 0))
    steps = max(1, int(job.payload.get("steps", 1)))
    try:
        for step in range(steps):
            await asyncio.sleep(seconds / steps)
            if steps > 1:
                await job.progress(100.0 * (step + 1) / steps, f"step {step + 1}")
    except asyncio.CancelledError:
        _append(f"cancelled {job.name} {job.attempt}")
        raise
    _append(f"done {job.name} {job.attempt}")
    return {"attempt": job.attempt}
