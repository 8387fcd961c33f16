"""The files service's S3 port: one long-lived aioboto3 client and the calls we make.

Every botocore failure is translated here into a domain error (UNAVAILABLE for transport
and server errors), so no handler ever lets a botocore exception reach a client.

Every S3 call goes through the process's S3 ``Dependency`` (``ctx.dependencies.s3``): its
circuit breaker, and a time bound. botocore only bounds each socket connect and read, so a
blackholed endpoint that accepts connections (or keeps one open without answering) would
hold a call for as long as its retries last. Small calls get ``s3_call_timeout_seconds``;
each transfer step (one part, one chunk of a read) gets ``s3_transfer_timeout_seconds``;
inside an RPC the caller's remaining deadline caps both. A call that runs out of time, or
any call while the breaker is open, is UNAVAILABLE (``S3_UNAVAILABLE``) with a RetryInfo.
Presigning is local computation and makes no S3 call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import io
import logging
import math
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from common.aws import AwsClients, ensure_bucket
from common.dependencies import S3, breaker_policy
from common.errors import DomainError, FailedPrecondition, NotFound, Unavailable
from common.health import probe_bound
from common.resilience import BreakerPolicy, CircuitBreaker, Dependency

log = logging.getLogger("mediagrid.files.storage")
T = TypeVar("T")
E = TypeVar("E")

META_FILE_ID = "file-id"
META_OWNER = "owner"
META_SHA256 = "sha256"

# How long a client should wait before retrying a call that S3 failed or did not answer.
RETRY_AFTER_SECONDS = 1.0
# Bounds for storage built without settings (tests, tools).
DEFAULT_CALL_TIMEOUT = 10.0
DEFAULT_TRANSFER_TIMEOUT = 30.0
# A transfer step of up to this many bytes gets ``s3_transfer_timeout_seconds``; a larger
# part (parts grow for files too large for 10,000 parts of the configured size) gets
# proportionally longer, so the bound stays one minimum bandwidth.
TRANSFER_STEP_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class PutResult:
    version_id: str
    etag: str


@dataclass(frozen=True)
class MultipartUpload:
    key: str
    upload_id: str
    initiated: datetime


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _translate(what: str, exc: ClientError | BotoCoreError | OSError | TimeoutError) -> DomainError:
    """The domain error for a botocore or transport failure of the S3 call ``what``."""
    if isinstance(exc, ClientError):
        code = _code(exc)
        if code in ("NoSuchUpload",):
            return FailedPrecondition(
                f"{what}: the S3 multipart upload no longer exists", reason="UPLOAD_EXPIRED"
            )
        if code in ("NoSuchKey", "NoSuchVersion", "404", "InvalidArgument"):
            return NotFound(f"{what}: object not found", reason="OBJECT_NOT_FOUND")
        if code in ("InvalidRange", "416"):
            return FailedPrecondition(f"{what}: invalid range", reason="INVALID_RANGE")
        log.warning("S3 %s failed: %s", what, exc)
        return s3_unavailable(f"S3 {what} failed ({code})")
    log.warning("S3 %s failed: %s", what, exc)
    return s3_unavailable(f"S3 {what} failed: {type(exc).__name__}")


def s3_unavailable(message: str) -> Unavailable:
    return Unavailable(message, reason="S3_UNAVAILABLE", retry_after_seconds=RETRY_AFTER_SECONDS)


async def _s3(what: str, call: Callable[[], Awaitable[T]]) -> T:
    """``call()`` with botocore and transport failures translated into domain errors (so the
    breaker sees NOT_FOUND as an answer and UNAVAILABLE as a failure)."""
    try:
        return await call()
    except DomainError:
        raise
    except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
        raise _translate(what, exc) from exc


# How long a look for an object before minting a URL for it may take: the URL is minted
# unverified past it (signing is local; a down S3 must not hold URL requests for the whole
# S3 call bound).
PRESENCE_CHECK_SECONDS = 2.0


async def stored_versions(
    dependency: Dependency, sync_client: Any, bucket: str, prefix: str
) -> set[tuple[str, str | None]]:
    """``(key, version_id)`` of every stored version under ``prefix``, plus ``(key, None)``
    for each key whose latest version is an object (not a delete marker): what a URL may be
    minted for. One listing through the breaker, read by the synchronous client in a thread.
    """

    def listing() -> set[tuple[str, str | None]]:
        found: set[tuple[str, str | None]] = set()
        paginator = sync_client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for entry in page.get("Versions", []):
                found.add((entry["Key"], entry["VersionId"]))
                if entry.get("IsLatest"):
                    found.add((entry["Key"], None))
        return found

    what = "list stored versions"
    return await dependency.call(
        lambda: _s3(what, lambda: asyncio.to_thread(listing)), what=what, cap=PRESENCE_CHECK_SECONDS
    )


# The translation of botocore failures for callers outside ``Storage`` (the video servicer).
s3_call = _s3


def standalone_dependency(call_timeout: float, policy: BreakerPolicy | None = None) -> Dependency:
    """An S3 dependency of its own, for tools that open storage outside a service process."""
    breaker = CircuitBreaker(S3, policy, reason="S3_UNAVAILABLE")
    return Dependency(
        S3,
        reason="S3_UNAVAILABLE",
        timeout=call_timeout,
        breaker=breaker,
        retry_after_seconds=RETRY_AFTER_SECONDS,
    )


_END = object()  # end of a threaded read


class _PartBody(io.BytesIO):
    """A part's bytes as a rewindable stream whose reads are views, not copies.

    Handed a ``bytearray``, aiohttp writes the whole part to the socket at once and Python
    3.11's asyncio transport keeps a copy of whatever the socket did not take (and slicing a
    bytearray copies it again): with a slow server, every part in flight was held two or
    three times. As a ``BytesIO`` the body is written by aiohttp in 64 KiB reads, each
    waiting for the socket to drain, so at most a read's worth is ever copied; the reads
    return memoryviews of the part, so the bytes the socket takes are not copied at all.
    botocore rewinds a body to retry a request (``seek(0)``), which a plain memoryview
    cannot do. Only the body of the request being sent is swapped (``before-send``):
    botocore computed the length and checksum on the bytearray and re-creates the body from
    it for every retry."""

    def __init__(self, data: bytearray | bytes) -> None:
        super().__init__()
        self._data = memoryview(data)
        self._position = 0

    def read(self, size: int | None = -1, /) -> memoryview:  # type: ignore[override]
        start = self._position
        end = len(self._data) if size is None or size < 0 else min(start + size, len(self._data))
        self._position = max(start, end)
        return self._data[start : self._position]

    def read1(self, size: int | None = -1, /) -> memoryview:  # type: ignore[override]
        return self.read(size)

    def readinto(self, buffer: Any, /) -> int:
        piece = self.read(len(memoryview(buffer)))
        memoryview(buffer)[: len(piece)] = piece
        return len(piece)

    def readline(self, size: int | None = -1, /) -> bytes:
        # BytesIO's own implementation would read its (empty) internal buffer.
        raise io.UnsupportedOperation("a part body is read in blocks")

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._data)}
        self._position = max(0, base[whence] + offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def getbuffer(self) -> memoryview:
        return self._data[:]

    def getvalue(self) -> bytes:
        return self._data.tobytes()


def _send_part_body_as_views(request: Any, **_: Any) -> None:
    if isinstance(request.body, bytearray | bytes) and request.body:
        request.body = _PartBody(request.body)


def _same(data: bytes) -> bytes:
    return data


class Storage:
    """S3 operations on the files bucket."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        sync_client: Any | None = None,
        *,
        dependency: Dependency | None = None,
        transfer_timeout: float = DEFAULT_TRANSFER_TIMEOUT,
        probe_timeout: float | None = None,
        presigner: Any | None = None,
    ) -> None:
        self.client = client
        # Synchronous client for the URLs handed to clients (``AwsClients.presigner``: signed
        # for the public endpoint when there is one); None: the async client presigns.
        self.presigner = presigner
        self.bucket = bucket
        # Optional synchronous client for streaming reads off the event loop.
        self.sync_client = sync_client
        self.dependency = dependency or standalone_dependency(DEFAULT_CALL_TIMEOUT)
        self.transfer_timeout = transfer_timeout
        # The health check's own bound: under the health monitor's timeout, so that a hung S3
        # is a verdict for the breaker (the monitor's cancellation is none).
        self.probe_timeout = min(self.dependency.timeout, probe_timeout or math.inf)
        self._stack: AsyncExitStack | None = None

    def transfer_cap(self, size: int = 0) -> float:
        """Seconds a transfer step of ``size`` bytes may take (before the caller's deadline)."""
        return self.transfer_timeout * max(1.0, size / TRANSFER_STEP_BYTES)

    async def _call(
        self, what: str, call: Callable[[], Awaitable[T]], cap: float | None = None
    ) -> T:
        """A call through the breaker, within ``cap`` (default: the small-call bound)."""
        return await self.dependency.call(lambda: _s3(what, call), what=what, cap=cap)

    async def _transfer(self, what: str, call: Callable[[], Awaitable[T]], size: int = 0) -> T:
        return await self._call(what, call, self.transfer_cap(size))

    async def _pages(self, what: str, pages: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """The pages of a paginated listing, each page bounded like a small call."""
        iterator = aiter(pages)
        # The end of the listing is an answer (None), not an exception the breaker would
        # count as a failure.
        while (page := await self._call(what, lambda: anext(iterator, None))) is not None:
            yield page

    @classmethod
    async def open(
        cls, aws: AwsClients, bucket: str, *, create: bool, dependency: Dependency | None = None
    ) -> Storage:
        """Open the client; create the bucket (dev/test) or check that it exists (staging/prod).

        ``dependency``: the process's S3 dependency (``ctx.dependencies.s3``); tools outside a
        service process get one of their own."""
        stack = AsyncExitStack()
        client = await stack.enter_async_context(aws.s3())
        for operation in ("UploadPart", "PutObject"):
            client.meta.events.register(f"before-send.s3.{operation}", _send_part_body_as_views)
        settings = aws.settings
        storage = cls(
            client,
            bucket,
            aws.sync_s3(),
            dependency=dependency
            or standalone_dependency(settings.s3_call_timeout_seconds, breaker_policy(settings)),
            transfer_timeout=settings.s3_transfer_timeout_seconds,
            probe_timeout=probe_bound(settings.health_check_timeout_seconds),
            presigner=aws.presigner(),
        )
        storage._stack = stack
        try:
            if create:
                await storage._call("ensure bucket", lambda: ensure_bucket(client, bucket))
            else:
                try:
                    await storage._call("head bucket", lambda: client.head_bucket(Bucket=bucket))
                except NotFound:
                    raise FailedPrecondition(
                        f"the files bucket {bucket!r} does not exist; outside dev/test it is "
                        "provisioned with the infrastructure, not created by the service",
                        reason="BUCKET_MISSING",
                    ) from None
        except BaseException:
            await stack.aclose()
            raise
        return storage

    async def close(self) -> None:
        if self.sync_client is not None:
            self.sync_client.close()
            self.sync_client = None
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None

    async def healthy(self) -> bool:
        """False while the S3 breaker is open, else whether the bucket answers (through the
        breaker: with no traffic, the health check is the call that probes S3 again)."""
        if not self.dependency.available:
            return False
        try:
            head = functools.partial(self.client.head_bucket, Bucket=self.bucket)
            await self._call("head bucket", head, self.probe_timeout)
            return True
        except Exception as exc:  # health checks report, never raise
            log.warning("S3 health check failed: %s", exc)
            return False

    # --- multipart ---------------------------------------------------------------------

    async def create_multipart(self, key: str, content_type: str, metadata: dict[str, str]) -> str:
        response = await self._call(
            "create multipart upload",
            lambda: self.client.create_multipart_upload(
                Bucket=self.bucket, Key=key, ContentType=content_type, Metadata=metadata
            ),
        )
        return str(response["UploadId"])

    async def upload_part(
        self, key: str, upload_id: str, number: int, body: bytes | bytearray
    ) -> str:
        response = await self._transfer(
            "upload part",
            lambda: self.client.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
            ),
            len(body),
        )
        return str(response["ETag"])

    async def complete_multipart(
        self, key: str, upload_id: str, parts: list[tuple[int, str]]
    ) -> PutResult:
        # S3 may take a while to assemble many parts before it answers: a transfer bound,
        # one step per 1,000 parts.
        response = await self._transfer(
            "complete multipart upload",
            lambda: self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]},
            ),
            TRANSFER_STEP_BYTES * len(parts) // 1000,
        )
        return PutResult(str(response.get("VersionId", "")), str(response["ETag"]))

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Abort; an upload S3 no longer knows counts as aborted."""
        with contextlib.suppress(FailedPrecondition, NotFound):
            await self._call(
                "abort multipart upload",
                lambda: self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id
                ),
            )

    async def list_multipart_uploads(self) -> AsyncIterator[MultipartUpload]:
        paginator = self.client.get_paginator("list_multipart_uploads")
        pages = paginator.paginate(Bucket=self.bucket)
        async for page in self._pages("list multipart uploads", pages):
            for upload in page.get("Uploads", []):
                yield MultipartUpload(upload["Key"], upload["UploadId"], upload["Initiated"])

    # --- objects -----------------------------------------------------------------------

    async def put_object(
        self, key: str, body: bytes | bytearray, content_type: str, metadata: dict[str, str]
    ) -> PutResult:
        """PUT a body of at most one part (a transfer step, bounded like a part)."""
        response = await self._transfer(
            "put object",
            lambda: self.client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType=content_type, Metadata=metadata
            ),
            len(body),
        )
        return PutResult(str(response.get("VersionId", "")), str(response["ETag"]))

    async def head(
        self, key: str, version_id: str | None = None, *, cap: float | None = None
    ) -> dict[str, Any]:
        """The object's metadata; ``cap`` bounds the call below the usual S3 call bound."""
        extra = {"VersionId": version_id} if version_id else {}
        what = "head object"
        response = await self.dependency.call(
            lambda: _s3(
                what, lambda: self.client.head_object(Bucket=self.bucket, Key=key, **extra)
            ),
            what=what,
            cap=cap,
        )
        return dict(response)

    async def stream(
        self,
        key: str,
        version_id: str | None,
        *,
        offset: int = 0,
        length: int | None = None,
        chunk_size: int = 1024 * 1024,
        read_ahead: int = 4,
    ) -> AsyncIterator[bytes]:
        """Yield the object's bytes in chunks of ``chunk_size`` (the last may be shorter),
        read ahead of the consumer by at most ``read_ahead`` chunks.

        With a synchronous client the object is read in a thread of its own: the HTTP
        client's parsing then runs beside the event loop (socket reads release the GIL)
        instead of taking turns with whatever the loop does with the chunks.
        """
        chunks = self.stream_encoded(
            key,
            version_id,
            _same,
            offset=offset,
            length=length,
            chunk_size=chunk_size,
            read_ahead=read_ahead,
        )
        async for chunk in chunks:
            yield chunk

    async def stream_encoded(
        self,
        key: str,
        version_id: str | None,
        encode: Callable[[bytes], E],
        *,
        offset: int = 0,
        length: int | None = None,
        chunk_size: int = 1024 * 1024,
        read_ahead: int = 4,
        streams: int = 1,
        segment_size: int = 8 * 1024 * 1024,
    ) -> AsyncIterator[E]:
        """:meth:`stream`, with ``encode`` applied to every chunk in the reader thread
        (on the loop when there is no synchronous client).

        ``streams`` > 1 reads a version's range with that many ranged GETs at once (segments
        of ``segment_size`` bytes), still yielded in order (see :meth:`_parallel_read`)."""
        if (
            self.sync_client is not None
            and streams > 1
            and version_id
            and length is not None
            and length > segment_size
        ):
            async for item in self._parallel_read(
                key, version_id, offset, length, chunk_size, streams, segment_size, encode
            ):
                yield item
            return
        extra: dict[str, str] = {}
        if version_id:
            extra["VersionId"] = version_id
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            extra["Range"] = f"bytes={offset}-{end}"
        if self.sync_client is not None:
            async for item in self._threaded_read(
                key, extra, chunk_size, max(1, read_ahead), encode
            ):
                yield item
            return
        async for chunk in _prefetched(
            self._async_read(key, extra, chunk_size), max(1, read_ahead)
        ):
            yield encode(chunk)

    async def _async_read(
        self, key: str, extra: dict[str, str], chunk_size: int
    ) -> AsyncIterator[bytes]:
        # A read's first bytes come as fast as any answer: bounded like a small call, so a
        # hung S3 fails the read sooner than the transfer bound would.
        response = await self._call(
            "get object", lambda: self.client.get_object(Bucket=self.bucket, Key=key, **extra)
        )
        body = response["Body"]
        # The HTTP body arrives in pieces of any size; send whole chunks (few large messages
        # are much cheaper for gRPC than many small ones).
        pending = bytearray()
        try:
            while True:
                wanted = chunk_size - len(pending)
                piece = await self._transfer("read object", functools.partial(body.read, wanted))
                if not piece:
                    break
                if not pending and len(piece) == chunk_size:
                    yield piece
                    continue
                pending += piece
                if len(pending) >= chunk_size:
                    yield bytes(pending)
                    pending.clear()
            if pending:
                yield bytes(pending)
        finally:
            body.close()

    async def _threaded_read(
        self,
        key: str,
        extra: dict[str, str],
        chunk_size: int,
        read_ahead: int,
        encode: Callable[[bytes], E],
    ) -> AsyncIterator[E]:
        """GET in a dedicated thread; chunks reach the loop through a queue. The thread
        takes a slot before reading each chunk and the consumer frees one per chunk taken,
        so at most ``read_ahead`` chunks (plus the one being read) are held. Each chunk
        must arrive within the transfer bound."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        slots = threading.Semaphore(read_ahead)
        stop = threading.Event()
        client: Any = self.sync_client
        bucket = self.bucket

        def post(item: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def read() -> None:
            body = None
            try:
                try:
                    body = client.get_object(Bucket=bucket, Key=key, **extra)["Body"]
                except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
                    post(_translate("get object", exc))
                    return
                while not stop.is_set():
                    if not slots.acquire(timeout=1.0):
                        continue
                    if stop.is_set():
                        return
                    try:
                        piece = body.read(chunk_size)
                        while piece and len(piece) < chunk_size:
                            more = body.read(chunk_size - len(piece))
                            if not more:
                                break
                            piece += more
                    except (BotoCoreError, OSError, TimeoutError) as exc:
                        post(s3_unavailable(f"S3 read failed: {exc}"))
                        return
                    if not piece:
                        post(_END)
                        return
                    post(encode(piece))
            except BaseException as exc:  # anything else still ends the consumer's wait
                post(exc)
            finally:
                if body is not None:
                    with contextlib.suppress(Exception):
                        body.close()

        thread = threading.Thread(target=read, name="s3-read", daemon=True)

        async def next_item() -> Any:
            if thread.ident is None:
                thread.start()  # only once the breaker let the first read through
            item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            return item

        try:
            cap = None  # the first bytes: the small-call bound, as in _async_read
            while True:
                # Through the breaker, each later chunk within the transfer bound. The thread
                # cannot be cancelled: a stalled read is abandoned here (``stop`` ends the
                # thread once botocore's own read timeout lets it go).
                item = await self._call("get object", next_item, cap)
                cap = self.transfer_cap()
                if item is _END:
                    return
                slots.release()
                yield item
        finally:
            stop.set()
            slots.release()  # wake a reader waiting for a slot; it sees ``stop`` and ends

    async def _parallel_read(
        self,
        key: str,
        version_id: str,
        offset: int,
        length: int,
        chunk_size: int,
        streams: int,
        segment_size: int,
        encode: Callable[[bytes], E],
    ) -> AsyncIterator[E]:
        """Consecutive segments of the range, each read by a ranged GET in one of ``streams``
        threads, yielded in order, chunk by chunk.

        One connection's throughput is bounded by a single server stream; several ranged GETs
        of one version (its bytes cannot change) fill the link as S3's own transfer managers
        do. A thread claims a segment only while fewer than ``streams`` segments are waiting
        to be consumed, and the consumer frees that slot when it has taken the segment's last
        chunk: at most ``streams`` segments are held at once. A segment that ends short is an
        error (its successors must not be spliced onto it). Each chunk must arrive within
        the transfer bound, through the breaker."""
        loop = asyncio.get_running_loop()
        end = offset + length
        starts = list(range(offset, end, segment_size))
        queues: list[asyncio.Queue[Any]] = [asyncio.Queue() for _ in starts]
        window = threading.Semaphore(streams)
        stop = threading.Event()
        claimed = iter(range(len(starts)))
        claim_lock = threading.Lock()
        client: Any = self.sync_client
        bucket = self.bucket

        def post(index: int, item: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
                loop.call_soon_threadsafe(queues[index].put_nowait, item)

        def read_segment(index: int) -> None:
            first = starts[index]
            remaining = min(first + segment_size, end) - first
            body = None
            try:
                body = client.get_object(
                    Bucket=bucket,
                    Key=key,
                    VersionId=version_id,
                    Range=f"bytes={first}-{first + remaining - 1}",
                )["Body"]
                while remaining > 0 and not stop.is_set():
                    piece = body.read(min(chunk_size, remaining))
                    while piece and len(piece) < min(chunk_size, remaining):
                        more = body.read(min(chunk_size, remaining) - len(piece))
                        if not more:
                            break
                        piece += more
                    if not piece:
                        post(index, s3_unavailable("S3 ended a ranged read early"))
                        return
                    remaining -= len(piece)
                    post(index, encode(piece))
                post(index, _END)
            except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
                post(index, _translate("get object", exc))
            except BaseException as exc:  # anything else still ends the consumer's wait
                post(index, exc)
            finally:
                if body is not None:
                    with contextlib.suppress(Exception):
                        body.close()

        def work() -> None:
            while not stop.is_set():
                if not window.acquire(timeout=1.0):
                    continue
                with claim_lock:
                    index = next(claimed, None)
                if index is None or stop.is_set():
                    window.release()
                    return
                read_segment(index)

        threads = [
            threading.Thread(target=work, name=f"s3-read-{n}", daemon=True)
            for n in range(min(streams, len(starts)))
        ]

        async def next_item(queue: asyncio.Queue[Any]) -> Any:
            if threads[0].ident is None:
                for thread in threads:  # only once the breaker let the first read through
                    thread.start()
            item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            return item

        try:
            cap = None  # the first bytes: the small-call bound, as in _async_read
            for queue in queues:
                while (
                    item := await self._call("get object", functools.partial(next_item, queue), cap)
                ) is not _END:
                    cap = self.transfer_cap()
                    yield item
                window.release()
        finally:
            stop.set()
            for _ in threads:
                window.release()  # wake readers waiting for a slot; they see ``stop`` and end

    async def sha256_of(self, key: str, version_id: str) -> tuple[str, int]:
        """Read a version back (streaming) and return its SHA-256 and size."""
        digest = hashlib.sha256()
        size = 0
        async for chunk in self.stream(key, version_id, chunk_size=4 * 1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
        return digest.hexdigest(), size

    async def tag_sha256(self, key: str, version_id: str, sha256: str) -> None:
        await self._call(
            "put object tagging",
            lambda: self.client.put_object_tagging(
                Bucket=self.bucket,
                Key=key,
                VersionId=version_id,
                Tagging={"TagSet": [{"Key": META_SHA256, "Value": sha256}]},
            ),
        )

    async def copy_version(self, key: str, version_id: str, size: int) -> PutResult:
        """Copy a version (of ``size`` bytes) of ``key`` onto ``key``: a new current version
        with the same bytes.

        S3 copies server-side and answers only at the end: bounded like a transfer of
        ``size`` bytes."""
        response = await self._transfer(
            "copy object",
            lambda: self.client.copy_object(
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": self.bucket, "Key": key, "VersionId": version_id},
                MetadataDirective="COPY",
            ),
            size,
        )
        return PutResult(
            str(response.get("VersionId", "")), str(response["CopyObjectResult"]["ETag"])
        )

    async def delete_version(self, key: str, version_id: str) -> None:
        with contextlib.suppress(NotFound):
            await self._call(
                "delete object version",
                lambda: self.client.delete_object(
                    Bucket=self.bucket, Key=key, VersionId=version_id
                ),
            )

    async def add_delete_marker(self, key: str) -> None:
        await self._call(
            "delete object", lambda: self.client.delete_object(Bucket=self.bucket, Key=key)
        )

    async def version_ids(self, prefix: str) -> list[tuple[str, str]]:
        """Every (key, version id) under ``prefix``, delete markers included."""
        found: list[tuple[str, str]] = []
        paginator = self.client.get_paginator("list_object_versions")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=prefix)
        async for page in self._pages("list object versions", pages):
            for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                found.append((entry["Key"], entry["VersionId"]))
        return found

    async def purge_prefix(self, prefix: str) -> int:
        """Delete every version and delete marker under ``prefix``; return how many."""
        entries = await self.version_ids(prefix)
        for start in range(0, len(entries), 1000):
            batch = entries[start : start + 1000]
            await self._call(
                "delete objects",
                lambda batch=batch: self.client.delete_objects(  # type: ignore[misc]
                    Bucket=self.bucket,
                    Delete={
                        "Objects": [{"Key": k, "VersionId": v} for k, v in batch],
                        "Quiet": True,
                    },
                ),
            )
        return len(entries)

    # --- presigning --------------------------------------------------------------------

    async def presign_get(
        self, key: str, version_id: str | None, expires_in: int, disposition: str | None
    ) -> str:
        params: dict[str, str] = {"Bucket": self.bucket, "Key": key}
        if version_id:
            params["VersionId"] = version_id
        if disposition:
            params["ResponseContentDisposition"] = disposition
        return await self._presign("get_object", params, expires_in)

    async def presign_put(
        self, key: str, content_type: str, metadata: dict[str, str], expires_in: int
    ) -> str:
        params = {
            "Bucket": self.bucket,
            "Key": key,
            "ContentType": content_type,
            "Metadata": metadata,
        }
        return await self._presign("put_object", params, expires_in)

    async def _presign(self, method: str, params: dict[str, Any], expires_in: int) -> str:
        if self.presigner is not None:
            url = self.presigner.generate_presigned_url(method, Params=params, ExpiresIn=expires_in)
        else:
            url = await self.client.generate_presigned_url(
                method, Params=params, ExpiresIn=expires_in
            )
        return str(url)


async def _prefetched(source: AsyncIterator[bytes], depth: int) -> AsyncIterator[bytes]:
    """Read ahead of the consumer (at most ``depth`` chunks), so that reading from S3 and
    sending to the client overlap instead of taking turns."""
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=depth)

    async def produce() -> None:
        try:
            async for item in source:
                await queue.put(item)
            await queue.put(None)
        except Exception as exc:
            await queue.put(exc)

    task = asyncio.create_task(produce())
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
