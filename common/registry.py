"""The services of the suite: name, schema, migrations and the factory that builds each.

Factories are imported lazily so that ``mediagrid serve users`` loads only users' code.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from common.activity import ActivityRecorder
    from common.app import AppContext, ServiceFactory, ServiceInstance

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    schema: str
    factory: str  # "module:function" returning a ServiceInstance
    # "module:function" returning the activity recorder of every service in the process,
    # for the service that owns the activity log.
    activity: str | None = None

    @property
    def migrations(self) -> Path:
        return ROOT / "services" / self.name / "sql" / "migrations"

    def load_factory(self) -> ServiceFactory:
        return _load(self.factory)  # type: ignore[no-any-return]

    def activity_recorder(self, ctx: AppContext) -> ActivityRecorder | None:
        """The recorder this service provides for the process, if it owns the activity log."""
        if self.activity is None:
            return None
        return _load(self.activity)(ctx)  # type: ignore[no-any-return]

    async def create(self, ctx: AppContext) -> ServiceInstance:
        return await self.load_factory()(ctx)


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


# Start order matters for `serve all`: users first (others authenticate through it).
SERVICES: dict[str, ServiceSpec] = {
    "users": ServiceSpec(
        "users", "users", "services.users.app:create", "services.users.activity:database_recorder"
    ),
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
