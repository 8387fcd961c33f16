"""Client channels to the suite's services: one per service per process, opened on first use,
each timing its calls (``rpc.client.duration``)."""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from common.rpc_metrics import client_interceptors


class ChannelCache:
    """Shared channels by service name (``"users"``, ``"files"``, ``"jobs"``).

    ``addresses`` is read when a channel is first asked for, so it may be filled in after
    construction (the runtime learns in-process addresses once the server is bound).
    """

    def __init__(self, addresses: Mapping[str, str], max_message_bytes: int) -> None:
        self.addresses = addresses
        self.options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        self._open: dict[str, grpc.aio.Channel] = {}

    def __call__(self, service: str) -> grpc.aio.Channel:
        channel = self._open.get(service)
        if channel is None:
            address = self.addresses.get(service)
            if address is None:
                raise RuntimeError(f"no address known for service {service!r}")
            channel = self._open[service] = grpc.aio.insecure_channel(
                address, options=self.options, interceptors=client_interceptors()
            )
        return channel

    async def close(self) -> None:
        for channel in self._open.values():
            await channel.close()
        self._open.clear()
