"""docs/configuration.md lists every setting exactly as ``make docs`` would write it today."""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from pathlib import Path
from typing import Any

from common.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def config_doc() -> Any:
    spec = importlib.util.spec_from_file_location("config_doc", ROOT / "scripts" / "config_doc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generated() -> str:
    text: str = config_doc().render()
    return text


def test_configuration_doc_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == generated(), "docs/configuration.md is stale: run `make docs`"


def test_every_setting_is_documented_with_its_variable() -> None:
    text = generated()
    for name in Settings.model_fields:
        assert f"| `MEDIAGRID_{name.upper()}` |" in text


def test_every_setting_has_its_own_description() -> None:
    descriptions: dict[str, str] = config_doc().descriptions()
    assert set(descriptions) == set(Settings.model_fields)
    undocumented = sorted(name for name, text in descriptions.items() if not text.strip())
    assert undocumented == [], "give each a comment right above it in common/settings.py"
    holders: defaultdict[str, list[str]] = defaultdict(list)
    for name, text in descriptions.items():
        holders[text].append(name)
    shared = {text: names for text, names in holders.items() if len(names) > 1}
    assert shared == {}, "each setting needs a description of its own"
    assert "(undocumented)" not in generated()


def test_a_comment_documents_only_the_field_right_below_it() -> None:
    source = """class Settings(Base):
    # --- one ---
    # What a means.
    a: int = 1
    b: int = 2

    # What c means,
    # on two lines.
    c: list[str] = Field(
        default=[],
    )
    d: int = 3
"""
    notes = config_doc().source_notes(source)
    assert notes == {
        "a": ("one", "int", "What a means."),
        "b": ("one", "int", ""),
        "c": ("one", "list[str]", "What c means, on two lines."),
        "d": ("one", "int", ""),
    }
