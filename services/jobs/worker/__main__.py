"""``python -m services.jobs.worker --types ...``: the ``mediagrid worker`` command on its own."""

from __future__ import annotations

import logging
import os

import typer

from services.jobs.cli import register

app = typer.Typer(add_completion=False)
register(app)


@app.callback()
def _root() -> None:
    """mediagrid worker."""


if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("MEDIAGRID_LOG_LEVEL", "INFO"))
    app()
