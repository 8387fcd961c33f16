"""The users service's account rules, free of protobuf: the servicer and the CLI call them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from common.context import Role
from common.errors import AlreadyExists, FieldViolation, InvalidArgument
from common.settings import Settings
from services.users import validation
from services.users.models import User
from services.users.passwords import Passwords
from services.users.repository import UserRepository


@dataclass(frozen=True)
class Accounts:
    repository: UserRepository
    passwords: Passwords
    settings: Settings

    async def create_user(
        self,
        *,
        email: str,
        display_name: str,
        role: Role,
        password: str,
        violations: Sequence[FieldViolation] = (),
    ) -> User:
        """Validate everything first, then hash (slow) and insert.

        ``violations`` are the caller's own findings about the same request (a role it could
        not read), reported together with these: the caller hears about every bad field once.
        """
        found: list[FieldViolation] = []
        clean: dict[str, Any] = {}

        def check(key: str, rule: Callable[[], Any]) -> None:
            try:
                clean[key] = rule()
            except InvalidArgument as exc:
                found.extend(exc.violations)

        check("email", lambda: validation.email(email, "user.email"))
        check("display_name", lambda: validation.display_name(display_name, "user.display_name"))
        found.extend(violations)  # in the request's field order: the role comes next
        if password or role != "service":
            check(
                "password",
                lambda: validation.password(
                    password,
                    min_length=self.settings.password_min_length,
                    email_address=clean.get("email", ""),
                ),
            )
        if found:
            only_password = [v.field for v in found] == ["password"]
            raise InvalidArgument(
                violations=found, reason="WEAK_PASSWORD" if only_password else None
            )
        if await self.repository.find_credentials(clean["email"]) is not None:
            raise AlreadyExists(
                f"a user with email {clean['email']!r} already exists",
                reason="EMAIL_TAKEN",
                metadata={"email": clean["email"]},
            )
        # The insert below still enforces uniqueness; the check above only avoids hashing.
        password_hash = await self.passwords.hash(password) if password else None
        return await self.repository.create_user(
            email=clean["email"],
            display_name=clean["display_name"] or clean["email"].split("@")[0],
            role=role,
            password_hash=password_hash,
        )
