"""TLS and mutual TLS: real handshakes against a SuiteServer (and the users service on a real
PostgreSQL for a certificate standing in for a token)."""

from __future__ import annotations

import datetime
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from hypothesis import given
from hypothesis import strategies as st

from common import tls
from common.channels import open_channel
from common.settings import Settings
from tests.support.rpc import demo_service, method, serving, test_settings, unary

HOSTS = ("127.0.0.1", "localhost")


async def echo(request: bytes, context: Any) -> bytes:
    return request


class Pki:
    """A CA with a server certificate (also the server's client certificate) on disk."""

    def __init__(self, directory: Path, name: str = "test CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = tls.make_ca(name)
        self.ca_file = directory / f"{name.replace(' ', '-')}.pem"
        self.ca_file.write_bytes(self.ca.cert_pem)
        self.cert_file, self.key_file = tls.write_pair(
            directory, "server", tls.issue(self.ca, "server", hosts=HOSTS, server=True)
        )

    def client(self, common_name: str, **kwargs: Any) -> tuple[Path, Path]:
        return tls.write_pair(
            self.directory, f"client-{common_name}", tls.issue(self.ca, common_name, **kwargs)
        )

    def server_settings(self, **overrides: Any) -> dict[str, Any]:
        return {
            "tls_cert_file": self.cert_file,
            "tls_key_file": self.key_file,
            "tls_ca_file": self.ca_file,
            **overrides,
        }


def client_settings(ca: Path, pair: tuple[Path, Path] | None = None) -> Settings:
    cert, key = pair if pair else (None, None)
    return test_settings(tls_ca_file=ca, tls_cert_file=cert, tls_key_file=key)


async def call_echo(address: str, settings: Settings) -> bytes:
    async with open_channel(address, settings) as channel:
        reply: bytes = await channel.unary_unary(method("Echo"))(b"hi", timeout=10)
    return reply


async def refused(address: str, settings: Settings) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call_echo(address, settings)
    return failed.value.code()


@pytest_asyncio.fixture
async def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest_asyncio.fixture
async def mtls_address(pki: Pki) -> AsyncIterator[str]:
    settings = test_settings(**pki.server_settings(tls_require_client_cert=True))
    async with serving(demo_service({"Echo": unary(echo)}), settings=settings) as (server, _):
        yield server.address


async def test_tls_round_trip_and_plaintext_refused(pki: Pki) -> None:
    settings = test_settings(**pki.server_settings())
    async with serving(demo_service({"Echo": unary(echo)}), settings=settings) as (server, _):
        assert await call_echo(server.address, client_settings(pki.ca_file)) == b"hi"
        assert await refused(server.address, test_settings()) == grpc.StatusCode.UNAVAILABLE
        other = Pki(pki.directory / "other", "other CA")
        # A server certificate from a CA the client does not trust.
        assert (
            await refused(server.address, client_settings(other.ca_file))
            == grpc.StatusCode.UNAVAILABLE
        )


async def test_mtls_accepts_a_client_certificate_of_the_ca(pki: Pki, mtls_address: str) -> None:
    settings = client_settings(pki.ca_file, pki.client("worker"))
    assert await call_echo(mtls_address, settings) == b"hi"


async def test_mtls_refuses_no_client_certificate(pki: Pki, mtls_address: str) -> None:
    assert await refused(mtls_address, client_settings(pki.ca_file)) == grpc.StatusCode.UNAVAILABLE


async def test_mtls_refuses_a_foreign_ca(pki: Pki, mtls_address: str) -> None:
    foreign = Pki(pki.directory / "foreign", "foreign CA")
    settings = client_settings(pki.ca_file, foreign.client("worker"))
    assert await refused(mtls_address, settings) == grpc.StatusCode.UNAVAILABLE


async def test_mtls_refuses_an_expired_certificate(pki: Pki, mtls_address: str) -> None:
    now = datetime.datetime.now(datetime.UTC)
    expired = pki.client(
        "worker",
        not_before=now - datetime.timedelta(days=10),
        not_after=now - datetime.timedelta(days=1),
    )
    settings = client_settings(pki.ca_file, expired)
    assert await refused(mtls_address, settings) == grpc.StatusCode.UNAVAILABLE


async def test_a_replaced_certificate_is_served_to_new_connections(pki: Pki) -> None:
    settings = test_settings(**pki.server_settings())
    async with serving(demo_service({"Echo": unary(echo)}), settings=settings) as (server, _):
        assert await call_echo(server.address, client_settings(pki.ca_file)) == b"hi"
        renewed = Pki(pki.directory / "renewed", "renewed CA")
        # Replaced as a deployment would (rename into place), key first.
        for source, target in (
            (renewed.key_file, pki.key_file),
            (renewed.cert_file, pki.cert_file),
        ):
            staged = target.with_suffix(".new")
            staged.write_bytes(source.read_bytes())
            os.replace(staged, target)
        assert await call_echo(server.address, client_settings(renewed.ca_file)) == b"hi"
        code = await refused(server.address, client_settings(pki.ca_file))
        assert code == grpc.StatusCode.UNAVAILABLE


def test_a_key_of_another_certificate_is_not_served(pki: Pki) -> None:
    other = tls.issue(pki.ca, "other", hosts=HOSTS, server=True)
    assert tls.key_matches(pki.cert_file.read_bytes(), pki.key_file.read_bytes())
    assert not tls.key_matches(pki.cert_file.read_bytes(), other.key_pem)
    pki.key_file.write_bytes(other.key_pem)
    with pytest.raises(ValueError, match="not the private key"):
        tls.server_credentials(test_settings(**pki.server_settings()))


@given(
    cn=st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True),
    dns=st.lists(st.from_regex(r"[a-z]{1,10}\.example", fullmatch=True), max_size=2),
)
def test_certificate_identities_name_cn_dns_and_uri(cn: str, dns: list[str]) -> None:
    uri = f"spiffe://mediagrid/{cn}"
    issued = tls.issue(CA, cn, hosts=[*dns, "127.0.0.1"], uris=[uri])
    identities = tls.certificate_identities(issued.cert_pem)
    assert identities == [f"CN={cn}", *(f"DNS={d}" for d in dns), f"URI={uri}"]


