"""Login throttling: attackers are slowed per address and per account, the victim is not.

Client addresses come from an ``x-forwarded-for`` header that the test environment trusts
(``login_client_address_header``), so one in-process channel can speak from many addresses.
Work is counted in password verifications, never timed.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
import pytest_asyncio
from hypothesis import given
from hypothesis import strategies as st
from mediagrid.users.v1 import user_service_pb2 as pb
from pydantic import ValidationError

from common.grpc_errors import error_info, retry_info
from common.settings import Settings
from services.users import throttle
from services.users.passwords import Passwords
from tests.support.hypo import relaxed
from tests.users.conftest import PASSWORD, UsersEnv, start_users

MAX_FAILURES = 5
LOCKOUT = 300
DELAY_BASE = 30.0
ADDRESS_LIMIT = 40

ATTACKER = "203.0.113.66"
VICTIM_HOME = "198.51.100.7"


@pytest_asyncio.fixture
async def env(suite: Callable[..., Any], password_hash: str) -> AsyncIterator[UsersEnv]:
    yield await start_users(
        suite,
        password_hash,
        login_client_address_header="x-forwarded-for",
        login_max_failures=MAX_FAILURES,
        login_lockout_seconds=LOCKOUT,
        login_delay_base_seconds=DELAY_BASE,
        login_address_max_attempts=ADDRESS_LIMIT,
    )


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every Argon2 verification the service runs (by the password tried)."""
    seen: list[str] = []
    original = Passwords._verify

    def counting(self: Passwords, password_hash: str | None, password: str) -> bool:
        seen.append(password)
        return original(self, password_hash, password)

    monkeypatch.setattr(Passwords, "_verify", counting)
    return seen


async def login(env: UsersEnv, email: str, password: str, address: str) -> Any:
    return await env.stub.Login(
        pb.LoginRequest(email=email, password=password),
        metadata=(("x-forwarded-for", f"10.9.9.9, {address}"),),
    )


async def login_error(env: UsersEnv, email: str, password: str, address: str) -> Any:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await login(env, email, password, address)
    return caught.value


def rate_limited_for(error: Any) -> float:
    """The RetryInfo delay of a LOGIN_RATE_LIMITED error (fails on anything else)."""
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    info = error_info(error)
    assert info is not None and info.reason == "LOGIN_RATE_LIMITED"
    retry = retry_info(error)
    assert retry is not None, "LOGIN_RATE_LIMITED must carry RetryInfo"
    return float(retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9)


# --- the rules as functions -------------------------------------------------------------


def wait(pair: int, account: int, age: float = 0.0) -> float:
    return throttle.login_wait(
        pair_failures=pair,
        pair_age_seconds=age,
        account_failures=account,
        max_failures=MAX_FAILURES,
        lockout_seconds=LOCKOUT,
        delay_base_seconds=DELAY_BASE,
    )


@pytest.mark.parametrize(
    ("pair", "account", "age", "expected"),
    [
        (0, 0, 0, 0),
        (0, 10_000, 0, 0),  # a clean source, however hard the account is attacked
        (1, 1, 0, 0),  # a typo is free while the account is not under attack
        (4, 4, 0, 0),
        (5, 5, 0, LOCKOUT),  # this address reached the limit for this account
        (5, 5, 100, LOCKOUT - 100),
        (5, 5, LOCKOUT + 1, 0),
        (1, 5, 0, DELAY_BASE),  # account under attack: failed sources wait, doubling
        (2, 5, 0, 2 * DELAY_BASE),
        (2, 10, 0, 4 * DELAY_BASE),
        (3, 5, 10, 4 * DELAY_BASE - 10),
        (4, 1000, 0, LOCKOUT),  # capped at the lockout
    ],
)
def test_login_wait(pair: int, account: int, age: float, expected: float) -> None:
    assert wait(pair, account, age) == expected


