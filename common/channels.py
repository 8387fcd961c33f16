"""Client channels to the suite's services: one per service per process, opened on first use,
each timing its calls (``rpc.client.duration``), over TLS when the settings say so."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import grpc

from common.rpc_metrics import client_interceptors
from common.settings import Settings


class TlsFiles(Protocol):
    """The TLS settings a client reads (``Settings`` or the command line's client settings)."""

    tls_cert_file: Path | None
    tls_key_file: Path | None
    tls_ca_file: Path | None


def client_credentials(settings: TlsFiles) -> grpc.ChannelCredentials | None:
    """TLS credentials for channels to suite servers; None: plaintext (not configured).

    ``tls_ca_file`` verifies the server; this process's ``tls_cert_file``/``tls_key_file``
    are presented when a server asks for a client certificate (mutual TLS). The files are
    read here, so a channel opened after they change uses the new ones.
    """
    if settings.tls_ca_file is None and settings.tls_cert_file is None:
        return None
    roots = settings.tls_ca_file.read_bytes() if settings.tls_ca_file else None
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        return grpc.ssl_channel_credentials(
            root_certificates=roots,
            private_key=settings.tls_key_file.read_bytes(),
            certificate_chain=settings.tls_cert_file.read_bytes(),
        )
    return grpc.ssl_channel_credentials(root_certificates=roots)


@functools.cache
def _environment_settings() -> TlsFiles:
    # The command line's client settings (environment and .env): a client needs no database
    # URL, even in prod. Read without repeating the warnings the command has already given.
    from pydantic import ValidationError

    from common.cli_session import ClientSettings
    from common.settings import ConfigurationError, describe_validation_error

    try:
        settings = cast(TlsFiles, ClientSettings())
    except ValidationError as exc:
        raise ConfigurationError(describe_validation_error(exc)) from None
    return settings


def open_channel(
    address: str,
    settings: TlsFiles | None = None,
    *,
    options: Sequence[tuple[str, Any]] = (),
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> grpc.aio.Channel:
    """A channel to a suite server: TLS when ``settings`` (default: the environment's, as
    the command line reads them) configure it, plaintext otherwise."""
    credentials = client_credentials(settings or _environment_settings())
    if credentials is None:
        return grpc.aio.insecure_channel(
            address, options=list(options), interceptors=list(interceptors) or None
        )
    return grpc.aio.secure_channel(
        address, credentials, options=list(options), interceptors=list(interceptors) or None
    )


class ChannelCache:
    """Shared channels by service name (``"users"``, ``"files"``, ``"jobs"``).

    ``addresses`` is read when a channel is first asked for, so it may be filled in after
    construction (the runtime learns in-process addresses once the server is bound).
    ``settings`` give the TLS configuration (unset: plaintext).
    """

    def __init__(
        self,
        addresses: Mapping[str, str],
        max_message_bytes: int,
        settings: Settings | None = None,
    ) -> None:
        self.addresses = addresses
        self.settings = settings
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
            credentials = client_credentials(self.settings) if self.settings else None
            if credentials is None:
                channel = grpc.aio.insecure_channel(
                    address, options=self.options, interceptors=client_interceptors()
                )
            else:
                channel = grpc.aio.secure_channel(
                    address, credentials, options=self.options, interceptors=client_interceptors()
                )
            self._open[service] = channel
        return channel

    async def close(self) -> None:
        for channel in self._open.values():
            await channel.close()
        self._open.clear()
