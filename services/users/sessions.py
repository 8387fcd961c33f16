"""Login, session tokens and authentication of tokens.

A token is ``mgs_`` + 43 URL-safe characters (256 bits from ``secrets``); only its SHA-256
is stored. A session ends at its absolute expiry, after the idle timeout without use, or when
revoked. ``last_use_time`` is refreshed at most every ``touch_interval`` so that an
authenticated call is not a database write each time.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from common.context import Principal
from common.errors import Unauthenticated, Violations
from common.settings import Settings
from services.users import validation
from services.users.models import Session, User
from services.users.passwords import Passwords
from services.users.permissions import effective_permissions
from services.users.repository import UserRepository
from services.users.throttle import LoginThrottle

TOKEN_PREFIX = "mgs_"
_TOKEN_RE = re.compile(r"^mgs_[A-Za-z0-9_-]{43}$")
INVALID_CREDENTIALS = "invalid email or password"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class SessionManager:
    """Logs users in, turns tokens into principals and ends sessions."""

    def __init__(
        self, repository: UserRepository, settings: Settings, passwords: Passwords
    ) -> None:
        self.repository = repository
        self.settings = settings
        self.passwords = passwords
        self.throttle = LoginThrottle(repository, settings)
        idle = settings.session_idle_timeout_seconds
        self.touch_interval = min(60.0, idle / 10)

    async def login(
        self,
        email: str,
        password: str,
        *,
        user_agent: str = "",
        peer: str = "",
        address: str = "",
    ) -> tuple[str, Session, User]:
        """Check the credentials and open a session; failures look the same whatever the cause.

        ``address`` is the client address the throttle counts (``throttle.client_address``);
        ``peer`` is kept with the session as it came.
        """
        found = Violations()
        if not email:
            found.add("email", "is required")
        elif len(email) > validation.MAX_EMAIL_LENGTH:
            found.add("email", "is too long")
        if not password:
            found.add("password", "is required")
        elif len(password) > validation.MAX_PASSWORD_LENGTH:
            found.add("password", "is too long")
        found.raise_if_any()
        address = address or "unknown"
        await self.throttle.check(email, address)
        credentials = await self.repository.find_credentials(email)
        stored = credentials.password_hash if credentials else None
        ok = await self.passwords.verify(stored, password)
        if not ok or credentials is None or credentials.user.status != "active":
            await self.throttle.failed(email, address)
            raise Unauthenticated(INVALID_CREDENTIALS, reason="INVALID_CREDENTIALS")
        user = credentials.user
        assert stored is not None
        if self.passwords.needs_rehash(stored):
            await self.repository.rehash_password(
                user.id, stored, await self.passwords.hash(password)
            )
        await self.throttle.succeeded(email, address)
        token, session = await self.open_session(user.id, user_agent=user_agent, peer=peer)
        await self.repository.record_login(user.id)
        return token, session, user

    async def open_session(
        self, user_id: str, *, user_agent: str = "", peer: str = ""
    ) -> tuple[str, Session]:
        token = new_token()
        session = await self.repository.create_session(
            user_id=user_id,
            token_hash=token_hash(token),
            lifetime_seconds=self.settings.session_absolute_timeout_seconds,
            user_agent=user_agent[:256],
            peer=peer[:128],
        )
        return token, session

    async def service_principal(self, email: str) -> Principal:
        """The principal of an active service user, for a client certificate mapped to it
        (``tls_client_principals``): its role's permissions and its grants, as its token's."""
        credentials = await self.repository.find_credentials(email)
        user = credentials.user if credentials else None
        if user is None or user.role != "service" or user.status != "active":
            raise Unauthenticated(
                "the client certificate maps to no active service user",
                reason="CERTIFICATE_USER_INVALID",
            )
        grants = await self.repository.list_grants(
            user_id=user.id, permission=None, resource=None, after=None, limit=100_000
        )
        return Principal(
            name=f"users/{user.id}",
            user_id=user.id,
            role=user.role,
            permissions=effective_permissions(
                user.role, [f"{g.permission}:{g.resource}" for g in grants]
            ),
        )

    async def resolve_token(self, token: str) -> Principal:
        """The principal behind a token, or UNAUTHENTICATED saying why it is not valid."""
        if not _TOKEN_RE.fullmatch(token):
            raise Unauthenticated(
                "the token is not a mediagrid session token", reason="INVALID_TOKEN"
            )
        found = await self.repository.session_auth(
            token_hash(token),
            idle_seconds=self.settings.session_idle_timeout_seconds,
            touch_after_seconds=self.touch_interval,
        )
        if found is None:
            raise Unauthenticated("the token is not valid", reason="INVALID_TOKEN")
        auth, within_absolute, within_idle, needs_touch = found
        session = auth.session
        if session.revoke_time is not None:
            raise Unauthenticated("the session was revoked", reason="SESSION_REVOKED")
        if auth.status != "active":
            raise Unauthenticated("the user is not active", reason="USER_INACTIVE")
        if not within_absolute:
            raise Unauthenticated("the session expired", reason="SESSION_EXPIRED")
        if not within_idle:
            raise Unauthenticated("the session expired after being idle", reason="SESSION_IDLE")
        if needs_touch:
            await self.repository.touch_session(session.id)
        return Principal(
            name=f"users/{session.user_id}",
            user_id=session.user_id,
            role=auth.role,
            permissions=effective_permissions(auth.role, auth.grants),
            session=session.name,
        )
