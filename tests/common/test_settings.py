"""Settings: bad values name their variable, bucket names follow S3's rules, secrets stay hidden."""

from __future__ import annotations

import io
import itertools
import os
import pty
import string
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.settings import (
    BUCKET_PURPOSES,
    ConfigurationError,
    Environment,
    Settings,
    bucket_name_problem,
    load_settings,
)


@pytest.fixture(autouse=True)
def _no_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings read ./.env; run where none exists so only the test's variables count.
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MEDIAGRID_GRPC_PORT", "not-a-port"),
        ("MEDIAGRID_GRPC_PORT", "70000"),
        ("MEDIAGRID_ENVIRONMENT", "production"),
        ("MEDIAGRID_LOG_LEVEL", "LOUD"),
        ("MEDIAGRID_LOG_FORMAT", "xml"),
        ("MEDIAGRID_DB_POOL_MAX_SIZE", "0"),
        ("MEDIAGRID_DB_CONNECT_ATTEMPTS", "-1"),
        ("MEDIAGRID_BUCKET_PREFIX", "Has_Upper"),
        ("MEDIAGRID_BUCKET_PREFIX", "x" * 60),
        ("MEDIAGRID_BUCKET_PREFIX", "xn--punycode"),
        ("MEDIAGRID_AWS_REGION", "Mars"),
        ("MEDIAGRID_S3_ENDPOINT_URL", "localhost:9000"),
        ("MEDIAGRID_TELEMETRY_EXPORTER", "jaeger"),
        ("MEDIAGRID_S3_PAYLOAD_SIGNING", "maybe"),
    ],
)
def test_a_bad_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert variable in str(info.value)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MEDIAGRID_ENVIRONMENT": "prod"}, "MEDIAGRID_DATABASE_URL"),
        (
            {"MEDIAGRID_DB_POOL_MIN_SIZE": "20", "MEDIAGRID_DB_POOL_MAX_SIZE": "5"},
            "MEDIAGRID_DB_POOL_MIN_SIZE",
        ),
        (
            {
                "MEDIAGRID_ENVIRONMENT": "staging",
                "MEDIAGRID_DATABASE_URL": "postgresql://db/x",
                "MEDIAGRID_S3_CREATE_BUCKETS": "true",
            },
            "MEDIAGRID_S3_CREATE_BUCKETS",
        ),
        ({"MEDIAGRID_AWS_ACCESS_KEY_ID": "AKIAONLY"}, "MEDIAGRID_AWS_SECRET_ACCESS_KEY"),
    ],
)
def test_cross_field_errors_name_the_variables(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert named in str(info.value)


def test_defaults_are_valid_and_local() -> None:
    settings = load_settings()
    assert settings.environment is Environment.DEV
    assert settings.grpc_port == 50051
    assert settings.embedded_database and settings.s3_is_embedded
    assert settings.bucket("files") == "mediagrid-dev-files"


def test_configured_dependencies_are_not_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIAGRID_DATABASE_URL", "postgresql://postgres@db:5432/mediagrid")
    monkeypatch.setenv("MEDIAGRID_S3_ENDPOINT_URL", "http://minio:9000")
    settings = load_settings()
    assert not settings.embedded_database
    assert not settings.s3_is_embedded


@pytest.mark.parametrize(
    ("endpoint", "configured", "streams"),
    [
        ("http://127.0.0.1:8333", 0, 1),
        ("http://localhost:9000", 0, 1),
        ("http://[::1]:9000", 0, 1),
        ("http://minio:9000", 0, 4),
        ("https://s3.eu-west-1.amazonaws.com", 0, 4),
        (None, 0, 4),  # prod without an endpoint: real S3
        ("http://127.0.0.1:8333", 3, 3),  # a configured number always wins
        ("http://minio:9000", 1, 1),
    ],
)
def test_download_streams_auto_follows_where_s3_runs(
    monkeypatch: pytest.MonkeyPatch, endpoint: str | None, configured: int, streams: int
) -> None:
    monkeypatch.setenv("MEDIAGRID_ENVIRONMENT", "prod")
    monkeypatch.setenv("MEDIAGRID_DATABASE_URL", "postgresql://u:p@rds:5432/mediagrid")
    if endpoint:
        monkeypatch.setenv("MEDIAGRID_S3_ENDPOINT_URL", endpoint)
    if configured:
        monkeypatch.setenv("MEDIAGRID_DOWNLOAD_STREAMS", str(configured))
    assert load_settings().download_read_streams == streams


def test_download_streams_auto_is_one_for_embedded_s3(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.s3_is_embedded and settings.download_read_streams == 1


def test_production_never_embeds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIAGRID_ENVIRONMENT", "prod")
    monkeypatch.setenv("MEDIAGRID_DATABASE_URL", "postgresql://u:p@rds:5432/mediagrid")
    settings = load_settings()
    # No endpoint and no keys in prod = real S3 through the default credential chain.
    assert not settings.s3_is_embedded
    assert not settings.s3_create_buckets
    assert settings.bucket("files") == "mediagrid-prod-files"


# --- bucket names: an independent oracle written from the S3 naming rules -----------------

RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def oracle_valid(name: str) -> bool:
    """S3 general-purpose bucket naming rules, checked one by one without regular expressions."""
    allowed = set(string.ascii_lowercase + string.digits + ".-")
    if not 3 <= len(name) <= 63:
        return False
    if any(ch not in allowed for ch in name):
        return False
    if not (name[0].isalnum() and name[-1].isalnum()):
        return False
    for a, b in itertools.pairwise(name):
        if (a == "." and b in ".-") or (a == "-" and b == "."):
            return False
    parts = name.split(".")
    if len(parts) == 4 and all(p.isdigit() and 1 <= len(p) <= 3 for p in parts):
        return False  # looks like an IPv4 address
    if any(name.startswith(p) for p in RESERVED_PREFIXES):
        return False
    return not any(name.endswith(s) for s in RESERVED_SUFFIXES)


bucketish = st.one_of(
    st.text(alphabet="abz09.-", min_size=0, max_size=66),
    st.text(alphabet="abcXY_ 9.-", min_size=1, max_size=10),
    st.builds(
        lambda a, b, c: a + b + c,
        st.sampled_from(["", *RESERVED_PREFIXES, "1.2.", "-", "."]),
        st.text(alphabet="ab1.-", min_size=0, max_size=20),
        st.sampled_from(["", *RESERVED_SUFFIXES, ".3.4", "-", "."]),
    ),
    st.lists(st.integers(0, 999).map(str), min_size=2, max_size=5).map(".".join),
)


@given(bucketish)
def test_bucket_name_rules_match_the_oracle(name: str) -> None:
    assert (bucket_name_problem(name) is None) == oracle_valid(name)


@given(st.text(alphabet="abz09.-_A", min_size=0, max_size=60))
def test_a_prefix_is_accepted_iff_every_bucket_it_builds_is_valid(prefix: str) -> None:
    expected = all(
        oracle_valid(f"{prefix}-{env.value}-{purpose}")
        for env in Environment
        for purpose in BUCKET_PURPOSES
    )
    try:
        Settings(bucket_prefix=prefix)
    except ValueError:  # pydantic's ValidationError is a ValueError
        accepted = False
    else:
        accepted = True
    assert accepted == expected


# --- secrets ------------------------------------------------------------------------------

secret_text = st.text(alphabet=string.ascii_letters + string.digits, min_size=12, max_size=40)


@given(password=secret_text, aws_secret=secret_text, admin_password=secret_text)
def test_secrets_never_appear_in_repr_str_or_json(
    password: str, aws_secret: str, admin_password: str
) -> None:
    settings = Settings(
        database_url=f"postgresql://mediagrid:{password}@db.internal:5432/mediagrid",
        aws_access_key_id="AKIAEXAMPLEKEY",
        aws_secret_access_key=aws_secret,
        bootstrap_admin_password=admin_password,
        database_password=f"{password}-db",
    )
    shown = [repr(settings), str(settings), settings.model_dump_json(), str(settings.model_dump())]
    for text in shown:
        for secret in (password, aws_secret, admin_password, "AKIAEXAMPLEKEY"):
            assert secret not in text
    assert password in settings.database_dsn()


def test_validation_errors_do_not_echo_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIAGRID_DATABASE_URL", "postgresql://u:TopSecretPw1@h/db")
    monkeypatch.setenv("MEDIAGRID_AWS_SECRET_ACCESS_KEY", "TopSecretKey2")
    monkeypatch.setenv("MEDIAGRID_GRPC_PORT", "-5")
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    message = str(info.value)
    assert "MEDIAGRID_GRPC_PORT" in message
    assert "TopSecret" not in message


@given(password=st.text(min_size=1, max_size=30))
def test_database_password_is_url_encoded_into_the_url(password: str) -> None:
    from urllib.parse import unquote, urlsplit

    settings = Settings(
        database_url="postgresql://mediagrid@db.internal:5432/mediagrid",
        database_password=password,
    )
    parts = urlsplit(settings.database_dsn())
    assert parts.username == "mediagrid"
    assert parts.password is not None and unquote(parts.password) == password
    assert parts.hostname == "db.internal" and parts.port == 5432
    assert parts.path == "/mediagrid"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_format_defaults_to_text_on_a_terminal_and_json_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert Settings().log_format == "text"
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a pipe, a file, a container's log
    assert Settings().log_format == "json"
    monkeypatch.setenv("MEDIAGRID_LOG_FORMAT", "json")
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert Settings().log_format == "json"  # an explicit choice wins


def test_a_process_whose_stderr_is_a_terminal_logs_text(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAGRID_")}
    env["PYTHONPATH"] = f"{root}{os.pathsep}{root / 'gen'}"
    code = "from common.settings import load_settings; print(load_settings().log_format)"
    formats = []
    for terminal in (True, False):
        leader, follower = pty.openpty()
        try:
            done = subprocess.run(
                [sys.executable, "-c", code],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=follower if terminal else subprocess.DEVNULL,
                text=True,
                timeout=60,
            )
        finally:
            os.close(leader)
            os.close(follower)
        formats.append(done.stdout.strip())
    assert formats == ["text", "json"]
