"""Authentication and activity recording for every service of the suite.

- ``CachingAuthenticator``: a small per-process TTL cache in front of any authenticator,
  keyed by a hash of the token (tokens are never kept as keys), bounded in size, with one
  lookup in flight per token. A revoked session stops working within the TTL.
- ``LocalAuthenticator``: used inside the users process; resolves tokens from its database.
- ``remote_authenticator(ctx)``: calls ``UserService/Authenticate`` through
  ``ctx.channel("users")`` when the users service runs elsewhere, through the users peer
  dependency (its breaker and time bound); cached principals outlive an outage of the users
  service until their TTL.
- ``remote_activity_recorder(ctx)``: an ``ActivityRecorder`` that calls ``RecordActivity``
  with the caller's own token, so the entry is attributed to the caller.
- ``allows(principal, permission, resource, owner=...)``: the suite's permission rule, to
  decide locally on the principal the interceptor put in the context (docs/users.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import grpc

from common import errors
from common.context import Principal, current_request_id, optional_principal
from common.interceptors import Authenticator, outgoing_metadata
from common.peer_calls import call_peer
from common.resilience import Dependency
from common.telemetry import get_meter

if TYPE_CHECKING:
    from common.app import AppContext

log = logging.getLogger("mediagrid.auth")

USERS_SERVICE = "mediagrid.users.v1.UserService"
# The users service as a peer dependency (``ctx.dependencies.peer(USERS)``).
USERS = "users"


# The grant that makes a service the owner of an internal job type: the jobs service checks
# for exactly this entry, the users service writes it at bootstrap and refuses it through
# GrantPermission.
JOB_TYPE_PERMISSION = "jobs.create"
JOB_TYPES_COLLECTION = "job-types"


def job_type_grant(job_type: str) -> tuple[str, str]:
    """(permission, resource) of the grant owning ``job_type``."""
    return JOB_TYPE_PERMISSION, f"{JOB_TYPES_COLLECTION}/{job_type}"


def pattern_matches(pattern: str, resource: str) -> bool:
    """``*`` matches everything, ``prefix/*`` what lies under ``prefix/``, else exact names."""
    if pattern == "*":
        return True
    if pattern.endswith("/*"):
        prefix = pattern[:-1]
        return resource.startswith(prefix) and len(resource) > len(prefix)
    return resource == pattern


def owns(principal_name: str, resource: str, owner: str | None = None) -> bool:
    """A principal owns itself, what lies under its name, and what names it as owner."""
    return (
        resource == principal_name
        or resource.startswith(principal_name + "/")
        or (owner is not None and owner == principal_name)
    )


def granted(permissions: frozenset[str], permission: str, resource: str) -> bool:
    """Whether a ``permission:pattern`` entry covers ``resource``."""
    for entry in permissions:
        name, sep, pattern = entry.partition(":")
        if sep and name == permission and pattern_matches(pattern, resource):
            return True
    return False


def allows(
    principal: Principal, permission: str, resource: str, *, owner: str | None = None
) -> bool:
    """Whether ``principal`` may use ``permission`` on ``resource`` (whose owner may be given).

    Admins may do everything; a plain ``permission`` applies to the principal's own resources;
    ``permission:pattern`` entries (service roles and grants) apply to matching resources.
    """
    if principal.is_admin:
        return True
    if permission in principal.permissions and owns(principal.name, resource, owner):
        return True
    return granted(principal.permissions, permission, resource)


def scope_allows(principal: Principal, permission: str, resource: str | None = None) -> bool:
    """Whether an API key's scope leaves ``permission`` (on ``resource``; None: on anything)
    to ``principal``; always true for a session.

    Checks that let a service or admin through by its role alone call this too: a key holds
    only the permissions of its scope (its ``permissions`` were narrowed when it was
    resolved), whatever its user's role would give.
    """
    if principal.api_key is None:
        return True
    if resource is None:
        return any(entry.partition(":")[0] == permission for entry in principal.permissions)
    return granted(principal.permissions, permission, resource)


class TokenResolver(Protocol):
    async def resolve_token(self, token: str) -> Principal: ...


class LocalAuthenticator:
    """Resolves tokens in-process (the users service's session manager)."""

    def __init__(self, repository: TokenResolver) -> None:
        self.repository = repository

    async def authenticate(self, token: str) -> Principal:
        return await self.repository.resolve_token(token)


_HIT, _SHARED, _MISS = ({"result": r} for r in ("hit", "shared", "miss"))


class CachingAuthenticator:
    """Caches successful authentications for ``ttl_seconds`` (0 disables the cache)."""

    def __init__(
        self,
        inner: Authenticator,
        ttl_seconds: float,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[bytes, tuple[float, Principal]] = OrderedDict()
        self._inflight: dict[bytes, asyncio.Future[Principal]] = {}
        self._lookups = get_meter("mediagrid.auth").create_counter(
            "mediagrid.auth.cache",
            description="Token checks per result: hit (cached), shared (joined a lookup in "
            "flight), miss (asked the users service or the database).",
        )

    def __len__(self) -> int:
        return len(self._entries)

    async def authenticate(self, token: str) -> Principal:
        if self.ttl <= 0:
            return await self.inner.authenticate(token)
        key = hashlib.blake2b(token.encode(), digest_size=20).digest()
        entry = self._entries.get(key)
        if entry is not None:
            if entry[0] > self.clock():
                self._lookups.add(1, _HIT)
                return entry[1]
            del self._entries[key]
        while (pending := self._inflight.get(key)) is not None:
            try:
                self._lookups.add(1, _SHARED)
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this caller was cancelled, not the lookup it waited for
                # The caller doing the lookup was cancelled (its client went away): retry.
        future: asyncio.Future[Principal] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        self._lookups.add(1, _MISS)
        try:
            principal = await self.inner.authenticate(token)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: nobody else may be waiting
            raise
        else:
            future.set_result(principal)
            self._store(key, principal)
            return principal
        finally:
            del self._inflight[key]

    def _store(self, key: bytes, principal: Principal) -> None:
        self._entries[key] = (self.clock() + self.ttl, principal)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def evict(self, predicate: Callable[[Principal], bool]) -> int:
        """Drop cached principals matching ``predicate`` (used on revocations seen locally)."""
        doomed = [key for key, (_, principal) in self._entries.items() if predicate(principal)]
        for key in doomed:
            del self._entries[key]
        return len(doomed)

    def evict_session(self, session: str) -> int:
        return self.evict(lambda p: p.session == session)

    def evict_user(self, user: str) -> int:
        return self.evict(lambda p: p.name == user)

    def clear(self) -> None:
        self._entries.clear()


# What the users service answers about the caller's own request; anything else (an
# outage, a bug over there) means the users service is unavailable to us.
_CALLERS_ERRORS = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


def _status_error(error: grpc.aio.AioRpcError, what: str, users: Dependency) -> errors.DomainError:
    """A users-service answer (one that is not an outage) as the domain error to raise."""
    from common.grpc_errors import from_rpc_error

    code = error.code()
    if code in _CALLERS_ERRORS:
        exc = from_rpc_error(error)
        if code == grpc.StatusCode.UNAUTHENTICATED and exc.reason == code.name:
            exc.reason = "INVALID_TOKEN"  # an answer without ErrorInfo
        return exc
    return users.unavailable(
        f"the users service is unavailable ({what}: {code.name})",
        service=USERS_SERVICE,
        code=code.name,
    )


class RemoteAuthenticator:
    """Calls ``UserService/Authenticate`` over a channel; no caching of its own.

    The call goes through ``users`` (the users service as a peer dependency: its breaker
    and bound, ``common.peer_calls``) within ``timeout_seconds``: while the users service
    is down an uncached token is answered UNAVAILABLE ``DEPENDENCY_UNAVAILABLE`` (never
    UNAUTHENTICATED: the token may well be valid), at once once the breaker is open.
    """

    def __init__(
        self,
        channel: Callable[[], grpc.aio.Channel],
        users: Dependency,
        *,
        timeout_seconds: float,
    ) -> None:
        from mediagrid.users.v1 import user_service_pb2, user_service_pb2_grpc

        self._pb = user_service_pb2
        self._stub_type = user_service_pb2_grpc.UserServiceStub
        self._channel = channel
        self._stub: Any = None
        self.users = users
        self.timeout = timeout_seconds

    async def authenticate(self, token: str) -> Principal:
        if self._stub is None:
            self._stub = self._stub_type(self._channel())
        request = self._pb.AuthenticateRequest(token=token)
        metadata = outgoing_metadata(forward_token=False)
        try:
            response = await call_peer(
                self.users,
                lambda timeout: self._stub.Authenticate(
                    request, timeout=timeout, metadata=metadata
                ),
                what="Authenticate",
                cap=self.timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise _status_error(exc, "Authenticate", self.users) from None
        return _principal_from_proto(response.principal)


def _principal_from_proto(message: Any) -> Principal:
    roles = {1: "admin", 2: "user", 3: "service"}
    role = roles.get(message.role)
    if role is None or not message.user.startswith("users/"):
        raise errors.Unavailable(
            "the users service returned an incomplete principal",
            reason="DEPENDENCY_UNAVAILABLE",
            metadata={"dependency": USERS, "service": USERS_SERVICE},
        )
    return Principal(
        name=message.user,
        user_id=message.user.removeprefix("users/"),
        role=role,
        permissions=frozenset(message.permissions),
        session=message.session or None,
        api_key=message.api_key or None,
    )


def remote_authenticator(ctx: AppContext) -> Authenticator:
    """A cached authenticator that asks the users service at ``ctx.channel("users")``.

    While the users service is unreachable, principals cached before the outage keep
    working until their entry's TTL (``auth_cache_ttl_seconds``) ends; other tokens are
    answered UNAVAILABLE.
    """
    settings = ctx.settings
    return CachingAuthenticator(
        RemoteAuthenticator(
            lambda: ctx.channel(USERS),
            ctx.dependencies.peer(USERS),
            timeout_seconds=settings.auth_timeout_seconds,
        ),
        settings.auth_cache_ttl_seconds,
        max_entries=settings.auth_cache_max_entries,
    )


class RemoteActivityRecorder:
    """Records activity through ``UserService/RecordActivity`` on behalf of the current caller.

    The caller's bearer token is forwarded, so the entry's actor is the authenticated caller.
    An explicit ``actor`` needs a service or admin caller. When there is no caller (background
    work without a token) or the users service is unreachable (the call goes through
    ``users``, the peer dependency, within ``timeout_seconds``), the entry goes to the log at
    ERROR level with all its fields instead: it is never silently dropped, and the action
    that was already done is not failed after the fact.
    """

    def __init__(
        self,
        channel: Callable[[], grpc.aio.Channel],
        users: Dependency,
        *,
        timeout_seconds: float,
    ) -> None:
        from mediagrid.users.v1 import user_service_pb2, user_service_pb2_grpc

        self._pb = user_service_pb2
        self._stub_type = user_service_pb2_grpc.UserServiceStub
        self._channel = channel
        self._stub: Any = None
        self.users = users
        self.timeout = timeout_seconds

    async def record(
        self,
        action: str,
        resource: str,
        metadata: Mapping[str, str] | None = None,
        *,
        actor: str | None = None,
    ) -> None:
        principal = optional_principal()
        entry = {
            "action": action,
            "resource": resource,
            "metadata": dict(metadata or {}),
            "actor": actor or (principal.name if principal else "system"),
            "request_id": current_request_id(),
        }
        if principal is None or not principal.token:
            log.error(
                "activity not recorded remotely (no caller token): %s",
                entry,
                extra={"activity": entry},
            )
            return
        if self._stub is None:
            self._stub = self._stub_type(self._channel())
        request = self._pb.RecordActivityRequest(
            action=action,
            resource=resource,
            metadata={str(k): str(v) for k, v in (metadata or {}).items()},
            actor=actor or "",
            request_id=current_request_id() or "",
        )
        outgoing = outgoing_metadata()  # the caller's token and the request id
        try:
            try:
                await call_peer(
                    self.users,
                    lambda timeout: self._stub.RecordActivity(
                        request, timeout=timeout, metadata=outgoing
                    ),
                    what="RecordActivity",
                    cap=self.timeout,
                )
            except grpc.aio.AioRpcError as exc:
                raise _status_error(exc, "RecordActivity", self.users) from None
        except errors.Unavailable:
            log.error(
                "activity not recorded (users unavailable): %s",
                entry,
                extra={"activity": entry},
            )


def remote_activity_recorder(ctx: AppContext) -> RemoteActivityRecorder:
    return RemoteActivityRecorder(
        lambda: ctx.channel(USERS),
        ctx.dependencies.peer(USERS),
        timeout_seconds=ctx.settings.auth_timeout_seconds,
    )
