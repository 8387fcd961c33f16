"""Write docs/configuration.md from the Settings model: every MEDIAGRID_* variable.

The meaning of a setting is its ``Field(description=...)`` or, failing that, the comment
lines right above it in common/settings.py (the house style: each field has its own). Sections
follow the ``# --- name ---`` headers of the model. Run ``make docs``; a test fails when the
committed file differs from this output.
"""

from __future__ import annotations

import re
import sys
from enum import Enum
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen  # noqa: E402
from pydantic import SecretStr  # noqa: E402
from pydantic.fields import FieldInfo  # noqa: E402

from common.settings import Settings  # noqa: E402

SECTION = re.compile(r"^\s*# --- ([^-]+?) -+\s*$")
FIELD = re.compile(r"^    ([a-z_][a-z0-9_]*): (.+?)(?: = |$)")
COMMENT = re.compile(r"^\s*# ?(.*)$")

HEADER = """# Configuration

Every setting is an environment variable `MEDIAGRID_<NAME>` (also read from a `.env` file in
the working directory). Settings are validated at start-up; a bad value stops the process
with exit code 2 and a message naming the variable. Secrets are never printed. A
`MEDIAGRID_*` variable that is no setting (a typo) is ignored with a warning naming the closest
setting; the command line's own `MEDIAGRID_TOKEN` and `MEDIAGRID_PASSWORD` and the test suite's
`MEDIAGRID_TEST_*` switches (tests/README.md) are not settings and draw no warning.

With no `MEDIAGRID_DATABASE_URL` (and no S3 endpoint or credentials) in the `dev`/`test`
environments, `mediagrid serve` and `mediagrid check` start an embedded PostgreSQL (data in
`MEDIAGRID_DATA_DIR/pgdata`) and an embedded S3 server: SeaweedFS (data in
`MEDIAGRID_DATA_DIR/s3`, kept across restarts; a generated key in
`MEDIAGRID_DATA_DIR/s3-identities.json`), or moto in memory with
`MEDIAGRID_EMBEDDED_S3=moto`. In `staging`/`prod` the database URL is required and buckets
must already exist.

Buckets are named `{MEDIAGRID_BUCKET_PREFIX}-{MEDIAGRID_ENVIRONMENT}-{purpose}` and must follow
the S3 naming rules.

Generated from `common/settings.py` by `make docs`; do not edit by hand."""


def source_notes(source: str) -> dict[str, tuple[str, str, str]]:
    """{field: (section, type as written, comment right above it)} from the Settings class body.

    A comment documents the one field below it: every setting says what it means itself
    (a comment shared by a block of fields would describe the later ones with the first's
    meaning, or none of them precisely).
    """
    body = source[source.index("class Settings(") :]
    notes: dict[str, tuple[str, str, str]] = {}
    section, comments = "", []
    for line in body.splitlines():
        header = SECTION.match(line)
        if header:
            section, comments = header.group(1).strip(), []
            continue
        field = FIELD.match(line)
        if field and field.group(1) != "model_config":
            notes[field.group(1)] = (section, field.group(2).strip(), " ".join(comments))
            comments = []
            continue
        comment = COMMENT.match(line)
        if comment and line.startswith("    #"):
            comments.append(comment.group(1).strip())
        elif not line.startswith(("        ", "    )")):
            # A blank line or other code ends the comment (a field's continuation does not).
            comments = []
    return notes


def descriptions() -> dict[str, str]:
    """{field: what it means}: its ``Field(description=...)`` or the comment above it ("" if
    neither)."""
    notes = source_notes((ROOT / "common" / "settings.py").read_text())
    return {
        name: info.description or notes.get(name, ("", "", ""))[2]
        for name, info in Settings.model_fields.items()
    }


def bounds(info: FieldInfo) -> str:
    parts = []
    for item in info.metadata:
        if isinstance(item, Ge):
            parts.append(f">= {item.ge}")
        if isinstance(item, Gt):
            parts.append(f"> {item.gt}")
        if isinstance(item, Le):
            parts.append(f"<= {item.le}")
        if isinstance(item, Lt):
            parts.append(f"< {item.lt}")
        if isinstance(item, MinLen):
            parts.append(f"length >= {item.min_length}")
        if isinstance(item, MaxLen):
            parts.append(f"length <= {item.max_length}")
    return ", ".join(parts)


def show_default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, Enum):
        return f"`{value.value}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def render() -> str:
    notes = source_notes((ROOT / "common" / "settings.py").read_text())
    lines = [HEADER]
    current = None
    for name, info in Settings.model_fields.items():
        section, type_text, comment = notes.get(name, ("other", "", ""))
        if section != current:
            current = section
            lines += ["", f"## {section}", "", "| Variable | Default | Meaning |", "|---|---|---|"]
        meaning = info.description or comment or "(undocumented)"  # a test forbids it
        if type_text.startswith("Literal["):
            choices = re.findall(r'"([^"]+)"', type_text)
            meaning += f" One of: {', '.join(f'`{c}`' for c in choices)}."
        limits = bounds(info)
        if limits:
            meaning += f" ({limits})"
        if "SecretStr" in type_text:
            meaning += " Secret: never printed."
        meaning = meaning.replace("|", "\\|")
        lines.append(f"| `MEDIAGRID_{name.upper()}` | {show_default(info.default)} | {meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
