"""No file of the repository carries a merge's conflict markers."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^(<{7} |>{7} |={7}$)", re.MULTILINE)


def test_tracked_files_have_no_conflict_markers() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    checked, found = 0, []
    for name in filter(None, listed):
        path = ROOT / name.decode()
        if path.suffix not in {
            ".py",
            ".md",
            ".sql",
            ".proto",
            ".toml",
            ".yaml",
            ".yml",
            ".json",
            ".txt",
            "",
        }:
            continue
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        checked += 1
        found += [
            f"{name.decode()}:{text.count(chr(10), 0, m.start()) + 1}"
            for m in MARKER.finditer(text)
        ]
    assert checked > 100  # the listing worked
    assert found == []
