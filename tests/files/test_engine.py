"""The upload engine as the VideoService reuses it, and progress rate limiting."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from common.context import Principal
from common.errors import InvalidArgument
from services.files.app import build_deps
from services.files.models import FileRecord
from services.files.upload import Progress, TransferProfile, UploadItem, UploadStart, run_upload
from services.files.upload.session import choose_part_size
from tests.files.conftest import PART, Files, MiB, random_bytes, sha, start_files
from tests.support.auth import principal

VIDEO = TransferProfile(
    part_size=PART,
    concurrency=2,
    allows_content_type=lambda ct: ct.startswith("video/"),
    kind="video",
)


async def items(header: UploadStart, data: bytes) -> AsyncIterator[UploadItem]:
    yield header
    for start in range(0, len(data), MiB):
        yield data[start : start + MiB]


class AnyJob:
    """``JobAccess`` that lets every caller attach to every job (no jobs service here)."""

    async def require_job(self, principal: Principal, job_id: str) -> None:
        return None


async def test_video_profile_commits_a_video(files: Files) -> None:
    deps = await build_deps(files.ctx)
    deps.jobs = AnyJob()
    data = b"\x1a\x45\xdf\xa3" + random_bytes(PART + 100)
    try:
        header = UploadStart(display_name="clip.webm", content_type="video/webm", job="jobs/j1")
        out = [
            item async for item in run_upload(deps, principal("alice"), items(header, data), VIDEO)
        ]
        with pytest.raises(InvalidArgument) as refused:
            async for _ in run_upload(
                deps,
                principal("alice"),
                items(UploadStart(display_name="x.txt", content_type="text/plain"), b"abc"),
                VIDEO,
            ):
                pass
    finally:
        await deps.storage.close()
    record = out[-1]
    assert isinstance(record, FileRecord)
    assert await deps.repo.get_file(record.id) == record
    assert record.kind == "video" and record.sha256 == sha(data)
    assert record.object_key == f"users/alice/jobs/j1/{record.id}/content"
    assert all(isinstance(p, Progress) for p in out[:-1])
    assert refused.value.reason == "CONTENT_TYPE_NOT_ALLOWED"
    assert (await files.download(record.name)) == data


async def test_progress_is_rate_limited_but_reports_every_stored_part(suite: Any) -> None:
    files = await start_files(suite, upload_progress_interval_seconds=60)
    _, progress = await files.upload(random_bytes(3 * PART + 10), chunk=256 * 1024)
    # The answer to the header, one per stored part, the final one: nothing on a timer.
    assert len(progress) == 1 + 4 + 1
    assert [p.parts_completed for p in progress] == [0, 1, 2, 3, 4, 4]
    committed = [p.committed_bytes for p in progress]
    assert committed == sorted(committed) and committed[-1] == 3 * PART + 10


def test_part_size_grows_to_fit_10000_parts() -> None:
    assert choose_part_size(5 * MiB, 0) == 5 * MiB
    assert choose_part_size(1, 10) == 5 * MiB
    assert choose_part_size(8 * MiB, 80_000 * MiB) == 8 * MiB
    grown = choose_part_size(8 * MiB, 200_000 * MiB + 1)
    assert grown % MiB == 0 and grown * 10_000 >= 200_000 * MiB + 1 > (grown - MiB) * 10_000


async def test_staging_checks_the_bucket_instead_of_creating_it(settings: Any) -> None:
    from common.aws import AwsClients
    from common.errors import FailedPrecondition
    from services.files.storage import Storage

    aws = AwsClients(settings)
    with pytest.raises(FailedPrecondition) as missing:
        await Storage.open(aws, "mediagrid-staging-files", create=False)
    assert missing.value.reason == "BUCKET_MISSING"
    created = await Storage.open(aws, "mediagrid-staging-files", create=True)
    await created.close()
    checked = await Storage.open(aws, "mediagrid-staging-files", create=False)
    assert await checked.healthy()
    await checked.close()


async def test_part_buffers_are_reused_without_corrupting_parts_or_hash(files: Files) -> None:
    deps = await build_deps(files.ctx)
    real = deps.storage.upload_part
    seen: list[tuple[int, int, str]] = []  # (part number, buffer id, sha256 when sent)

    async def upload_part(key: str, upload_id: str, number: int, body: Any) -> str:
        seen.append((number, id(body), sha(bytes(body))))
        return await real(key, upload_id, number, body)

    deps.storage.upload_part = upload_part  # type: ignore[method-assign]
    profile = TransferProfile(PART, 2, lambda _: True)
    data = random_bytes(6 * PART + 123)
    try:
        header = UploadStart(display_name="d.bin", content_type="application/octet-stream")
        out = [i async for i in run_upload(deps, principal("alice"), items(header, data), profile)]
    finally:
        await deps.storage.close()
    record = out[-1]
    assert isinstance(record, FileRecord) and record.sha256 == sha(data)
    assert sorted(n for n, _, _ in seen) == list(range(1, 8))
    for number, _, digest in seen:
        assert digest == sha(data[(number - 1) * PART : number * PART])
    assert len({buffer for n, buffer, _ in seen if n <= 6}) < 6  # full parts reused buffers
    assert (await files.download(record.name)) == data
