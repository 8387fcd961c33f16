"""The end-to-end tests run on the integration lane's S3 (SeaweedFS, or real AWS S3)."""

from __future__ import annotations

import pytest

from common.settings import Settings


@pytest.fixture
def settings(store_settings: Settings) -> Settings:
    """The integration lane: SeaweedFS (or real AWS S3) instead of moto (tests/README.md)."""
    return store_settings
