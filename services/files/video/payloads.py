"""The payload of ``video.probe`` and ``video.thumbnail`` jobs (built by the service, read by
the worker handlers) and the resource names they carry.

Example::

    {"file": "files/7f3a...", "bucket": "mediagrid-prod-files",
     "key": "users/u1/7f3a.../content", "version_id": "3HL4kqtJlcpXroDTDmjVBH40Nrjfkd",
     "times": [0.0, 1.0, 5.0], "width": 320}

``times`` and ``width`` are read by ``video.thumbnail`` only; when absent the worker uses
the ``video_thumbnail_*`` settings.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from common.errors import InvalidArgument

ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}"
_NAME = re.compile(rf"^(videos|files)/({ID_PATTERN})$")

MAX_THUMBNAILS = 32

PROBE_JOB = "video.probe"
THUMBNAIL_JOB = "video.thumbnail"


def video_id(name: str, field: str = "name") -> str:
    """The id in ``videos/{id}`` (or ``files/{id}``, the same id); INVALID_ARGUMENT otherwise."""
    match = _NAME.fullmatch(name)
    if not match:
        raise InvalidArgument.field(
            field, f"expected videos/{{video}} or files/{{file}}, got {name[:80]!r}"
        )
    return match.group(2)


class VideoJobPayload(BaseModel):
    model_config = ConfigDict(frozen=True)

    file: Annotated[str, Field(pattern=rf"^files/{ID_PATTERN}$")]
    bucket: Annotated[str, Field(min_length=3, max_length=63)]
    key: Annotated[str, Field(pattern=r"^users/.+/content$", max_length=1024)]
    version_id: str | None = None
    times: (
        Annotated[list[Annotated[float, Field(ge=0, le=86_400)]], Field(max_length=MAX_THUMBNAILS)]
        | None
    ) = None
    width: Annotated[int, Field(ge=16, le=3840)] | None = None

    @property
    def file_id(self) -> str:
        return self.file.removeprefix("files/")

    @property
    def video(self) -> str:
        return f"videos/{self.file_id}"
