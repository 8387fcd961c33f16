"""First-start helpers: the bootstrap admin, and service accounts with their tokens.

``issue_service_token`` ensures a ``service`` account with the literal grants it needs (an
internal job type's ``jobs.create:job-types/{type}``) and opens a session for it; it runs
where the users service's schema is (the users service's own process, or a process serving it).
``ServiceToken`` is the one holder of such a token for the calls a service makes as itself.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import grpc

from common.app import AppContext
from common.errors import AlreadyExists, DomainError, Unauthenticated
from common.grpc_errors import from_rpc_error
from common.interceptors import outgoing_metadata
from common.settings import Environment, Settings
from services.users import validation
from services.users.passwords import Passwords
from services.users.repository import UserRepository
from services.users.sessions import SessionManager

log = logging.getLogger("mediagrid.users.bootstrap")

T = TypeVar("T")
Metadata = tuple[tuple[str, str], ...]
# (permission, resource pattern) of a grant, e.g. ("jobs.create", "job-types/users.purge").
GrantSpec = tuple[str, str]
# Who a service account's grants are recorded as created by.
GRANT_CREATOR = "system"

# Used only in the dev environment when neither bootstrap variable is set (see docs/users.md).
DEV_ADMIN_EMAIL = "admin@example.com"
DEV_ADMIN_PASSWORD = "mediagrid-dev-admin"


def bootstrap_credentials(settings: Settings) -> tuple[str, str, bool] | None:
    """(email, password, is_dev_default) of the admin to ensure, or None."""
    email = settings.bootstrap_admin_email
    password = settings.bootstrap_admin_password
    if email and password:
        return email, password.get_secret_value(), False
    if email or password:
        log.warning(
            "MEDIAGRID_BOOTSTRAP_ADMIN_EMAIL and MEDIAGRID_BOOTSTRAP_ADMIN_PASSWORD "
            "must both be set; no bootstrap admin created"
        )
        return None
    if settings.environment == Environment.DEV:
        return DEV_ADMIN_EMAIL, DEV_ADMIN_PASSWORD, True
    return None


async def ensure_bootstrap_admin(
    repository: UserRepository, passwords: Passwords, settings: Settings
) -> str | None:
    """Create the bootstrap admin when configured and absent; return its email when ensured."""
    wanted = bootstrap_credentials(settings)
    if wanted is None:
        return None
    raw_email, password, dev_default = wanted
    email = validation.email(raw_email, "MEDIAGRID_BOOTSTRAP_ADMIN_EMAIL")
    validation.password(
        password,
        min_length=settings.password_min_length,
        email_address=email,
        field="MEDIAGRID_BOOTSTRAP_ADMIN_PASSWORD",
    )
    if await repository.find_credentials(email) is None:
        try:
            await repository.create_user(
                email=email,
                display_name="Administrator",
                role="admin",
                password_hash=await passwords.hash(password),
            )
            log.info("created the bootstrap admin %s", email)
        except AlreadyExists:  # another replica created it at the same moment
            pass
    if dev_default:
        address = f"{settings.grpc_host}:{settings.grpc_port}"
        log.warning(
            "dev mode: log in as %s with password %r, for example:\n  %s curl --protocol grpc "
            '--http2-prior-knowledge -d \'{"email": "%s", "password": "%s"}\' '
            "http://%s/mediagrid.users.v1.UserService/Login",
            email,
            password,
            buf_command(),
            email,
            password,
            address,
        )
    return email


def buf_command() -> str:
    """``buf`` when it is on PATH, else where ``npm install`` puts it (README: node_modules)."""
    return "buf" if shutil.which("buf") else "node_modules/.bin/buf"


async def issue_service_token(ctx: AppContext, email: str, grants: Iterable[GrantSpec] = ()) -> str:
    """Ensure an active ``service`` user with this email holding ``grants``; return a fresh
    session token for it.

    Idempotent: the account and each grant are created only when absent, so every replica
    (and every restart) may call it.
    """
    repository = UserRepository(ctx.pool)
    clean = validation.email(email)
    credentials = await repository.find_credentials(clean)
    if credentials is None:
        try:
            user = await repository.create_user(
                email=clean, display_name=clean.split("@")[0], role="service", password_hash=None
            )
        except AlreadyExists:
            found = await repository.find_credentials(clean)
            assert found is not None
            user = found.user
    else:
        user = credentials.user
        if user.role != "service" or user.status != "active":
            raise AlreadyExists(
                f"{clean} exists and is not an active service user", reason="NOT_A_SERVICE_USER"
            )
    for permission, resource in grants:
        await repository.grant(
            user_id=user.id, permission=permission, resource=resource, creator=GRANT_CREATOR
        )
    sessions = SessionManager(repository, ctx.settings, Passwords.from_settings(ctx.settings))
    token, _ = await sessions.open_session(user.id, user_agent="mediagrid-service")
    return token


class ServiceToken:
    """The bearer token of the service account a service acts as when it acts as itself.

    The token is obtained on first use (``obtain``: ``issue_service_token`` in the users
    service's process, or a configured token elsewhere) and shared by concurrent callers. A
    call refused as UNAUTHENTICATED (the session idled out or was revoked) is retried once
    with a renewed token.
    """

    def __init__(self, obtain: Callable[[], Awaitable[str]]) -> None:
        self._obtain = obtain
        self._token: str | None = None
        self._lock = asyncio.Lock()

    async def token(self, *, refused: str | None = None) -> str:
        """The current token; a new one when ``refused`` is still the current one."""
        async with self._lock:
            if self._token is None or self._token == refused:
                self._token = await self._obtain()
            return self._token

    async def call(self, rpc: Callable[[Metadata], Awaitable[T]]) -> T:
        """``rpc(metadata)`` as the service (its token and the current request id).

        A failed call raises the domain error its status stands for.
        """
        token = await self.token()
        for renewed in (False, True):
            metadata = (
                *outgoing_metadata(forward_token=False),
                ("authorization", f"Bearer {token}"),
            )
            try:
                return await rpc(metadata)
            except grpc.aio.AioRpcError as exc:
                error: DomainError = from_rpc_error(exc)
                if isinstance(error, Unauthenticated) and not renewed:
                    token = await self.token(refused=token)
                    continue
                raise error from exc
        raise AssertionError("unreachable: the second attempt returns or raises")
