"""The activity-log port: every mutating action of every service is recorded through it.

The users service owns the log and installs the real recorder on the ``AppContext`` when it
starts (or a remote one, over gRPC, when it runs in another process). Until then the
``LoggingActivityRecorder`` writes the entry to the process log so nothing is silently lost.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from common.context import current_request_id, optional_principal

if TYPE_CHECKING:
    from common.app import AppContext

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


class LateActivityRecorder:
    """Forwards to whatever recorder the context holds at call time: a service built before
    the users service installs the real recorder still records through it afterwards."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    async def record(
        self,
        action: str,
        resource: str,
        metadata: Mapping[str, str] | None = None,
        *,
        actor: str | None = None,
    ) -> None:
        await self.ctx.activity.record(action, resource, metadata, actor=actor)
