"""The two narrow ports the VideoService depends on; the integrator wires real adapters.

- ``VideoUploads``: the files service's upload engine. ``upload`` receives the validated
  ``UploadStart`` followed by the content chunks (``bytes``), streams the bytes into S3 with
  the given transfer profile, and yields ``Progress`` reports then exactly one ``FileRecord``
  (the committed file, recorded in ``files.files`` with the given ``kind``). Errors are
  raised as ``common.errors`` domain exceptions, exactly as ``FileService.Upload`` raises them.
  Both sides speak domain types: the servicer converts to and from protobuf.
- ``VideoJobs``: the jobs service. ``enqueue`` creates a job of ``job_type`` with the JSON
  ``payload``, tied to ``file`` (``files/{id}``) and owned by ``owner`` (``users/{id}``, the
  file's owner: the job acts on that user's objects only), and returns its name ``jobs/{id}``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from common.context import Principal
from services.files.models import FileRecord
from services.files.upload import Progress, UploadStart

UploadItem = UploadStart | bytes
UploadOutput = Progress | FileRecord


class VideoUploads(Protocol):
    def upload(
        self,
        principal: Principal,
        items: AsyncIterator[UploadItem],
        *,
        part_size_bytes: int,
        concurrency: int,
        kind: str,
    ) -> AsyncIterator[UploadOutput]:
        """Upload the header + chunks in ``items``; yield progress, then the committed File."""


class VideoJobs(Protocol):
    async def enqueue(
        self,
        job_type: str,
        payload: Mapping[str, Any],
        *,
        file: str,
        owner: str,
    ) -> str:
        """Enqueue a job and return its name, ``jobs/{job}``."""