@relaxed()
@given(
    pair=st.integers(0, 50),
    account=st.integers(0, 10_000),
    age=st.floats(0, 10_000, allow_nan=False),
)
def test_login_wait_bounds(pair: int, account: int, age: float) -> None:
    got = wait(pair, account, age)
    assert 0 <= got <= LOCKOUT
    if pair == 0:
        assert got == 0
    assert wait(pair + 1, max(account, pair + 1), age) >= got  # one more failure never helps


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("ipv4:127.0.0.1:5000", None, "127.0.0.1"),
        ("ipv4:127.0.0.1:6000", None, "127.0.0.1"),  # the port is not part of the address
        ("ipv6:[::1]:5000", None, "::/64"),
        ("ipv6:%5B2001:db8::1%5D:443", None, "2001:db8::/64"),
        ("ipv6:[2001:db8::2]:80", None, "2001:db8::/64"),  # one bucket per /64
        ("ipv6:[::ffff:192.0.2.1]:80", None, "192.0.2.1"),
        ("unix:/tmp/mediagrid.sock", None, "unix"),
        ("ipv4:10.0.0.1:1", "198.51.100.1, 203.0.113.9", "203.0.113.9"),
        ("ipv4:10.0.0.1:1", "", "10.0.0.1"),
        ("ipv4:10.0.0.1:1", "not an address", "unknown"),
    ],
)
def test_client_address(peer: str, forwarded: str | None, expected: str) -> None:
    assert throttle.client_address(peer, forwarded) == expected


def test_the_lockout_may_not_outlast_the_failure_window() -> None:
    with pytest.raises(ValidationError, match="LOGIN_LOCKOUT_SECONDS"):
        Settings(environment="test", login_lockout_seconds=1000, login_failure_window_seconds=900)


# --- over RPC ---------------------------------------------------------------------------


async def test_the_victim_logs_in_while_an_attacker_keeps_failing(
    env: UsersEnv, verifications: list[str]
) -> None:
    victim = await env.add_user(email="victim@example.com", with_password=True)
    for _ in range(MAX_FAILURES):
        error = await login_error(env, "Victim@example.com", "guess guess guess", ATTACKER)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    # The attacker's address is now refused for this account, right password or not ...
    for password in ("another guess!!", PASSWORD):
        error = await login_error(env, "victim@example.com", password, ATTACKER)
        assert 0 < rate_limited_for(error) <= LOCKOUT
    assert len(verifications) == MAX_FAILURES
    # ... while the owner, from an address that has not failed, logs in at once.
    ok = await login(env, "victim@example.com", PASSWORD, VICTIM_HOME)
    assert ok.user.name == victim.name
    # A second attacker address gets one guess; having failed, it waits (the account is
    # under attack), with a delay that grows with its failures.
    second = "203.0.113.77"
    error = await login_error(env, "victim@example.com", "yet another guess", second)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    delay = rate_limited_for(await login_error(env, "victim@example.com", PASSWORD, second))
    assert 0 < delay <= DELAY_BASE * 2
    # The owner still logs in, again and again, during all of it.
    for _ in range(3):
        assert (await login(env, "victim@example.com", PASSWORD, VICTIM_HOME)).token
    # A mistake from an address that has not failed the account is answered normally.
    error = await login_error(env, "victim@example.com", "owner typo here", "192.0.2.50")
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (await login(env, "victim@example.com", PASSWORD, VICTIM_HOME)).token


async def test_forwarded_headers_are_ignored_unless_a_setting_trusts_one(
    users: UsersEnv,
) -> None:
    """By default the TCP peer is the address: a made-up x-forwarded-for changes nothing."""
    await users.add_user(email="peer@example.com", with_password=True)
    for n in range(users.settings.login_max_failures):
        error = await login_error(users, "peer@example.com", "wrong password!", f"192.0.2.{n}")
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    error = await login_error(users, "peer@example.com", PASSWORD, "192.0.2.200")
    assert rate_limited_for(error) > 0


async def test_the_per_address_limit_stops_argon2_work(
    env: UsersEnv, verifications: list[str]
) -> None:
    await env.add_user(email="someone@example.com", with_password=True)
    flooder = "203.0.113.99"
    for n in range(ADDRESS_LIMIT):
        # Many accounts, never more than a couple of failures on any: only the address limit
        # can stop this.
        error = await login_error(env, f"user{n // 2}@example.com", "spray password 1", flooder)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert len(verifications) == ADDRESS_LIMIT
    for n in range(50):
        error = await login_error(env, f"more{n}@example.com", "spray password 2", flooder)
        assert 0 < rate_limited_for(error) <= env.settings.login_address_window_seconds
    # The right password from the flooding address is refused too, before any verification.
    error = await login_error(env, "someone@example.com", PASSWORD, flooder)
    assert rate_limited_for(error) > 0
    assert len(verifications) == ADDRESS_LIMIT
    # Past the first refusal, the process refuses the address without a database statement.
    keys = throttle.ThrottleKeys(await env.repository.throttle_key())
    counted = await env.ctx.pool.fetchval(
        "SELECT count FROM users.login_throttle WHERE key = $1", keys.address(flooder)
    )
    assert counted == ADDRESS_LIMIT + 1
    # Another address is not affected.
    assert (await login(env, "someone@example.com", PASSWORD, "198.51.100.20")).token
    assert len(verifications) == ADDRESS_LIMIT + 1


