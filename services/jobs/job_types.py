"""Job types are declared capabilities: who may create each one, its payload, its limits.

A job of an undeclared type is refused, so nobody can enqueue work (``users.purge`` of
another user, a raw ``video.probe``) that no owner of that type meant to offer. Each
declaration says:

- which caller kinds may create it (``user``, ``service``, ``admin``), or none at all: an
  *internal* type, created only by its owning service (the literal grant
  ``jobs.create:job-types/{type}``, see ``access.owns_job_type``; the owner of any type may
  create it whatever its creators);
- its payload model (pydantic), or none: any JSON object within ``job_payload_max_bytes``;
- its longest run (workers cap a handler's timeout at it);
- the bounds of its priority, inside the caller's own range (users and admins up to
  ``job_priority_max``, services up to ``job_service_priority_max``).

Declarations live beside the code that owns a type, in protobuf-free modules exposing a
``JOB_TYPES`` tuple, named by the setting ``job_type_modules``; a deployment adds types of
its own workers with ``job_types``. The demo types exist only while ``demo_job_types`` is on.

``check_specs`` applies the rules to the specs of one call, in a fixed order: known type,
caller kind admitted, payload schema, priority; the first rule that fails refuses the call.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from common.auth import scope_allows
from common.context import Principal
from common.errors import FieldViolation, InvalidArgument, PermissionDenied
from common.settings import (
    DEMO_JOB_TYPES_MODULE,
    ConfigurationError,
    JobTypeSetting,
    Settings,
    demo_modules_in_force,
)
from services.jobs.access import owns_job_type
from services.jobs.models import JobSpec
from services.jobs.validation import TYPE_MAX_LENGTH, TYPE_RE

CallerKind = Literal["user", "service", "admin"]
CALLER_KINDS: tuple[CallerKind, ...] = ("user", "service", "admin")
# Creators of an internal type: no caller kind, only the service that owns the type.
INTERNAL: frozenset[CallerKind] = frozenset()
EVERYONE: frozenset[CallerKind] = frozenset(CALLER_KINDS)
# Violations reported per refused call (a batch may hold thousands of bad specs).
MAX_VIOLATIONS = 100
# Characters of a payload key shown in a field path.
KEY_SHOWN = 64


def caller_kind(principal: Principal) -> CallerKind:
    return principal.role


@dataclass(frozen=True)
class JobType:
    """The declaration of one job type."""

    name: str
    creators: frozenset[CallerKind]
    max_run_seconds: float
    payload: type[BaseModel] | None = None
    priority_min: int | None = None
    priority_max: int | None = None

    def __post_init__(self) -> None:
        if len(self.name) > TYPE_MAX_LENGTH or not TYPE_RE.fullmatch(self.name):
            raise ValueError(f"job type {self.name!r} is not a valid type name")
        if not self.creators <= EVERYONE:
            raise ValueError(f"job type {self.name!r}: unknown creators {sorted(self.creators)}")
        if not (math.isfinite(self.max_run_seconds) and self.max_run_seconds > 0):
            raise ValueError(f"job type {self.name!r}: max_run_seconds must be positive")
        if (
            self.priority_min is not None
            and self.priority_max is not None
            and self.priority_min > self.priority_max
        ):
            raise ValueError(f"job type {self.name!r}: priority_min exceeds priority_max")

    @property
    def internal(self) -> bool:
        return not self.creators

    def admits(self, principal: Principal) -> bool:
        """Whether ``principal`` may create jobs of this type (for itself or, if it owns the
        type, for another user)."""
        return (
            caller_kind(principal) in self.creators or owns_job_type(principal, self.name)
        ) and scope_allows(principal, "jobs.create", f"job-types/{self.name}")

    @functools.cached_property
    def _accepts_empty(self) -> bool:
        return self.payload is None or not self._violations(self.payload, {}, "payload")

    def payload_violations(self, payload: Mapping[str, Any], field: str) -> list[FieldViolation]:
        """What is wrong with ``payload`` under this type's model (field paths under ``field``)."""
        if self.payload is None or (not payload and self._accepts_empty):
            return []
        return self._violations(self.payload, payload, field)

    @staticmethod
    def _violations(
        model: type[BaseModel], payload: Mapping[str, Any], field: str
    ) -> list[FieldViolation]:
        try:
            model.model_validate(payload)
        except ValidationError as exc:
            # Neither the input nor pydantic's context is echoed: a payload may hold secrets.
            return [
                FieldViolation(_path(field, error["loc"]), error["msg"])
                for error in exc.errors(
                    include_url=False, include_input=False, include_context=False
                )
            ]
        return []

    def priority_range(self, kind: CallerKind, settings: Settings) -> tuple[int, int]:
        """The priorities a caller of ``kind`` may give jobs of this type (inclusive)."""
        cap = settings.job_service_priority_max if kind == "service" else settings.job_priority_max
        low = settings.job_priority_min
        if self.priority_min is not None:
            low = max(low, self.priority_min)
        high = cap if self.priority_max is None else min(cap, self.priority_max)
        return low, high


