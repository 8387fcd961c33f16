"""docs/configuration.md lists every setting exactly as ``make docs`` would write it today."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from common.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def generated() -> str:
    spec = importlib.util.spec_from_file_location("config_doc", ROOT / "scripts" / "config_doc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text: str = module.render()
    return text


def test_configuration_doc_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == generated(), "docs/configuration.md is stale: run `make docs`"


def test_every_setting_is_documented_with_its_variable() -> None:
    text = generated()
    for name in Settings.model_fields:
        assert f"| `MEDIAGRID_{name.upper()}` |" in text
