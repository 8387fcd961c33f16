"""Upload then download through the real gRPC service: bytes and SHA-256 survive."""

from __future__ import annotations

import pytest

from tests.files.conftest import PART, Files, random_bytes, sha

SIZES = [0, 1, PART - 1, PART, PART + 1, 3 * PART + 12345]


@pytest.mark.parametrize("declare", [True, False])
async def test_round_trip(files: Files, declare: bool) -> None:
    for size in SIZES:
        await round_trip(files, size, declare)


async def round_trip(files: Files, size: int, declare: bool) -> None:
    data = random_bytes(size)
    header = {"sha256": sha(data), "size_bytes": size} if declare else {}
    file, progress = await files.upload(data, **header)
    assert file.size_bytes == size
    assert file.sha256 == sha(data)
    assert file.name.startswith("files/")
    assert file.storage.key == f"users/alice/{file.name.removeprefix('files/')}/content"
    assert file.version_id
    assert progress[0].upload.startswith("uploads/")
    assert progress[-1].received_bytes == size
    assert await files.download(file.name) == data
