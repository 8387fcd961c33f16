"""SHA-256 states at committed offsets, kept so a resume in the same process need not re-read."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class HashCache:
    """SHA-256 states at committed offsets, per upload session (LRU, bounded).

    ``hashlib`` objects cannot be serialized, so this only helps a resume that reaches the
    same process; otherwise the engine verifies by reading the completed object back.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, tuple[int, Any]] = OrderedDict()

    def put(self, upload_id: str, offset: int, state: Any) -> None:
        if self.capacity <= 0:
            return
        self._entries[upload_id] = (offset, state)
        self._entries.move_to_end(upload_id)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def take(self, upload_id: str, offset: int) -> Any | None:
        """A copy of the state at ``offset``, or None when this process does not have it."""
        entry = self._entries.get(upload_id)
        if entry is None or entry[0] != offset:
            return None
        return entry[1].copy()

    def drop(self, upload_id: str) -> None:
        self._entries.pop(upload_id, None)
