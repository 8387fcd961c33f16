"""Transfer metrics of the files service: bytes received and sent, transfers in progress.

``mediagrid.files.transfer.bytes`` (by ``direction``: upload, download) counts bytes as they
pass the gRPC edge; ``mediagrid.files.transfer.active`` counts open Upload and Download
streams. No-ops without a metrics exporter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from common.telemetry import get_meter

UPLOAD = {"direction": "upload"}
DOWNLOAD = {"direction": "download"}


class TransferMetrics:
    def __init__(self) -> None:
        meter = get_meter("mediagrid.files")
        self.bytes = meter.create_counter(
            "mediagrid.files.transfer.bytes",
            unit="By",
            description="Bytes received by uploads and sent by downloads.",
        )
        self.active = meter.create_up_down_counter(
            "mediagrid.files.transfer.active",
            description="Upload and download streams in progress.",
        )

    async def counted_upload(self, items: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """``items`` (headers and data chunks) passed through, data bytes counted."""
        self.active.add(1, UPLOAD)
        try:
            async for item in items:
                if isinstance(item, bytes | memoryview):
                    self.bytes.add(len(item), UPLOAD)
                yield item
        finally:
            self.active.add(-1, UPLOAD)

    def sent(self, size: int) -> None:
        self.bytes.add(size, DOWNLOAD)
