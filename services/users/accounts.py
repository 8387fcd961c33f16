"""The users service's account rules, free of protobuf: the servicer and the CLI call them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from common.context import Role
from common.errors import AlreadyExists, FieldViolation, Violations
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
        violations: Iterable[FieldViolation] = (),
    ) -> User:
        """Validate everything first, then hash (slow) and insert.

        ``violations`` are the caller's own findings about the same request (a role it could
        not read), reported together with these: the caller hears about every bad field once.
        """
        found = Violations()
        clean_email = found.check(lambda: validation.email(email, "user.email"), "")
        clean_name = found.check(
            lambda: validation.display_name(display_name, "user.display_name"), ""
        )
        found.extend(violations)  # in the request's field order: the role comes next
        if password or role != "service":
            found.check(
                lambda: validation.password(
                    password,
                    min_length=self.settings.password_min_length,
                    email_address=clean_email,
                )
            )
        only_password = [v.field for v in found] == ["password"]
        found.raise_if_any("WEAK_PASSWORD" if only_password else None)
        if await self.repository.find_credentials(clean_email) is not None:
            raise AlreadyExists(
                f"a user with email {clean_email!r} already exists",
                reason="EMAIL_TAKEN",
                metadata={"email": clean_email},
            )
        # The insert below still enforces uniqueness; the check above only avoids hashing.
        password_hash = await self.passwords.hash(password) if password else None
        return await self.repository.create_user(
            email=clean_email,
            display_name=clean_name or clean_email.split("@")[0],
            role=role,
            password_hash=password_hash,
        )
