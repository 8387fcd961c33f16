"""A video job acts for its owner: a payload naming another user's object is refused unread.

The handlers run with a real ``JobContext`` (``tests/video/conftest.py``) against PostgreSQL
and moto's S3; the only thing changed is the job's owner or payload, as a user creating such
a job by hand would.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from mediagrid.files.v1 import video_service_pb2

from services.files import keys
from services.files.video import handlers
from services.jobs.worker.api import PermanentJobError
from tests.support.auth import bearer
from tests.support.hypo import relaxed
from tests.video.clips import make_clip
from tests.video.conftest import EnqueuedJob, VideoEnv

PENDING = video_service_pb2.PROCESSING_STATE_PENDING


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Keys the handlers open in S3 (the real reader still runs)."""
    seen: list[str] = []
    real = handlers.open_video_object  # type: ignore[attr-defined]

    def spy(client: Any, aws: Any, *, bucket: str, key: str, version_id: str | None) -> Any:
        seen.append(key)
        return real(client, aws, bucket=bucket, key=key, version_id=version_id)

    monkeypatch.setattr(handlers, "open_video_object", spy)
    return seen


async def keys_under(env: VideoEnv, prefix: str) -> list[str]:
    async with env.ctx.aws.s3() as s3:
        listing = await s3.list_objects_v2(Bucket=env.ctx.settings.bucket("files"), Prefix=prefix)
    return [item["Key"] for item in listing.get("Contents", [])]


async def alices_video(env: VideoEnv) -> tuple[str, EnqueuedJob, EnqueuedJob]:
    name = await env.upload(make_clip(seconds=1.0), token="alice")
    (probe,) = env.jobs.of_type("video.probe")
    (thumbs,) = env.jobs.of_type("video.thumbnail")
    return name, probe, thumbs


def forged(job: EnqueuedJob, *, owner: str | None = None, **payload: Any) -> EnqueuedJob:
    return dataclasses.replace(
        job, name="jobs/forged", owner=owner or job.owner, payload={**job.payload, **payload}
    )


async def test_bobs_jobs_naming_alices_video_read_and_write_nothing(
    video_env: VideoEnv, opened: list[str]
) -> None:
    name, probe, thumbs = await alices_video(video_env)
    for job in (probe, thumbs):
        with pytest.raises(PermanentJobError, match="not the content"):
            await video_env.run(forged(job, owner="users/bob"))
    assert opened == []
    assert await keys_under(video_env, "users/alice/") == [probe.payload["key"]]
    assert await keys_under(video_env, "users/bob/") == []
    video = (
        await video_env.stub.GetVideo(
            video_service_pb2.GetVideoRequest(name=name), metadata=bearer("alice")
        )
    ).video
    assert video.probe.state == PENDING and video.thumbnail_step.state == PENDING
    assert not video.HasField("metadata") and not video.thumbnails

    await video_env.run(probe)  # Alice's own job still works
    assert opened == [probe.payload["key"]]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bucket": "someone-elses-bucket"}, "not the files bucket"),
        ({"key": "users/bob/../alice/{file}/content"}, "not the content"),
        ({"key": "users/alice/{other}/content"}, "not the content"),
        ({"key": "users/alice/jobs/j1/{other}/content"}, "not the content"),
        ({"file": "files/{other}"}, "not the content"),
        ({"key": "users/alice/{file}/thumbnails/content"}, "not the content"),
    ],
)
async def test_a_payload_outside_the_owners_file_fails_permanently_unread(
    video_env: VideoEnv, opened: list[str], change: dict[str, str], message: str
) -> None:
    _, probe, thumbs = await alices_video(video_env)
    file_id = probe.payload["file"].removeprefix("files/")
    values = {k: v.format(file=file_id, other="0" * 32) for k, v in change.items()}
    for job in (probe, thumbs):
        with pytest.raises(PermanentJobError, match=message):
            await video_env.run(forged(job, **values))
    assert opened == []
    assert await keys_under(video_env, "users/alice/") == [probe.payload["key"]]


async def test_thumbnails_are_written_only_under_the_owners_prefix(video_env: VideoEnv) -> None:
    _, _, thumbs = await alices_video(video_env)
    await video_env.run(thumbs)
    stored = await keys_under(video_env, "")
    assert stored and all(key.startswith("users/alice/") for key in stored)


_ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,20}\Z")


@relaxed()
@given(owner=_ids, file=_ids, job=st.none() | _ids)
def test_a_content_key_parses_back_to_its_ids(owner: str, file: str, job: str | None) -> None:
    parsed = keys.parse_content_key(keys.content_key(owner, file, job))
    assert parsed == keys.ContentKey(owner_id=owner, file_id=file, job_id=job)


_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_SEGMENTS = st.sampled_from(["users", "jobs", "alice", "f1", "..", ".", "", "content", "a/b"])


def _reference(segments: list[str]) -> keys.ContentKey | None:
    """What a content key made of these segments holds, by its definition."""
    ok = all(_ID.fullmatch(part) for part in segments[1:-1])
    if ok and segments[0] == "users" and segments[-1] == "content":
        if len(segments) == 4:
            return keys.ContentKey(owner_id=segments[1], file_id=segments[2], job_id=None)
        if len(segments) == 6 and segments[2] == "jobs":
            return keys.ContentKey(owner_id=segments[1], file_id=segments[4], job_id=segments[3])
    return None


@relaxed(max_examples=300)
@given(st.lists(_SEGMENTS, min_size=3, max_size=7))
@example(["users", "alice", "f1", "content"])
@example(["users", "alice", "jobs", "f1", "f1", "content"])
@example(["users", "alice", "..", "content"])
@example(["users", "..", "jobs", "f1", "f1", "content"])
def test_only_keys_built_from_ids_parse(segments: list[str]) -> None:
    key = "/".join(segments)
    assert keys.parse_content_key(key) == _reference(key.split("/"))
