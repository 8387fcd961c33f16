"""The activity-log port: every mutating action of every service is recorded through it.

The users service owns the log. The runtime chooses one recorder per process before any
service is built (``common.runtime``): the users service's own when it runs in the process,
a remote one (over gRPC) when only its address is known, otherwise the
``LoggingActivityRecorder``, which writes each entry to the process log so nothing is
silently lost.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from common.context import current_request_id, optional_principal

log = logging.getLogger("mediagrid.activity")


class ActivityRecorder(Protocol):
    async def record(
        self,
        action: str,
        resource: str,
        metadata: Mapping[str, str] | None = None,
        *,
        actor: str | None = None,
    ) -> None:
        """Record that ``actor`` (default: the current principal) did ``action`` to ``resource``."""


class LoggingActivityRecorder:
    """Fallback recorder: one structured log line per action."""

    async def record(
        self,
        action: str,
        resource: str,
        metadata: Mapping[str, str] | None = None,
        *,
        actor: str | None = None,
    ) -> None:
        principal = optional_principal()
        log.info(
            "activity %s %s",
            action,
            resource,
            extra={
                "actor": actor or (principal.name if principal else None),
                "action": action,
                "resource": resource,
                "request_id": current_request_id(),
                "metadata": dict(metadata or {}),
            },
        )
