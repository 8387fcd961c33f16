"""What a service gets at start-up (``AppContext``) and what it hands back (``ServiceInstance``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import asyncpg
import grpc

from common.activity import ActivityRecorder, LoggingActivityRecorder
from common.aws import AwsClients
from common.interceptors import Authenticator
from common.settings import Settings


@dataclass
class AppContext:
    """Shared, process-wide resources created once by the runtime and closed by it."""

    settings: Settings
    pool: asyncpg.Pool
    aws: AwsClients
    # Address ("host:port") of each service of the suite; in `serve all` they share one.
    addresses: dict[str, str] = field(default_factory=dict)
    # Set by the users service (or the runtime, with a remote authenticator) before serving.
    authenticator: Authenticator | None = None
    # Replaced by the users service's recorder (local or remote) when it is available.
    activity: ActivityRecorder = field(default_factory=LoggingActivityRecorder)
    _channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)

    def channel(self, service: str) -> grpc.aio.Channel:
        """A shared client channel to ``service`` (its configured or in-process address)."""
        if service not in self._channels:
            address = self.addresses.get(service)
            if address is None:
                raise RuntimeError(f"no address known for service {service!r}")
            size = self.settings.grpc_max_message_bytes
            self._channels[service] = grpc.aio.insecure_channel(
                address,
                options=[
                    ("grpc.max_send_message_length", size),
                    ("grpc.max_receive_message_length", size),
                ],
            )
        return self._channels[service]

    async def close_channels(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


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
    # Long-running background loops (sweeps, reapers); cancelled at shutdown.
    background: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Extra dependency checks beyond the database (e.g. S3); False flips health to NOT_SERVING.
    health_checks: list[Callable[[], Awaitable[bool]]] = field(default_factory=list)
    close: Callable[[], Awaitable[None]] | None = None


class ServiceFactory(Protocol):
    async def __call__(self, ctx: AppContext) -> ServiceInstance: ...
