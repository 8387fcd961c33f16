"""Login throttling that slows attackers without locking the account's owner out.

Three counters, each a row of ``users.login_throttle`` under a keyed hash (HMAC-SHA256 with the
throttle key, so the table holds neither emails nor addresses, and a dictionary of emails is
useless without the key):

- per client address: every Login attempt, whatever the account; over the limit the address
  is refused before any password is verified, so a flood cannot take the CPU that other
  logins need (and each process remembers the refused address until its window ends, so
  the rest of a flood costs no database statement either);
- per (account, address): failures; after ``login_max_failures`` that address is refused for
  that account for ``login_lockout_seconds``;
- per account: failures from every address (less those of an address that then logged in);
  while it is at least ``login_max_failures``, an address that has failed the account waits
  longer after each failure (progressive delay).

An address without recent failures on an account is never held back for it, so the owner logs
in from their own address while someone else keeps failing from another. The checks look only
at the email as typed (lower-cased), never at whether the account exists.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from urllib.parse import unquote

from common.errors import ResourceExhausted
from common.settings import Settings
from services.users.repository import UserRepository

log = logging.getLogger("mediagrid.users.throttle")

RATE_LIMITED = "LOGIN_RATE_LIMITED"
ADDRESS_LIMITED = "too many login attempts from this address; retry later"
# Bound on the addresses one process remembers as over their limit (oldest forgotten first).
MAX_BLOCKED_ADDRESSES = 10_000
# IPv6 clients get a /64 each: one subscriber holds a whole /64, and one address of it is free.
IPV6_PREFIX = 64


def account_key(email: str) -> str:
    """The account a login attempt is about: the email without regard to case."""
    return email.strip().lower()


def _normalize_ip(text: str) -> str | None:
    try:
        ip = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/{IPV6_PREFIX}", strict=False))
    return str(ip)


def peer_address(peer: str) -> str:
    """The client address of a gRPC peer string without its port (``ipv4:1.2.3.4:5`` -> ip)."""
    kind, _, rest = unquote(peer).partition(":")
    if kind == "ipv4":
        found = _normalize_ip(rest.rsplit(":", 1)[0])
    elif kind == "ipv6":
        host = rest.rsplit("]", 1)[0] if rest.startswith("[") else rest.rsplit(":", 1)[0]
        found = _normalize_ip(host)
    else:  # unix sockets and unknown transports: one local client
        return kind or "unknown"
    return found or "unknown"


def client_address(peer: str, forwarded: str | None) -> str:
    """The address to throttle: the last entry of the trusted header when given, else the peer."""
    if forwarded:
        entries = [e for e in forwarded.split(",") if e.strip()]
        if entries:
            return _normalize_ip(entries[-1]) or "unknown"
    return peer_address(peer)


def login_wait(
    *,
    pair_failures: int,
    pair_age_seconds: float,
    account_failures: int,
    max_failures: int,
    lockout_seconds: float,
    delay_base_seconds: float,
) -> float:
    """Seconds an address must still wait before its next attempt on an account (0: go on).

    ``pair_*`` are this address's failures on this account and the seconds since the last one;
    ``account_failures`` counts failures on the account from every address.
    """
    if pair_failures <= 0:
        return 0.0  # a clean source is never held back
    if pair_failures >= max_failures:
        wait = lockout_seconds
    elif account_failures >= max_failures:
        pressure = account_failures // max_failures
        wait = min(lockout_seconds, delay_base_seconds * 2 ** (pair_failures - 1) * pressure)
    else:
        return 0.0
    return max(0.0, wait - pair_age_seconds)


class ThrottleKeys:
    """Keyed hashes of what is counted; the three kinds never collide (distinct prefixes)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, *parts: str) -> bytes:
        message = "\x00".join(parts).encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def address(self, address: str) -> bytes:
        return self._mac("address", address)

    def account(self, account: str) -> bytes:
        return self._mac("account", account)

    def pair(self, account: str, address: str) -> bytes:
        return self._mac("pair", account, address)


def _limited(message: str, wait: float) -> ResourceExhausted:
    return ResourceExhausted(
        message, reason=RATE_LIMITED, retry_after_seconds=float(max(1, math.ceil(wait)))
    )


class LoginThrottle:
    """The checks before a password is verified and the bookkeeping after."""

    def __init__(
        self,
        repository: UserRepository,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.repository = repository
        self.settings = settings
        self.clock = clock
        self._keys: ThrottleKeys | None = None
        # Addresses this process saw over their limit, until their window ends: a flood from
        # one address is then refused without even a database statement.
        self._blocked: OrderedDict[str, float] = OrderedDict()

    async def keys(self) -> ThrottleKeys:
        if self._keys is None:
            configured = self.settings.login_throttle_key
            if configured is not None:
                key = configured.get_secret_value().encode()
            else:
                key = await self.repository.throttle_key()
            self._keys = ThrottleKeys(key)
        return self._keys

    async def check(self, email: str, address: str) -> None:
        """Count the attempt; LOGIN_RATE_LIMITED (with RetryInfo) when it must not go on."""
        now = self.clock()
        blocked_until = self._blocked.get(address)
        if blocked_until is not None:
            if blocked_until > now:
                raise _limited(ADDRESS_LIMITED, blocked_until - now)
            del self._blocked[address]
        keys = await self.keys()
        settings = self.settings
        count, window_left = await self.repository.count_login_attempt(
            keys.address(address), window_seconds=settings.login_address_window_seconds
        )
        if count > settings.login_address_max_attempts:
            self._remember_blocked(address, now + window_left)
            raise _limited(ADDRESS_LIMITED, window_left)
        account = account_key(email)
        pair, whole = await self.repository.login_failures(
            keys.pair(account, address),
            keys.account(account),
            window_seconds=settings.login_failure_window_seconds,
        )
        wait = login_wait(
            pair_failures=pair[0],
            pair_age_seconds=pair[1],
            account_failures=whole[0],
            max_failures=settings.login_max_failures,
            lockout_seconds=settings.login_lockout_seconds,
            delay_base_seconds=settings.login_delay_base_seconds,
        )
        if wait > 0:
            raise _limited("too many failed logins from this address; retry later", wait)

    def _remember_blocked(self, address: str, until: float) -> None:
        self._blocked[address] = until
        self._blocked.move_to_end(address)
        while len(self._blocked) > MAX_BLOCKED_ADDRESSES:
            self._blocked.popitem(last=False)

    async def failed(self, email: str, address: str) -> None:
        keys = await self.keys()
        account = account_key(email)
        account_hash = keys.account(account)
        await self.repository.count_login_failure(
            keys.pair(account, address),
            account_hash,
            window_seconds=self.settings.login_failure_window_seconds,
        )
        # The same line whether or not the account exists, and no email in it.
        log.warning("failed login for account %s from %s", account_hash.hex()[:12], address)

    async def succeeded(self, email: str, address: str) -> None:
        """This address has proven it knows the password: its failures on the account go."""
        keys = await self.keys()
        account = account_key(email)
        await self.repository.forget_login_failures(
            keys.pair(account, address), keys.account(account)
        )
