"""What client commands print: for people (tables, progress bars) and for scripts.

Results go to stdout, everything else (progress, notices, logs) to stderr, so
``mediagrid files ls -o names | xargs ...`` sees names only. ``--output`` picks ``table``
(the default), ``json`` / ``yaml`` (every field, full names, protobuf JSON field names as
in the .proto) or ``names`` (one resource name per line). Tables never shorten a value:
a piped table is as wide as its content, and on a terminal a column folds rather than
cutting an id. Sizes and rates use binary units everywhere (KiB, MiB, MiB/s).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import typer
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB")


class Output(enum.StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"
    names = "names"


OUTPUT = typer.Option(
    Output.table,
    "--output",
    "-o",
    help="table (for people), json or yaml (every field), names (one per line).",
    case_sensitive=False,
)

stderr = Console(stderr=True, soft_wrap=True, highlight=False)


def stdout() -> Console:
    """A console for results; piped, it is wide enough that no table cell is shortened."""
    console = Console(highlight=False)
    return console if console.is_terminal else Console(width=100_000, highlight=False)


def binary_size(value: float) -> str:
    """``1536`` -> ``1.5 KiB``; below one KiB the exact byte count."""
    if value < 1024:
        return f"{int(value)} bytes"
    unit = 0
    while value >= 1024 and unit < len(UNITS) - 1:
        value /= 1024
        unit += 1
    return f"{value:.1f} {UNITS[unit]}"


def message_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def emit(
    items: Sequence[Message],
    output: Output,
    table: Callable[[Sequence[Message]], RenderableType],
    *,
    single: bool = False,
) -> None:
    """Print ``items`` in the chosen format (``single``: one object, not a list)."""
    if output is Output.names:
        for item in items:
            typer.echo(item.name)  # type: ignore[attr-defined]
        return
    if output in (Output.json, Output.yaml):
        data: Any = [message_dict(item) for item in items]
        if single:
            data = data[0]
        if output is Output.json:
            typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
        else:
            import yaml  # type: ignore[import-untyped]

            typer.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)
        return
    stdout().print(table(items))


def when(stamp: Timestamp) -> str:
    """A protobuf timestamp as ``2026-12-07 05:02:03`` (UTC); empty when it is unset."""
    if not stamp.seconds and not stamp.nanos:
        return ""
    return stamp.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")


def field_table(rows: Iterable[tuple[str, str]], *, title: str | None = None) -> Table:
    """One resource as a two-column table of its fields; a field with no value is left out."""
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for label, value in rows:
        if value:
            table.add_row(label, value)
    return table


def name_table(*columns: str, title: str | None = None) -> Table:
    """A table whose first column (a resource name) is never shortened."""
    result = Table(title=title)
    result.add_column(columns[0], no_wrap=True, overflow="fold")
    for column in columns[1:]:
        result.add_column(column, overflow="fold")
    return result


class BinarySizeColumn(ProgressColumn):
    """``12.0/48.0 MiB`` (both in the unit of the total)."""

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text(binary_size(task.completed))
        total = binary_size(task.total)
        unit = total.split()[-1]
        scale = 1024 ** UNITS.index(unit)
        if scale == 1:
            return Text(f"{int(task.completed)}/{total}")
        return Text(f"{task.completed / scale:.1f}/{total}")


class BinarySpeedColumn(ProgressColumn):
    """``35.2 MiB/s``."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{binary_size(speed)}/s")


def transfer_progress() -> Progress:
    """The progress bar of uploads and downloads (on stderr).

    The spinner keeps turning while the last parts are stored after every byte was sent,
    and the description says so, so a finished-looking bar is never mistaken for a hang.
    """
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        BinarySizeColumn(),
        BinarySpeedColumn(),
        TimeRemainingColumn(),
        console=stderr,
    )
