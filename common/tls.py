"""TLS and mutual TLS for the suite's servers and clients, and the certificates of a dev CA.

Off unless configured (``tls_*`` settings): plaintext on 127.0.0.1 is the dev default.

- Server: ``server_credentials()`` serves the certificate and key of ``tls_cert_file`` /
  ``tls_key_file``, read again when either file (or the client CA) changes, for the
  handshakes that follow; with ``tls_require_client_cert`` a client must present a
  certificate that ``tls_ca_file`` verifies.
- Clients: ``common.channels.client_credentials()`` verifies servers with ``tls_ca_file``
  and presents this process's certificate when it has one.
- Identity: ``CertificateAuthenticator`` maps a verified client certificate's subject CN or
  SAN (DNS, URI) to a service user (``tls_client_principals``). The call then has exactly
  that user's permissions, resolved by the users service as a token's would be, so a
  certificate never grants more than the account it stands for.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.context import Principal
from common.settings import Settings

log = logging.getLogger("mediagrid.tls")


def read_file(path: Path) -> bytes:
    return path.read_bytes()


class _ReloadingFetcher:
    """gRPC's certificate-configuration fetcher: asked at every handshake, it answers a new
    configuration when a file changed since the last one it gave, else None (keep)."""

    def __init__(self, cert: Path, key: Path, ca: Path | None) -> None:
        self.paths = [p for p in (cert, key, ca) if p is not None]
        self.cert, self.key, self.ca = cert, key, ca
        self._lock = threading.Lock()
        self._seen = self._stamps()
        self.initial = self._load()
        if self.initial is None:
            raise ValueError(f"{key} is not the private key of {cert}")

    def _stamps(self) -> tuple[tuple[int, int, int], ...]:
        stamps = []
        for path in self.paths:
            st = os.stat(path)
            stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(stamps)

    def _load(self) -> grpc.ServerCertificateConfiguration | None:
        cert, key = read_file(self.cert), read_file(self.key)
        if not key_matches(cert, key):
            return None  # caught between writing one file and the other
        return grpc.ssl_server_certificate_configuration(
            [(key, cert)], root_certificates=read_file(self.ca) if self.ca else None
        )

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            try:
                stamps = self._stamps()
                if stamps == self._seen:
                    return None
                config = self._load()
            except (OSError, ValueError) as exc:
                log.warning("TLS files unreadable, keeping the previous ones: %s", exc)
                return None
            if config is None:
                log.warning("TLS certificate and key do not match (yet): keeping the previous")
                return None
            self._seen = stamps
            log.info("TLS certificate reloaded from %s", self.cert)
            return config


def key_matches(cert_pem: bytes, key_pem: bytes) -> bool:
    """Whether ``key_pem`` is the private key of the (first) certificate in ``cert_pem``."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return bool(
        cert.public_key().public_bytes(der, public) == key.public_key().public_bytes(der, public)
    )


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """The server's TLS credentials (reloading); None when TLS is not configured."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    ca = settings.tls_ca_file if settings.tls_require_client_cert else None
    fetcher = _ReloadingFetcher(settings.tls_cert_file, settings.tls_key_file, ca)
    return grpc.dynamic_ssl_server_credentials(
        fetcher.initial, fetcher, require_client_authentication=settings.tls_require_client_cert
    )


# --- client certificate identity ---------------------------------------------------------


def certificate_identities(cert_pem: bytes) -> list[str]:
    """``CN=...``, ``DNS=...`` and ``URI=...`` identities a certificate names."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    found = [
        "CN=" + (a.value if isinstance(a.value, str) else a.value.decode())
        for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return found
    found += [f"DNS={name}" for name in san.get_values_for_type(x509.DNSName)]
    found += [f"URI={uri}" for uri in san.get_values_for_type(x509.UniformResourceIdentifier)]
    return found


ServicePrincipalLookup = Callable[[str], Awaitable[Principal]]


class CertificateAuthenticator:
    """Maps the verified client certificate of a call to its service user's principal.

    ``lookup`` resolves a service user's email to its principal (the users service; it
    refuses a user that is not an active service user). Results are cached for
    ``ttl_seconds``, as tokens are (``auth_cache_ttl_seconds``), so a revoked grant or a
    disabled account stops working within that time.
    """

    def __init__(
        self,
        identities: Mapping[str, str],
        lookup: ServicePrincipalLookup,
        *,
        ttl_seconds: float,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.identities = dict(identities)
        self.lookup = lookup
        self.ttl = ttl_seconds
        self.clock = clock or time.monotonic
        self._cache: dict[str, tuple[float, Principal]] = {}

    def email_for(self, auth_context: Mapping[str, Sequence[bytes]]) -> str | None:
        """The service user a call's client certificate maps to; None: no mapped certificate.

        Only TLS calls whose certificate gRPC verified carry ``x509_pem_cert`` (the server
        requires and verifies client certificates whenever identities are mapped)."""
        pems = auth_context.get("x509_pem_cert") or []
        if not pems:
            return None
        for identity in certificate_identities(pems[0]):
            email = self.identities.get(identity)
            if email is not None:
                return email
        return None

    async def authenticate(self, auth_context: Mapping[str, Sequence[bytes]]) -> Principal | None:
        email = self.email_for(auth_context)
        if email is None:
            return None
        entry = self._cache.get(email)
        now = self.clock()
        if entry is not None and entry[0] > now:
            return entry[1]
        principal = await self.lookup(email)
        if self.ttl > 0:
            self._cache[email] = (now + self.ttl, principal)
        return principal


# --- a local CA for development -----------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    key_pem: bytes


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mediagrid dev"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_ca(common_name: str = "mediagrid dev CA", *, days: int = 3650) -> Issued:
    """A self-signed CA certificate and its key."""
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue(
    ca: Issued,
    common_name: str,
    *,
    hosts: Iterable[str] = (),
    uris: Iterable[str] = (),
    server: bool = False,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> Issued:
    """A certificate signed by ``ca``: for clients, and for servers too with ``server``
    (``hosts``: DNS names and IP addresses it answers for; ``uris``: SAN URIs)."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    names += [x509.UniformResourceIdentifier(uri) for uri in uris]
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - datetime.timedelta(minutes=5))
        .not_valid_after(not_after or now + datetime.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def write_pair(directory: Path, stem: str, issued: Issued) -> tuple[Path, Path]:
    """``stem.pem`` and ``stem-key.pem`` in ``directory``; the key readable by its owner only."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}-key.pem"
    cert_path.write_bytes(issued.cert_pem)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(issued.key_pem)
    os.chmod(key_path, 0o600)
    return cert_path, key_path


def dev_certificates(
    directory: Path, clients: Sequence[str], *, hosts: Sequence[str] = ("127.0.0.1", "localhost")
) -> dict[str, tuple[Path, Path]]:
    """A local CA, a server certificate for ``hosts`` (also usable as a client certificate,
    for peer calls between services) and one client certificate per name (``CN=name``),
    written to ``directory``; the CA's key stays there so more can be issued."""
    ca_path, ca_key_path = directory / "ca.pem", directory / "ca-key.pem"
    if ca_path.exists() and ca_key_path.exists():
        ca = Issued(ca_path.read_bytes(), ca_key_path.read_bytes())
        written = {"ca": (ca_path, ca_key_path)}
    else:
        ca = make_ca()
        written = {"ca": write_pair(directory, "ca", ca)}
    written["server"] = write_pair(
        directory, "server", issue(ca, hosts[0], hosts=hosts, server=True)
    )
    for name in clients:
        written[f"client-{name}"] = write_pair(directory, f"client-{name}", issue(ca, name))
    return written
