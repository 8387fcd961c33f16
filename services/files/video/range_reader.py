"""A seekable, read-only file object over ranged reads of a remote object (S3).

PyAV needs a synchronous file object and seeks a lot while probing (the MP4 index may sit
at the end of the file), so reads go through a small LRU cache of fixed-size blocks: a seek
back into a block already fetched costs nothing, and a read that needs several missing
adjacent blocks fetches them with one ranged GET. Use it from a worker thread
(``asyncio.to_thread``), never on the event loop.
"""

from __future__ import annotations

import io
import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

# fetch(start, end_inclusive) -> exactly the bytes of that range.
Fetch = Callable[[int, int], bytes]


class RangeReadError(OSError):
    """A ranged read returned something other than the bytes asked for."""


class RangeReader(io.RawIOBase):
    """Read-only, seekable view of ``size`` bytes served by ``fetch`` in cached blocks."""

    def __init__(self, size: int, fetch: Fetch, *, block_size: int, cache_blocks: int) -> None:
        super().__init__()
        if size < 0 or block_size <= 0 or cache_blocks <= 0:
            raise ValueError("size must be >= 0, block_size and cache_blocks > 0")
        self.size = size
        self.block_size = block_size
        self.cache_blocks = cache_blocks
        self.fetches = 0  # ranged reads issued, for tests and metrics
        self._fetch = fetch
        self._position = 0
        self._cache: OrderedDict[int, bytes] = OrderedDict()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            target = offset
        elif whence == os.SEEK_CUR:
            target = self._position + offset
        elif whence == os.SEEK_END:
            target = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        self._position = target
        return target

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), max(self.size - self._position, 0))
        if wanted == 0:
            return 0
        start, end = self._position, self._position + wanted  # end exclusive
        self._load(start // self.block_size, (end - 1) // self.block_size)
        written = 0
        while written < wanted:
            index, offset = divmod(start + written, self.block_size)
            block = self._cache[index]
            self._cache.move_to_end(index)
            piece = block[offset : offset + wanted - written]
            view[written : written + len(piece)] = piece
            written += len(piece)
        self._position = end
        # Evict only after copying: one large read may need more blocks than the cache holds.
        while len(self._cache) > self.cache_blocks:
            self._cache.popitem(last=False)
        return wanted

    def _load(self, first: int, last: int) -> None:
        """Make blocks first..last cached, one fetch per run of adjacent missing blocks."""
        index = first
        while index <= last:
            if index in self._cache:
                index += 1
                continue
            run_end = index
            while run_end + 1 <= last and run_end + 1 not in self._cache:
                run_end += 1
            self._fetch_run(index, run_end)
            index = run_end + 1

    def _fetch_run(self, first: int, last: int) -> None:
        start = first * self.block_size
        end = min((last + 1) * self.block_size, self.size) - 1
        data = self._fetch(start, end)
        self.fetches += 1
        if len(data) != end - start + 1:
            raise RangeReadError(
                f"ranged read of bytes {start}-{end} returned {len(data)} bytes, "
                f"expected {end - start + 1}"
            )
        for index in range(first, last + 1):
            offset = (index - first) * self.block_size
            self._cache[index] = data[offset : offset + self.block_size]
            self._cache.move_to_end(index)


def open_s3_object(
    client: Any,
    *,
    bucket: str,
    key: str,
    version_id: str | None = None,
    block_size: int,
    cache_blocks: int,
) -> RangeReader:
    """A ``RangeReader`` over one S3 object (version) using a synchronous boto3 client."""
    version = {"VersionId": version_id} if version_id else {}
    head = client.head_object(Bucket=bucket, Key=key, **version)

    def fetch(start: int, end: int) -> bytes:
        response = client.get_object(
            Bucket=bucket, Key=key, Range=f"bytes={start}-{end}", **version
        )
        with response["Body"] as body:
            return bytes(body.read())

    return RangeReader(
        int(head["ContentLength"]), fetch, block_size=block_size, cache_blocks=cache_blocks
    )