CA = tls.make_ca("property CA")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tls_cert_file": "c.pem"}, "go together"),
        ({"tls_require_client_cert": True}, "needs MEDIAGRID_TLS_CERT_FILE"),
        ({"tls_client_principals": {"CN=w": "w@example.com"}}, "needs MEDIAGRID_TLS_REQUIRE"),
    ],
)
def test_inconsistent_tls_settings_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        test_settings(**overrides)


async def test_a_mapped_client_certificate_calls_as_its_service_user(
    suite: Any, tmp_path: Path
) -> None:
    from mediagrid.users.v1 import user_service_pb2 as pb
    from mediagrid.users.v1 import user_service_pb2_grpc as pb_grpc

    from services.users.bootstrap import issue_service_token

    pki = Pki(tmp_path)
    server, ctx, _ = await suite(
        "users",
        **pki.server_settings(
            tls_require_client_cert=True,
            tls_client_principals={"CN=ci-runner": "ci@example.com"},
        ),
    )
    await issue_service_token(ctx, "ci@example.com")

    async def as_client(common_name: str, request: Any, rpc: str) -> Any:
        settings = client_settings(pki.ca_file, pki.client(common_name))
        async with open_channel(server.address, settings) as channel:
            return await getattr(pb_grpc.UserServiceStub(channel), rpc)(request, timeout=10)

    me = await as_client("ci-runner", pb.GetUserRequest(name="users/me"), "GetUser")
    assert me.user.email == "ci@example.com" and me.user.role == pb.ROLE_SERVICE
    # The certificate holds the service user's permissions, never more: listing every
    # user is the admin's.
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await as_client("ci-runner", pb.ListUsersRequest(), "ListUsers")
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # A verified certificate that maps to nobody is no credential: a token is still needed.
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await as_client("someone-else", pb.GetUserRequest(name="users/me"), "GetUser")
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_dev_certs_make_a_working_mutual_tls_setup(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from common.cli import app

    directory = tmp_path / "certs"
    command = ["dev-certs", "--dir", str(directory), "--client", "ci"]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    first_ca = (directory / "ca.pem").read_bytes()
    assert CliRunner().invoke(app, command).exit_code == 0
    assert (directory / "ca.pem").read_bytes() == first_ca  # the CA is reused
    assert (directory / "client-ci-key.pem").stat().st_mode & 0o077 == 0
    settings = test_settings(
        tls_cert_file=directory / "server.pem",
        tls_key_file=directory / "server-key.pem",
        tls_ca_file=directory / "ca.pem",
        tls_require_client_cert=True,
    )
    async with serving(demo_service({"Echo": unary(echo)}), settings=settings) as (server, _):
        pair = (directory / "client-ci.pem", directory / "client-ci-key.pem")
        assert await call_echo(server.address, client_settings(directory / "ca.pem", pair)) == b"hi"
    identities = tls.certificate_identities((directory / "client-ci.pem").read_bytes())
    assert identities == ["CN=ci"]


async def test_the_command_line_uses_tls_when_configured(pki: Pki) -> None:
    import asyncio
    import sys

    settings = test_settings(**pki.server_settings(tls_require_client_cert=True))
    cert, key = pki.client("operator")
    mediagrid = str(Path(sys.executable).parent / "mediagrid")
    base = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAGRID_")}

    async def run(*args: str, **tls_env: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            mediagrid,
            *args,
            env={**base, **tls_env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await process.communicate()
        return process.returncode or 0, out.decode()

    tls_env = {
        "MEDIAGRID_TLS_CA_FILE": str(pki.ca_file),
        "MEDIAGRID_TLS_CERT_FILE": str(cert),
        "MEDIAGRID_TLS_KEY_FILE": str(key),
    }
    async with serving(demo_service({"Echo": unary(echo)}), settings=settings) as (server, _):
        health = ("health", "--address", server.address, "--timeout", "10")
        ok = await run(*health, **tls_env)
        plaintext = await run(*health)
        # A client command reaches the server over TLS too: this one has no UserService.
        keys = await run("api-keys", "ls", "--address", server.address, "--token", "t", **tls_env)
    assert ok == (0, f"{server.address} (overall): SERVING\n")
    assert plaintext[0] == 1 and "UNAVAILABLE" in plaintext[1]
    assert keys[0] == 1 and "UNIMPLEMENTED" in keys[1], keys