def _path(field: str, loc: Iterable[int | str]) -> str:
    path = field
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:  # an unexpected key is named, but a long one only by its start
            path += f".{part[:KEY_SHOWN]}" + ("..." if len(part) > KEY_SHOWN else "")
    return path


def from_setting(declared: JobTypeSetting) -> JobType:
    """A type of ``MEDIAGRID_JOB_TYPES``: any JSON object as payload."""
    creators: frozenset[CallerKind] = frozenset(k for k in CALLER_KINDS if k in declared.creators)
    return JobType(
        declared.type,
        creators,
        declared.max_run_seconds,
        None,
        declared.priority_min,
        declared.priority_max,
    )


class JobTypeRegistry:
    """Every declared job type of this process, by name."""

    def __init__(self, types: Iterable[JobType]) -> None:
        self._types: dict[str, JobType] = {}
        for job_type in types:
            if job_type.name in self._types:
                raise ConfigurationError(f"job type {job_type.name!r} is declared twice")
            self._types[job_type.name] = job_type

    @property
    def types(self) -> Mapping[str, JobType]:
        return self._types

    def get(self, name: str) -> JobType | None:
        return self._types.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self) -> Iterator[JobType]:
        return iter(sorted(self._types.values(), key=lambda t: t.name))


def declared_modules(settings: Settings) -> list[str]:
    """The declaration modules in force: the demo module only while demo types are on."""
    return demo_modules_in_force(
        settings.job_type_modules, DEMO_JOB_TYPES_MODULE, bool(settings.demo_job_types)
    )


def registry(settings: Settings) -> JobTypeRegistry:
    """The job types ``settings`` declare (built once per distinct declaration)."""
    extra = json.dumps([t.model_dump() for t in settings.job_types], sort_keys=True)
    return _registry(tuple(declared_modules(settings)), extra)


@functools.lru_cache(maxsize=32)
def _registry(modules: tuple[str, ...], extra: str) -> JobTypeRegistry:
    types: list[JobType] = []
    for module in modules:
        try:
            declared = importlib.import_module(module).JOB_TYPES
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(
                f"MEDIAGRID_JOB_TYPE_MODULES: {module} declares no JOB_TYPES ({exc})"
            ) from None
        types.extend(declared)
    types.extend(from_setting(JobTypeSetting(**t)) for t in json.loads(extra))
    return JobTypeRegistry(types)


def job_path(index: int) -> str:
    """Field path of CreateJob's only spec."""
    return "job"


def batch_path(index: int) -> str:
    """Field path of CreateBatch's ``index``-th spec."""
    return f"jobs[{index}]"


def check_specs(
    declared: JobTypeRegistry,
    principal: Principal,
    specs: Sequence[JobSpec],
    settings: Settings,
    path: Callable[[int], str] = job_path,
) -> None:
    """Refuse the call unless every spec is of a declared type ``principal`` may create,
    with a payload its model accepts and a priority within the caller's and type's range.

    Each distinct type is looked up, admitted and given its priority range once per call
    (a batch holds thousands of specs of a few types); payloads are validated only for types
    with a model.
    """
    names = list(dict.fromkeys(spec.type for spec in specs))  # distinct, in spec order
    unknown = sorted(name for name in names if name not in declared)
    if unknown:
        raise InvalidArgument(
            reason="UNKNOWN_JOB_TYPE",
            violations=[
                FieldViolation(f"{path(index)}.type", "is not a declared job type")
                for index, spec in enumerate(specs)
                if spec.type not in declared
            ][:MAX_VIOLATIONS],
            metadata={"type": unknown[0]},
        )
    kind = caller_kind(principal)
    rules: dict[str, tuple[JobType, int, int]] = {}
    for name in names:
        job_type = declared.types[name]
        if not job_type.admits(principal):
            index = next(i for i, s in enumerate(specs) if s.type == name)
            raise PermissionDenied(
                f"only the service owning job type {name!r} may create it"
                if job_type.internal
                else f"a caller with role {kind} may not create jobs of type {name!r}",
                reason="JOB_TYPE_NOT_ALLOWED",
                metadata={"type": name, "field": f"{path(index)}.type"},
            )
        rules[name] = (job_type, *job_type.priority_range(kind, settings))
    payloads: list[FieldViolation] = []
    priorities: list[FieldViolation] = []
    for index, spec in enumerate(specs):
        job_type, low, high = rules[spec.type]
        if job_type.payload is not None and len(payloads) < MAX_VIOLATIONS:
            payloads += job_type.payload_violations(spec.payload, f"{path(index)}.payload")
        if not low <= spec.priority <= high and len(priorities) < MAX_VIOLATIONS:
            priorities.append(
                FieldViolation(
                    f"{path(index)}.priority",
                    f"must be between {low} and {high} for a {kind} creating {spec.type}",
                )
            )
    if payloads:
        raise InvalidArgument(reason="INVALID_PAYLOAD", violations=payloads[:MAX_VIOLATIONS])
    if priorities:
        raise InvalidArgument(reason="PRIORITY_OUT_OF_RANGE", violations=priorities)
