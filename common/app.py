"""What a service gets at start-up (``AppContext``) and what it hands back (``ServiceInstance``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from common.activity import ActivityRecorder, LoggingActivityRecorder
from common.aws import AwsClients
from common.channels import ChannelCache
from common.context import Principal
from common.db import SuitePool
from common.dependencies import Dependencies
from common.errors import Unavailable
from common.interceptors import Authenticator
from common.settings import Settings


@dataclass
class AppContext:
    """Shared, process-wide resources created once by the runtime and closed by it."""

    settings: Settings
    # Every statement goes through ``dependencies.database`` (bound in __post_init__).
    pool: SuitePool
    aws: AwsClients
    # Address ("host:port") of each service of the suite; in `serve all` they share one.
    addresses: dict[str, str] = field(default_factory=dict)
    # Set by the users service (or the runtime, with a remote authenticator) before serving.
    authenticator: Authenticator | None = None
    # Set by the users service: a service user's principal by email, for client
    # certificates mapped to service users (``tls_client_principals``).
    service_principals: Callable[[str], Awaitable[Principal]] | None = None
    # Chosen by the runtime before any service is built (common.runtime._activity_recorder).
    activity: ActivityRecorder = field(default_factory=LoggingActivityRecorder)
    # PostgreSQL, S3 and the peer services, each with its circuit breaker: every outgoing
    # call goes through one of them (``await ctx.dependencies.s3.call(...)``).
    dependencies: Dependencies = field(init=False)
    _channels: ChannelCache = field(init=False)

    def __post_init__(self) -> None:
        self._channels = ChannelCache(
            self.addresses, self.settings.grpc_max_message_bytes, self.settings
        )
        self.dependencies = Dependencies(self.settings)
        self.pool.dependency = self.dependencies.database
        self.dependencies.watch_pool(self.pool)

    def channel(self, service: str) -> grpc.aio.Channel:
        """A shared client channel to ``service`` (its configured or in-process address)."""
        return self._channels(service)

    def peer_channel(self, service: str, full_name: str) -> grpc.aio.Channel:
        """The channel to peer ``service`` (``full_name`` its gRPC service, for the error);
        UNAVAILABLE ``DEPENDENCY_UNAVAILABLE`` when this deployment does not run it."""
        if service not in self.addresses:
            raise Unavailable.not_deployed(full_name)
        return self._channels(service)

    async def close_channels(self) -> None:
        await self._channels.close()


@dataclass
class ServiceInstance:
    """One started service: how to register it on a server, its health and its lifecycle."""

    name: str
    # Fully qualified gRPC service names, for health and reflection.
    service_names: list[str]
    # Adds the servicers to a server (the generated add_XServicer_to_server calls).
    register: Callable[[grpc.aio.Server], None]
    # RPC paths reachable without a token (e.g. "/mediagrid.users.v1.UserService/Login").
    public_methods: list[str] = field(default_factory=list)
    # RPC paths called on a timer or as a long poll (a worker's ClaimJobs, its heartbeats):
    # their successful calls are logged at DEBUG, so an idle suite's log stays readable.
    quiet_methods: list[str] = field(default_factory=list)
    # Long-running background loops (sweeps, reapers); cancelled at shutdown.
    background: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # The dependencies this service cannot answer without, by name (``common.dependencies``:
    # "postgresql", "s3", or a peer service such as "users"): its health follows their
    # checks and circuit breakers, and no other dependency's (docs/operations.md, "Health").
    requires: list[str] = field(default_factory=list)
    # The service's own dependency checks (e.g. S3); False flips this service's names (not
    # the other services') to NOT_SERVING.
    health_checks: list[Callable[[], Awaitable[bool]]] = field(default_factory=list)
    close: Callable[[], Awaitable[None]] | None = None


class ServiceFactory(Protocol):
    async def __call__(self, ctx: AppContext) -> ServiceInstance: ...
