"""``mediagrid api-keys``: the docs/users.md walk-through against a real ``serve all``."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from services.users.api_keys_cli import parse_duration
from tests.cli.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Cli


def test_an_admin_makes_a_service_user_and_a_key_without_any_password(cli: Cli) -> None:
    admin = cli.run("users", "login", "--email", ADMIN_EMAIL, "--password", ADMIN_PASSWORD)
    as_admin = {"MEDIAGRID_TOKEN": admin.stdout.strip()}
    service = cli.run(
        "users", "create", "--role", "service", "--email", "cli-workers@example.com", **as_admin
    ).stdout.strip()
    assert service.startswith("users/")
    created = json.loads(
        cli.run(
            "api-keys",
            "create",
            service,
            "--name",
            "cli workers",
            "--permission",
            "jobs.work",
            "--permission",
            "users.read",
            "--job-type",
            "noop",
            "--expires-in",
            "30d",
            "-o",
            "json",
            **as_admin,
        ).stdout
    )
    key, name = created["key"], created["api_key"]["name"]
    assert key.startswith("mgk_") and name.startswith(f"{service}/apiKeys/")
    assert created["api_key"]["job_types"] == ["noop"] and "expire_time" in created["api_key"]
    # The key is a bearer token like any other for every client command.
    listed = json.loads(cli.run("api-keys", "ls", service, "-o", "json", **as_admin).stdout)
    assert [k["name"] for k in listed] == [name] and key not in json.dumps(listed)
    # A key may not manage keys (admins only): PERMISSION_DENIED, exit 1.
    refused = cli.run("api-keys", "ls", check=False, MEDIAGRID_TOKEN=key)
    assert refused.returncode == 1 and "PERMISSION_DENIED" in refused.stderr
    revoked = json.loads(cli.run("api-keys", "revoke", name, "-o", "json", **as_admin).stdout)
    assert revoked["name"] == name and "revoke_time" in revoked and not revoked.get("active")
    listed_all = cli.run("api-keys", "ls", service, "--all", "-o", "json", **as_admin)
    shown = json.loads(listed_all.stdout)
    assert [k["name"] for k in shown] == [name] and not shown[0].get("active")


def test_a_bad_lifetime_is_refused_before_any_call() -> None:
    from typer.testing import CliRunner

    from common.cli import app

    result = CliRunner().invoke(app, ["api-keys", "create", "users/x", "--expires-in", "soon"])
    assert result.exit_code == 2 and "--expires-in" in result.output


@given(st.integers(1, 10_000), st.sampled_from("smhd"))
def test_durations_parse(count: int, unit: str) -> None:
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit] * count
    assert parse_duration(f"{count}{unit}").total_seconds() == seconds


@given(st.text(max_size=12))
def test_anything_else_is_not_a_duration(text: str) -> None:
    try:
        value = parse_duration(text)
    except ValueError:
        return
    assert value.total_seconds() > 0 and text.strip()[-1] in "smhd"
