"""import-files: a generated legacy tree goes to S3 through the files service's upload engine."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from common.errors import Unavailable
from services.files.storage import Storage
from services.migration.repository import LegacyRepository
from tests.legacy.conftest import FilesEnv, write_tree


async def _user(env: FilesEnv, email: str) -> str:
    user = await env.users.create_user(
        email=email, display_name="", role="user", password_hash=None
    )
    return user.id


async def test_import_tree_then_downloads_are_byte_identical(
    files_env: FilesEnv, tmp_path: Path
) -> None:
    alice, bob = await _user(files_env, "a@example.com"), await _user(files_env, "b@example.com")
    tree = write_tree(tmp_path, [alice, bob])
    report = await files_env.importer(verify="readback").run(tmp_path, "r1")
    assert report.failures == []
    assert report.count("imported") == len(tree)
    assert report.bytes("imported") == sum(len(d) for d in tree.values())
    by_path = {r.source_path: r for r in report.results}
    for rel, data in tree.items():
        record = await files_env.files.get_file(by_path[rel].file_name.removeprefix("files/"))
        assert record is not None
        owner = rel.split("/", 1)[0]
        assert record.owner_id == owner
        assert record.display_name == rel.split("/", 1)[1]
        assert record.sha256 == hashlib.sha256(data).hexdigest()
        assert record.size_bytes == len(data)
        assert record.object_key == f"users/{owner}/{record.id}/content"
        assert record.labels == {"imported-from": "legacy", "legacy-run": "r1"}
        assert await files_env.download(record.name) == data
        head = await files_env.storage.head(record.object_key, record.version_id)
        assert head["Metadata"]["sha256"] == record.sha256
    png = await files_env.files.get_file(by_path[f"{alice}/picture.png"].file_name[6:])
    assert png is not None and png.content_type == "image/png"
    rows = await files_env.legacy.run_files("r1")
    assert {r.state for r in rows} == {"done"}
    assert (await files_env.legacy.get_run("r1")).state == "completed"  # type: ignore[union-attr]


async def test_rerun_is_a_noop_and_a_changed_file_is_reimported(
    files_env: FilesEnv, tmp_path: Path
) -> None:
    alice = await _user(files_env, "a@example.com")
    tree = write_tree(tmp_path, [alice])
    first = await files_env.importer().run(tmp_path, "r1")
    assert first.count("imported") == len(tree)
    again = await files_env.importer().run(tmp_path, "r1")
    assert again.count("skipped") == len(tree) and again.count("imported") == 0
    assert len(await files_env.files.user_files(alice)) == len(tree)

    changed = tmp_path / alice / "2019" / "file-1.bin"
    changed.write_bytes(b"new content")
    os.utime(changed, ns=(1, 1_700_000_000_000_000_000))
    third = await files_env.importer().run(tmp_path, "r1")
    assert third.count("imported") == 1 and third.count("skipped") == len(tree) - 1
    result = next(r for r in third.results if r.outcome == "imported")
    old = next(r for r in first.results if r.source_path == result.source_path)
    assert result.file_name == old.file_name  # a new version of the same file
    assert await files_env.download(result.file_name) == b"new content"
    versions = await files_env.files.version_ids(result.file_name[6:])
    assert len(versions) == 2
    assert len(await files_env.files.user_files(alice)) == len(tree)


async def test_flat_directory_with_owner_and_dry_run(files_env: FilesEnv, tmp_path: Path) -> None:
    carol = await _user(files_env, "c@example.com")
    (tmp_path / "top.txt").write_text("hello")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.bin").write_bytes(b"\0" * 10)
    planned = await files_env.importer().run(tmp_path, "flat", owner=f"users/{carol}", dry_run=True)
    assert [r.outcome for r in planned.results] == ["planned", "planned"]
    assert await files_env.legacy.get_run("flat") is None
    assert await files_env.files.user_files(carol) == []
    report = await files_env.importer().run(tmp_path, "flat", owner=f"users/{carol}")
    names = sorted(f.display_name for f in await files_env.files.user_files(carol))
    assert report.count("imported") == 2 and names == ["sub/x.bin", "top.txt"]
    text = next(f for f in await files_env.files.user_files(carol) if f.display_name == "top.txt")
    assert text.content_type == "text/plain"


async def test_unknown_owner_directory_fails_with_reason(
    files_env: FilesEnv, tmp_path: Path
) -> None:
    (tmp_path / "nosuchuser").mkdir()
    (tmp_path / "nosuchuser" / "f.bin").write_bytes(b"x")
    (tmp_path / "stray.bin").write_bytes(b"y")
    report = await files_env.importer().run(tmp_path, "r")
    reasons = {r.source_path: r.reason for r in report.failures}
    assert reasons["nosuchuser/f.bin"].startswith("UNKNOWN_OWNER")
    assert reasons["stray.bin"].startswith("NOT_IN_USER_DIRECTORY")
    assert (await files_env.legacy.get_run("r")).state == "failed"  # type: ignore[union-attr]


class FlakyStorage(Storage):
    """Fails every S3 write of objects whose upload carries a chosen size."""

    def __init__(self, inner: Storage, fail_sizes: set[int]) -> None:
        super().__init__(inner.client, inner.bucket)
        self.fail_sizes = fail_sizes

    async def put_object(self, key: str, body: Any, content_type: str, metadata: Any) -> Any:
        if len(body) in self.fail_sizes:
            raise Unavailable("injected S3 failure", reason="S3_UNAVAILABLE")
        return await super().put_object(key, body, content_type, metadata)

    async def upload_part(self, key: str, upload_id: str, number: int, body: Any) -> str:
        if number == 2 and -1 in self.fail_sizes:
            raise Unavailable("injected S3 failure", reason="S3_UNAVAILABLE")
        return await super().upload_part(key, upload_id, number, body)


async def test_failures_leave_a_resumable_run_and_rollback_removes_exactly_it(
    files_env: FilesEnv, tmp_path: Path
) -> None:
    alice = await _user(files_env, "a@example.com")
    tree = write_tree(tmp_path, [alice])
    broken = tmp_path / alice / "broken-link.bin"
    broken.symlink_to(tmp_path / "missing-target")
    # Another run's file of the same user must survive the rollback of this one.
    other = tmp_path.parent / f"{tmp_path.name}-other"
    (other / alice).mkdir(parents=True)
    (other / alice / "keep.bin").write_bytes(b"keep me")
    kept = await files_env.importer().run(other, "other")
    assert kept.count("imported") == 1

    flaky = FlakyStorage(files_env.storage, {4096, -1})  # one small file, one multipart file
    report = await files_env.importer(storage=flaky).run(tmp_path, "r1")
    reasons = {r.source_path: r.reason for r in report.failures}
    assert set(reasons) == {
        f"{alice}/broken-link.bin",
        f"{alice}/2019/holiday/file-2.bin",
        f"{alice}/2019/file-5.bin",
    }
    assert reasons[f"{alice}/broken-link.bin"].startswith("UNREADABLE")
    assert all(r.startswith("S3_UNAVAILABLE") for k, r in reasons.items() if "link" not in k)
    assert report.count("imported") == len(tree) - 2
    rows = {r.source_path: r for r in await files_env.legacy.run_files("r1")}
    assert {rows[k].state for k in reasons} == {"failed"}
    # The failed multipart upload was aborted, its session closed.
    session = await files_env.files.get_upload(rows[f"{alice}/2019/file-5.bin"].upload_id or "")
    assert session is not None and session.state == "failed"

    # Resume without the fault: only the failed files are imported now.
    broken.unlink()
    resumed = await files_env.importer().run(tmp_path, "r1")
    assert resumed.failures == []
    assert resumed.count("imported") == 2 and resumed.count("skipped") == len(tree) - 2
    assert len(await files_env.files.user_files(alice)) == len(tree) + 1

    keys_before = {k for k, _ in await files_env.storage.version_ids(f"users/{alice}/")}
    rollback = await files_env.importer().rollback("r1")
    assert rollback.files_removed == len(tree)
    remaining = await files_env.files.user_files(alice)
    assert [f.display_name for f in remaining] == ["keep.bin"]
    keys_after = {k for k, _ in await files_env.storage.version_ids(f"users/{alice}/")}
    assert keys_after == {remaining[0].object_key}
    assert len(keys_before) == len(tree) + 1
    assert await files_env.download(remaining[0].name) == b"keep me"
    assert await files_env.legacy.run_files("r1") == []
    assert (await files_env.legacy.get_run("r1")).state == "rolled_back"  # type: ignore[union-attr]
    # After a rollback the run can be imported again from scratch.
    again = await files_env.importer().run(tmp_path, "r1")
    assert again.count("imported") == len(tree)


class DiesAfterCommit(LegacyRepository):
    """Progress table whose 'done' update fails once: a crash right after the S3 commit."""

    def __init__(self, inner: LegacyRepository) -> None:
        super().__init__(inner.pool)
        self.armed = True

    async def file_done(self, run_id: str, source_path: str, **kwargs: Any) -> None:
        if self.armed:
            self.armed = False
            raise ConnectionError("lost the database connection")
        await super().file_done(run_id, source_path, **kwargs)


async def test_commit_without_progress_update_is_adopted_and_rolled_back(
    files_env: FilesEnv, tmp_path: Path
) -> None:
    alice = await _user(files_env, "a@example.com")
    (tmp_path / alice).mkdir()
    (tmp_path / alice / "only.bin").write_bytes(b"payload" * 1000)
    crashing = files_env.importer(concurrency=1)
    crashing.legacy = DiesAfterCommit(files_env.legacy)
    first = await crashing.run(tmp_path, "r1")
    assert [r.outcome for r in first.results] == ["failed"]
    committed = await files_env.files.user_files(alice)
    assert len(committed) == 1  # in S3 and PostgreSQL, but not recorded as done

    second = await files_env.importer().run(tmp_path, "r1")
    assert [(r.outcome, r.reason) for r in second.results] == [("imported", "recovered")]
    assert second.results[0].file_name == committed[0].name
    assert len(await files_env.files.user_files(alice)) == 1

    await files_env.importer().rollback("r1")
    assert await files_env.files.user_files(alice) == []
    assert await files_env.storage.version_ids(f"users/{alice}/") == []


async def test_rollback_finds_a_commit_the_progress_table_missed(
    files_env: FilesEnv, tmp_path: Path
) -> None:
    alice = await _user(files_env, "a@example.com")
    (tmp_path / alice).mkdir()
    (tmp_path / alice / "only.bin").write_bytes(b"x" * 10)
    crashing = files_env.importer()
    crashing.legacy = DiesAfterCommit(files_env.legacy)
    await crashing.run(tmp_path, "r1")
    rows = await files_env.legacy.run_files("r1")
    assert [(r.state, r.file_id) for r in rows] == [("failed", None)]
    undone = await files_env.importer().rollback("r1")
    assert undone.files_removed == 1 and undone.objects_removed == 1
    assert await files_env.files.user_files(alice) == []


async def test_files_are_streamed_never_read_whole(
    files_env: FilesEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await _user(files_env, "a@example.com")
    (tmp_path / alice).mkdir()
    big = tmp_path / alice / "big.bin"
    data = os.urandom(12 * 1024 * 1024)
    big.write_bytes(data)
    reads: list[int] = []
    real_open = Path.open

    class Spy:
        def __init__(self, f: Any) -> None:
            self.f = f

        def read(self, n: int = -1) -> bytes:
            reads.append(n)
            return bytes(self.f.read(n))

        def close(self) -> None:
            self.f.close()

        def __enter__(self) -> Spy:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()

    def spy_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        f = real_open(self, *args, **kwargs)
        return Spy(f) if self == big else f

    monkeypatch.setattr(Path, "open", spy_open)
    report = await files_env.importer().run(tmp_path, "big")
    assert report.count("imported") == 1
    assert reads and all(0 < n <= 4 * 1024 * 1024 for n in reads)
    assert await files_env.download(report.results[0].file_name) == data


async def test_file_changed_after_an_unrecorded_commit_becomes_its_new_version(
    files_env: FilesEnv, tmp_path: Path
) -> None:
    alice = await _user(files_env, "a@example.com")
    (tmp_path / alice).mkdir()
    path = tmp_path / alice / "doc.bin"
    path.write_bytes(b"first")
    crashing = files_env.importer()
    crashing.legacy = DiesAfterCommit(files_env.legacy)
    await crashing.run(tmp_path, "r1")
    path.write_bytes(b"second version")
    report = await files_env.importer().run(tmp_path, "r1")
    assert [r.outcome for r in report.results] == ["imported"]
    (only,) = await files_env.files.user_files(alice)
    assert report.results[0].file_name == only.name
    assert len(await files_env.files.version_ids(only.id)) == 2
    assert await files_env.download(only.name) == b"second version"
    await files_env.importer().rollback("r1")
    assert await files_env.files.user_files(alice) == []
