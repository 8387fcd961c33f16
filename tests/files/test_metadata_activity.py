"""S3 object metadata/tags carry file id, owner and SHA-256; mutations are recorded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mediagrid.files.v1 import file_service_pb2

from tests.files.conftest import PART, Files, random_bytes, sha, start_files


class Recorder:
    def __init__(self) -> None:
        self.entries: list[tuple[str, str, dict[str, str]]] = []

    async def record(
        self,
        action: str,
        resource: str,
        metadata: Mapping[str, str] | None = None,
        *,
        actor: str | None = None,
    ) -> None:
        self.entries.append((action, resource, dict(metadata or {})))


async def test_object_metadata_and_tags(files: Files) -> None:
    small = random_bytes(100)
    declared = random_bytes(PART + 1)
    undeclared = random_bytes(PART + 1)
    bucket = files.ctx.settings.bucket("files")
    results = [
        (await files.upload(small))[0],
        (await files.upload(declared, sha256=sha(declared)))[0],
        (await files.upload(undeclared))[0],
    ]
    async with files.ctx.aws.s3() as s3:
        for file, data in zip(results, (small, declared, undeclared), strict=True):
            head = await s3.head_object(
                Bucket=bucket, Key=file.storage.key, VersionId=file.version_id
            )
            meta = head["Metadata"]
            assert meta["file-id"] == file.name.removeprefix("files/")
            assert meta["owner"] == "users/alice"
            if "sha256" in meta:
                assert meta["sha256"] == sha(data)
            else:  # multipart upload without a declared hash: the version's tag has it
                tags = await s3.get_object_tagging(
                    Bucket=bucket, Key=file.storage.key, VersionId=file.version_id
                )
                assert {"Key": "sha256", "Value": sha(data)} in tags["TagSet"]
        assert (
            "sha256"
            not in (await s3.head_object(Bucket=bucket, Key=results[2].storage.key))["Metadata"]
        )


async def test_mutations_are_recorded(suite: Any) -> None:
    recorder = Recorder()
    files = await start_files(suite, activity=recorder)
    file, _ = await files.upload(b"abc")
    await files.stub.ShareFile(
        file_service_pb2.ShareFileRequest(
            name=file.name, user="users/bob", role=file_service_pb2.SHARE_ROLE_READER
        ),
        metadata=files.md("alice"),
    )
    await files.stub.DeleteFile(
        file_service_pb2.DeleteFileRequest(name=file.name), metadata=files.md("alice")
    )
    actions = [(action, resource) for action, resource, _ in recorder.entries]
    assert ("files.upload", file.name) in actions
    assert ("files.share", file.name) in actions
    assert ("files.delete", file.name) in actions
    assert actions[0][0] == "files.upload.start"