async def test_unknown_email_and_wrong_password_are_indistinguishable(
    env: UsersEnv, verifications: list[str]
) -> None:
    await env.add_user(email="carol@example.com", with_password=True)
    seen: list[tuple[list[tuple[Any, ...]], int]] = []
    for email, password in (
        ("carol@example.com", "wrong password!!"),
        ("nobody@example.com", PASSWORD),
    ):
        before = len(verifications)
        errors = [
            await login_error(env, email, password, f"192.0.2.{len(seen)}")
            for _ in range(MAX_FAILURES + 1)
        ]
        described = [
            (
                e.code(),
                e.details(),
                getattr(error_info(e), "reason", None),
                retry_info(e) is not None,
            )
            for e in errors
        ]
        seen.append((described, len(verifications) - before))
    assert seen[0] == seen[1]
    described, cost = seen[0]
    assert cost == MAX_FAILURES  # one verification per failure, then none
    assert described[0][:3] == (
        grpc.StatusCode.UNAUTHENTICATED,
        "invalid email or password",
        "INVALID_CREDENTIALS",
    )
    assert described[-1][2] == "LOGIN_RATE_LIMITED"


async def test_the_throttle_table_holds_no_email_nor_address(env: UsersEnv) -> None:
    emails = ["Mallory.Target@example.com", "nobody-at-all@example.org"]
    address = "203.0.113.42"
    for email in emails:
        await login_error(env, email, "wrong password!!", address)
    rows = await env.ctx.pool.fetch("SELECT t.*, t::text AS text FROM users.login_throttle t")
    assert len(rows) == 1 + 2 * len(emails)  # the address, and per email its account and pair
    dumped = " ".join(r["text"] for r in rows).lower()
    for email in emails:
        lowered = email.lower()
        for needle in (lowered, lowered.split("@")[0], lowered.encode().hex()):
            assert needle not in dumped
        # Not a plain hash either: without the key a dictionary of emails finds nothing.
        for candidate in (lowered, f"account\x00{lowered}"):
            for digest in (hashlib.sha256, hashlib.sha1, hashlib.md5):
                assert digest(candidate.encode()).digest() not in {bytes(r["key"]) for r in rows}
    assert address not in dumped and address.encode().hex() not in dumped
    assert {len(bytes(r["key"])) for r in rows} == {32}


async def test_a_configured_key_is_used_instead_of_the_stored_one(
    suite: Callable[..., Any], password_hash: str
) -> None:
    from pydantic import SecretStr

    keyed = await start_users(
        suite,
        password_hash,
        login_throttle_key=SecretStr("a long random key from the secrets manager"),
    )
    await login_error(keyed, "x@example.com", "wrong password!!", "192.0.2.1")
    stored = await keyed.repository.throttle_key()
    configured = throttle.ThrottleKeys(b"a long random key from the secrets manager")
    keys = {
        bytes(r["key"]) for r in await keyed.ctx.pool.fetch("SELECT key FROM users.login_throttle")
    }
    assert configured.account("x@example.com") in keys
    assert throttle.ThrottleKeys(stored).account("x@example.com") not in keys


async def test_success_clears_only_that_address_for_that_account(env: UsersEnv) -> None:
    await env.add_user(email="dora@example.com", with_password=True)
    for _ in range(MAX_FAILURES - 1):
        await login_error(env, "dora@example.com", "not the password", VICTIM_HOME)
    assert (await login(env, "dora@example.com", PASSWORD, VICTIM_HOME)).token
    # After the success the address starts again from zero: MAX_FAILURES - 1 more mistakes are
    # still answered normally.
    for _ in range(MAX_FAILURES - 1):
        error = await login_error(env, "dora@example.com", "not the password", VICTIM_HOME)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
