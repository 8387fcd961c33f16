"""Test-only authenticator: fixed tokens mapped to principals (no users service needed)."""

from __future__ import annotations

from common.context import Principal
from common.errors import Unauthenticated


class StaticAuthenticator:
    def __init__(self, principals: dict[str, Principal]) -> None:
        self.principals = principals

    async def authenticate(self, token: str) -> Principal:
        try:
            return self.principals[token]
        except KeyError:
            raise Unauthenticated("unknown token", reason="INVALID_TOKEN") from None


def principal(user_id: str, role: str = "user") -> Principal:
    return Principal(name=f"users/{user_id}", user_id=user_id, role=role)  # type: ignore[arg-type,unused-ignore]


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)
