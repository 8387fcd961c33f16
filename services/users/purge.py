"""Removal of a deleted user's data in the other services, behind a small port.

``DeleteUser`` records a row in ``users.pending_purges`` in the same transaction that marks the
user deleted (so the request cannot be lost), then the purger is called right away and, until
it succeeds, again by every sweep with exponential backoff. The suite's purger
(``integrations.JobPurger``) enqueues a ``users.purge`` job as the users service's own
account; its handler (``handlers.py``) deletes nothing unless the user is DELETED. Where the
jobs and files services are not part of the suite, ``MissingServicesPurger`` reports
UNAVAILABLE (``DEPENDENCY_UNAVAILABLE``), so the row stays pending with the error and the
attempt count visible.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from common.errors import DomainError, Unavailable
from services.users.usage import FILES_SERVICE, JOBS_SERVICE

if TYPE_CHECKING:
    from services.users.repository import UserRepository

log = logging.getLogger("mediagrid.users.purge")


class UserDataPurger(Protocol):
    async def purge(self, user: str) -> None:
        """Remove (or durably schedule removal of) ``users/{id}``'s data; raise to be retried."""


def describe_failure(exc: BaseException) -> str:
    """``REASON: message`` for domain errors, the exception type otherwise (for last_error)."""
    if isinstance(exc, DomainError):
        return f"{exc.reason}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


async def attempt_purge(
    purger: UserDataPurger,
    repository: UserRepository,
    user_id: str,
    *,
    attempt: int,
    retry_in_seconds: float,
) -> bool:
    """One attempt at a deleted user's data (DeleteUser's first, then the sweep's).

    Success ends the pending purge and scrubs the user row; a failure is recorded on the
    pending row with the time of the next attempt. Returns whether it succeeded.
    """
    name = f"users/{user_id}"
    try:
        await purger.purge(name)
    except Exception as exc:
        log.warning(
            "purge of %s failed (attempt %d, next in %.0fs): %s",
            name,
            attempt,
            retry_in_seconds,
            exc,
        )
        await repository.purge_failed(user_id, describe_failure(exc), retry_in_seconds)
        return False
    await repository.purge_done(user_id)
    await repository.scrub_user(user_id)
    return True


class MissingServicesPurger:
    """The purger used while the services holding user data are not part of the suite."""

    async def purge(self, user: str) -> None:
        raise Unavailable.not_deployed(f"{JOBS_SERVICE}, {FILES_SERVICE}")
