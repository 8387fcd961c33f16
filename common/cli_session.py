"""How every client command of the ``mediagrid`` CLI finds the server and its token.

Address: ``--address``, else the service's ``MEDIAGRID_<SERVICE>_ADDRESS`` setting, else
``MEDIAGRID_GRPC_HOST:MEDIAGRID_GRPC_PORT`` (a wildcard host becomes 127.0.0.1), read the
same way ``mediagrid serve`` reads them (environment and ``.env``), so a suite moved to
another port is found without flags. Only those settings are read (``ClientSettings``, the
same fields as ``Settings``): a client needs no database URL even where a server would.

Token: ``--token`` / ``MEDIAGRID_TOKEN``, else the session ``mediagrid login`` stored for
that address in ``$XDG_CONFIG_HOME/mediagrid/session.json`` (``~/.config/mediagrid/`` when
unset), a file only its owner can read. Keying sessions by address keeps two suites on one
machine from receiving each other's tokens.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError, create_model
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.addresses import host_port
from common.settings import (
    ConfigurationError,
    Settings,
    describe_validation_error,
    unknown_variable_warnings,
)

log = logging.getLogger("mediagrid.cli")

WILDCARD_HOSTS = ("0.0.0.0", "::", "")


class StoredSession(BaseModel):
    """What ``mediagrid login`` keeps for one server address."""

    token: str
    session: str  # sessions/{session}
    user: str  # users/{user}
    email: str


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mediagrid"


def state_dir() -> Path:
    """Where the CLI keeps local state (the upload resume records)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "mediagrid"


def session_file() -> Path:
    return config_dir() / "session.json"


CLIENT_FIELDS = (
    "grpc_host",
    "grpc_port",
    "users_address",
    "jobs_address",
    "files_address",
    "telemetry_exporter",
    "tls_cert_file",
    "tls_key_file",
    "tls_ca_file",
)


class _ClientBase(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDIAGRID_", env_file=".env", extra="ignore")


ClientSettings = create_model(  # type: ignore[call-overload]
    "ClientSettings",
    __base__=_ClientBase,
    __doc__="The settings a client command reads: where the server is, whether it is traced.",
    **{
        name: (Settings.model_fields[name].annotation, Settings.model_fields[name])
        for name in CLIENT_FIELDS
    },
)


def client_settings() -> Any:
    """``ClientSettings`` from the environment and ``.env``; ConfigurationError names the variable.

    A ``MEDIAGRID_*`` variable that is no setting gets the same warning as in ``serve``.
    """
    for warning in unknown_variable_warnings(os.environ):
        log.warning("%s", warning)
    try:
        return ClientSettings()
    except ValidationError as exc:
        raise ConfigurationError(describe_validation_error(exc)) from None


def server_address(settings: Any, service: str | None, explicit: str | None) -> str:
    """``host:port`` of ``service`` (files, users, jobs) or of the suite (None).

    ``settings`` is a ``Settings`` (a server process) or ``ClientSettings``.
    """
    if explicit:
        return explicit
    configured = getattr(settings, f"{service}_address", None) if service else None
    if configured:
        return str(configured)
    host = "127.0.0.1" if settings.grpc_host in WILDCARD_HOSTS else settings.grpc_host
    return host_port(host, settings.grpc_port)


def _load_all() -> dict[str, Any]:
    try:
        raw = json.loads(session_file().read_text())
    except (OSError, ValueError):
        return {}
    sessions = raw.get("sessions") if isinstance(raw, dict) else None
    return sessions if isinstance(sessions, dict) else {}


def stored_session(address: str) -> StoredSession | None:
    entry = _load_all().get(address)
    if entry is None:
        return None
    try:
        return StoredSession.model_validate(entry)
    except ValueError:
        return None


def store_session(address: str, session: StoredSession) -> Path:
    """Save ``session`` for ``address`` (0600, written atomically); returns the file."""
    sessions = _load_all()
    sessions[address] = session.model_dump()
    _write(sessions)
    return session_file()


def forget_session(address: str) -> StoredSession | None:
    """Remove the session stored for ``address``; returns it when there was one."""
    sessions = _load_all()
    entry = sessions.pop(address, None)
    if entry is None:
        return None
    _write(sessions)
    try:
        return StoredSession.model_validate(entry)
    except ValueError:
        return None


def _write(sessions: dict[str, Any]) -> None:
    target = session_file()
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # The file is created 0600 before the token is written: no moment where others can read it.
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".session-")
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump({"sessions": sessions}, stream, indent=2)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def resolve_token(address: str, explicit: str | None) -> str | None:
    """``--token`` / ``MEDIAGRID_TOKEN`` first, else the session stored for ``address``."""
    if explicit:
        return explicit
    stored = stored_session(address)
    return stored.token if stored is not None else None


__all__ = [
    "ClientSettings",
    "ConfigurationError",
    "StoredSession",
    "client_settings",
    "config_dir",
    "forget_session",
    "resolve_token",
    "server_address",
    "session_file",
    "state_dir",
    "store_session",
    "stored_session",
]
