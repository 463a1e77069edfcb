"""HTTP service: a drop-in for the host's MFF-MoE endpoint, with jobs, limits, auth and a web page.

Kept import-light (the CLI imports it on every start): `create_app` pulls in FastAPI only when asked for.
"""
from __future__ import annotations

from mffmoe._util.lazy import lazy_exports

__all__ = ["ServerSettings", "create_app"]

__getattr__, __dir__ = lazy_exports(__name__, {"create_app": "mffmoe.server.app",
                                               "ServerSettings": "mffmoe.server.settings"})
