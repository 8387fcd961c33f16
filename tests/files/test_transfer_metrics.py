"""Transfer metrics: bytes received and sent at the gRPC edge, streams in progress."""

from __future__ import annotations

from typing import Any

from common.settings import Settings
from tests.files.conftest import PART, random_bytes, start_files
from tests.support.metrics import collected_metrics, data_points


async def test_uploads_and_downloads_are_counted(suite: Any, settings: Settings) -> None:
    with collected_metrics(settings) as reader:
        files = await start_files(suite)
        data = random_bytes(2 * PART + 123)
        file, _ = await files.upload(data)
        assert await files.download(file.name) == data
        sent = {
            p.attributes["direction"]: p.value
            for p in data_points(reader, "mediagrid.files.transfer.bytes")
        }
        active = {
            p.attributes["direction"]: p.value
            for p in data_points(reader, "mediagrid.files.transfer.active")
        }
    assert sent == {"upload": len(data), "download": len(data)}
    assert active == {"upload": 0, "download": 0}
