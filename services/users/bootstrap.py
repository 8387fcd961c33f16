"""First-start helpers: the bootstrap admin and service tokens for in-process workers."""

from __future__ import annotations

import logging

from common.app import AppContext
from common.errors import AlreadyExists
from common.settings import Environment, Settings
from services.users import validation
from services.users.passwords import Passwords
from services.users.repository import UserRepository
from services.users.sessions import SessionManager

log = logging.getLogger("mediagrid.users.bootstrap")

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
            "dev mode: log in as %s with password %r, for example:\n  buf curl --protocol grpc "
            '--http2-prior-knowledge -d \'{"email": "%s", "password": "%s"}\' '
            "http://%s/mediagrid.users.v1.UserService/Login",
            email,
            password,
            email,
            password,
            address,
        )
    return email


async def issue_service_token(ctx: AppContext, email: str) -> str:
    """Ensure a ``service`` user with this email exists and return a fresh session token for it."""
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
    sessions = SessionManager(repository, ctx.settings, Passwords.from_settings(ctx.settings))
    token, _ = await sessions.open_session(user.id, user_agent="mediagrid-service")
    return token
