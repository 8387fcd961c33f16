"""Per-call context variables: the authenticated principal and the request id.

The suite interceptor sets them before a handler runs (in the handler's own task), so
handlers and anything they call read them without threading arguments through.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Literal

from pydantic import BaseModel, ConfigDict

from common.errors import Unauthenticated

Role = Literal["admin", "user", "service"]


class Principal(BaseModel):
    """Who is calling: a user (``users/{id}``) with a role and effective permissions."""

    model_config = ConfigDict(frozen=True)

    name: str
    user_id: str
    role: Role
    permissions: frozenset[str] = frozenset()
    session: str | None = None
    # The API key that authenticated (``users/{id}/apiKeys/{key}``); its scope is already
    # applied to ``permissions``, and ``common.auth.scope_allows`` applies it to role checks.
    api_key: str | None = None
    token: str | None = None  # the bearer token, to forward on calls made on this caller's behalf

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_service(self) -> bool:
        return self.role == "service"


current_principal_var: ContextVar[Principal | None] = ContextVar("principal", default=None)
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


def current_principal() -> Principal:
    """The caller of the current RPC; UNAUTHENTICATED when the call carried no valid token."""
    principal = current_principal_var.get()
    if principal is None:
        raise Unauthenticated("this call requires an 'authorization: Bearer <token>' header")
    return principal


def optional_principal() -> Principal | None:
    return current_principal_var.get()


def current_request_id() -> str | None:
    return request_id_var.get()
