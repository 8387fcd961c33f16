"""``mediagrid api-keys create|ls|revoke``: API keys of service users, over gRPC as an admin.

``create`` prints the key once (``-o json``/``yaml``: the whole ``CreateApiKeyResponse``,
``key`` included; ``table``: the key's record on stdout, then the key on its own line);
nothing can show it again. ``--expires-in`` takes a duration such as ``90d``, ``12h`` or
``30m``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import typer
from google.protobuf.message import Message
from mediagrid.users.v1 import user_service_pb2 as pb
from mediagrid.users.v1 import user_service_pb2_grpc as pb_grpc
from rich.table import Table

from common.channels import open_channel
from common.cli_output import OUTPUT, Output, emit, name_table, stderr
from common.cli_support import address_option, connect, fail, run_client, token_option
from common.timestamps import set_timestamp

api_keys_app = typer.Typer(
    help="API keys of service users (workers, other services): admins only.",
    no_args_is_help=True,
)

_DURATION_RE = re.compile(r"^(\d{1,9})([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
TIMEOUT_SECONDS = 30.0


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m`` or ``45s`` as a positive timedelta; ValueError otherwise."""
    match = _DURATION_RE.fullmatch(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration like 90d, 12h, 30m or 45s")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > 100 * 365 * 86400:
        raise ValueError(f"{text!r} is longer than 100 years")
    return timedelta(seconds=seconds)


def _when(stamp: Any, present: bool) -> str:
    if not present:
        return "never"
    return str(stamp.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds"))


def key_table(keys: Sequence[Message]) -> Table:
    table = name_table("name", "display name", "permissions", "job types", "expires", "active")
    for key in keys:
        assert isinstance(key, pb.ApiKey)
        table.add_row(
            key.name,
            key.display_name,
            ", ".join(key.permissions) or "(all of the user's)",
            ", ".join(key.job_types) or "(any)",
            _when(key.expire_time, key.HasField("expire_time")),
            "yes" if key.active else "no",
        )
    return table


def _call(address: str, token: str | None, method: str, request: Message) -> Any:
    async def call() -> Any:
        async with open_channel(address) as channel:  # TLS when the settings say so
            stub = pb_grpc.UserServiceStub(channel)
            metadata = (("authorization", f"Bearer {token}"),) if token else ()
            return await getattr(stub, method)(request, metadata=metadata, timeout=TIMEOUT_SECONDS)

    return run_client(call(), address)


@api_keys_app.command("create")
def create(
    user: str = typer.Argument(..., help="The service user, users/{id}."),
    display_name: str = typer.Option("", "--name", help="What the key is for."),
    permission: list[str] = typer.Option(
        [],
        "--permission",
        help="A permission the key holds (repeatable; default: all of the user's).",
    ),
    job_type: list[str] = typer.Option(
        [], "--job-type", help="A job type the key may claim (repeatable; default: any)."
    ),
    expires_in: str = typer.Option(
        "", "--expires-in", help="Lifetime such as 90d, 12h or 30m (default: no expiry)."
    ),
    address: str | None = address_option(),
    token: str | None = token_option(),
    output: Output = OUTPUT,
) -> None:
    """Create an API key for a service user and print it (once: it is not stored)."""
    key = pb.ApiKey(display_name=display_name, permissions=permission, job_types=job_type)
    if expires_in:
        try:
            lifetime = parse_duration(expires_in)
        except ValueError as exc:
            fail(f"--expires-in: {exc}", 2)
        set_timestamp(key.expire_time, datetime.now(UTC) + lifetime)
    target, bearer = connect("users", address, token)
    response = _call(
        target, bearer, "CreateApiKey", pb.CreateApiKeyRequest(parent=user, api_key=key)
    )
    if output in (Output.json, Output.yaml):
        emit([response], output, key_table, single=True)
    elif output is Output.names:
        typer.echo(response.api_key.name)
        typer.echo(response.key)
    else:
        emit([response.api_key], output, key_table)
        typer.echo(response.key)
    stderr.print("the key above is shown only now: store it in a secret store")


@api_keys_app.command("ls")
def ls(
    user: str = typer.Argument("users/-", help="users/{id}, or users/- for every user."),
    show_inactive: bool = typer.Option(False, "--all", help="Also revoked and expired keys."),
    address: str | None = address_option(),
    token: str | None = token_option(),
    output: Output = OUTPUT,
) -> None:
    """List API keys, oldest first (never their secrets)."""
    target, bearer = connect("users", address, token)
    keys: list[pb.ApiKey] = []
    page_token = ""
    while True:
        response = _call(
            target,
            bearer,
            "ListApiKeys",
            pb.ListApiKeysRequest(
                parent=user, page_size=1000, page_token=page_token, show_inactive=show_inactive
            ),
        )
        keys.extend(response.api_keys)
        page_token = response.next_page_token
        if not page_token:
            break
    emit(keys, output, key_table)


@api_keys_app.command("revoke")
def revoke(
    name: str = typer.Argument(..., help="The key, users/{id}/apiKeys/{key}."),
    address: str | None = address_option(),
    token: str | None = token_option(),
    output: Output = OUTPUT,
) -> None:
    """Revoke an API key: refused at once here, within the auth cache TTL elsewhere."""
    target, bearer = connect("users", address, token)
    response = _call(target, bearer, "RevokeApiKey", pb.RevokeApiKeyRequest(name=name))
    emit([response.api_key], output, key_table, single=True)
