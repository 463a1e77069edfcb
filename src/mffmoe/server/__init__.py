"""HTTP service: a drop-in for the host's MFF-MoE endpoint, with jobs, limits, auth and a web page.

Kept import-light (the CLI imports `mffmoe.server.commands` on every start); `create_app` pulls in
FastAPI only when asked for.
"""
from __future__ import annotations

from typing import Any

__all__ = ["ServerSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from mffmoe.server.app import create_app
        return create_app
    if name == "ServerSettings":
        from mffmoe.server.settings import ServerSettings
        return ServerSettings
    raise AttributeError(name)
