"""The activity recorder that writes to ``users.activity`` (the process's recorder when the
users service runs in it: ``common.registry``'s ``activity`` hook)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from common.context import current_request_id, optional_principal
from services.users import validation
from services.users.models import ActivityEntry
from services.users.repository import UserRepository

if TYPE_CHECKING:
    from common.app import AppContext

SYSTEM_ACTOR = "system"


def actor_id(actor: str) -> str | None:
    """The user id of an actor name (``users/{id}``), None for ``system``."""
    match = validation.USER_NAME_RE.fullmatch(actor)
    return match.group(1) if match else None


class DatabaseActivityRecorder:
    """Records actions of this process's callers; the actor defaults to the current principal."""

    def __init__(self, repository: UserRepository) -> None:
        self.repository = repository

    async def record(
        self,
        action: str,
        resource: str,
        metadata: Mapping[str, str] | None = None,
        *,
        actor: str | None = None,
    ) -> None:
        await self.write(action, resource, metadata, actor=actor)

    async def write(
        self,
        action: str,
        resource: str,
        metadata: Mapping[str, str] | None = None,
        *,
        actor: str | None = None,
        request_id: str | None = None,
    ) -> ActivityEntry:
        if actor is None:
            principal = optional_principal()
            actor = principal.name if principal else SYSTEM_ACTOR
        return await self.repository.record_activity(
            actor=actor,
            actor_id=actor_id(actor),
            action=validation.action(action),
            resource=resource,
            request_id=request_id or current_request_id() or "",
            metadata=validation.metadata({str(k): str(v) for k, v in (metadata or {}).items()}),
        )


def database_recorder(ctx: AppContext) -> DatabaseActivityRecorder:
    """The recorder of every service of a process the users service runs in."""
    return DatabaseActivityRecorder(UserRepository(ctx.pool))
