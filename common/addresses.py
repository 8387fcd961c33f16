"""``host:port`` strings, in a module light enough for the CLI's client commands to import."""

from __future__ import annotations


def host_port(host: str, port: int) -> str:
    """``host:port``, bracketing an IPv6 literal (``[::1]:50051``)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"
