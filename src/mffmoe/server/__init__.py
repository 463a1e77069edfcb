"""HTTP service: a drop-in for the host's MFF-MoE endpoint, with jobs, limits, auth and a web page.

Import-light: `create_app` (and with it FastAPI) and `ServerSettings` are imported on first use.
"""
from __future__ import annotations

from mffmoe._util.lazy import lazy_exports

__all__ = ["ServerSettings", "create_app"]

__getattr__, __dir__ = lazy_exports(__name__, {"create_app": "mffmoe.server.app",
                                               "ServerSettings": "mffmoe.server.settings"})
