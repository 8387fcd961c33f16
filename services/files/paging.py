"""Opaque page tokens for keyset pagination over (create_time, id)."""

from __future__ import annotations

import base64
import json
from datetime import datetime

from common.errors import InvalidArgument


def encode(create_time: datetime, key: str) -> str:
    raw = json.dumps([create_time.isoformat(), key]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str) -> tuple[datetime, str] | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        stamp, key = json.loads(raw)
        return datetime.fromisoformat(stamp), str(key)
    except (ValueError, TypeError) as exc:
        raise InvalidArgument.field(
            "page_token", "is not a token this service issued", reason="INVALID_PAGE_TOKEN"
        ) from exc
