"""The base of every service's domain types: immutable pydantic models."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict


class FrozenModel(BaseModel):
    """A domain value: frozen, so a repository's result cannot be changed behind its back."""

    model_config = ConfigDict(frozen=True)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        """The model from a row whose columns carry the fields' names (other columns ignored)."""
        return cls.model_validate(dict(row))
