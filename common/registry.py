"""The services of the suite: name, schema, migrations and the factory that builds each.

Factories are imported lazily so that ``mediagrid serve users`` loads only users' code.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from common.app import AppContext, ServiceFactory, ServiceInstance

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    schema: str
    factory: str  # "module:function" returning a ServiceInstance

    @property
    def migrations(self) -> Path:
        return ROOT / "services" / self.name / "sql" / "migrations"

    def load_factory(self) -> ServiceFactory:
        module, _, attr = self.factory.partition(":")
        return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]

    async def create(self, ctx: AppContext) -> ServiceInstance:
        return await self.load_factory()(ctx)


# Start order matters for `serve all`: users first (others authenticate through it).
SERVICES: dict[str, ServiceSpec] = {
    "users": ServiceSpec("users", "users", "services.users.app:create"),
    "jobs": ServiceSpec("jobs", "jobs", "services.jobs.app:create"),
    "files": ServiceSpec("files", "files", "services.files.app:create"),
}


def resolve(names: list[str] | tuple[str, ...]) -> list[ServiceSpec]:
    """Specs for the given names (``all`` = every service), in start order."""
    wanted = set(SERVICES) if not names or "all" in names else set(names)
    unknown = wanted - set(SERVICES)
    if unknown:
        raise ValueError(
            f"unknown service(s): {', '.join(sorted(unknown))}; choose from {', '.join(SERVICES)} or all"
        )
    return [spec for name, spec in SERVICES.items() if name in wanted]
