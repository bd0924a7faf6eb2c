"""Durable sessions for an MCP server in any language: the middleware over HTTP.

``UpstreamApp(url)`` forwards every request to one Streamable HTTP endpoint;
put ``SessionMiddleware`` in front of it, or run ``mcp-session-mw proxy``.
Needs the ``proxy`` extra (httpx; uvicorn for the command).
"""

from __future__ import annotations

from .app import UpstreamApp

__all__ = ["UpstreamApp"]
