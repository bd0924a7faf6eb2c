"""Example 7: an SDK server with bearer-token auth; each session belongs to its token's principal.

The SDK app built with ``token_verifier=`` and ``auth=`` authenticates *inside*
itself, after SessionMiddleware has run, so ``scope["user"]`` is not set yet
when the middleware asks who the caller is. ``bearer_principal(verifier)``
verifies the bearer token in the middleware with the same verifier instead.
Then:

* a session opened with alice's token answers 404 to bob's token;
* alice with a refreshed token (same client, issuer and subject) keeps it;
* a request with no token, or an expired one, gets the SDK's own 401 and
  ``WWW-Authenticate`` challenge, so the client refreshes and keeps the session.

The tokens are a fixed table (``--token NAME=SUBJECT``, repeatable) standing in
for JWT validation or token introspection:

    python examples/07_auth_server.py --port 8000
    curl -s http://127.0.0.1:8000/mcp -H 'Authorization: Bearer alice-1' \\
        -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \\
        -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18",
             "capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}' -i
"""

from __future__ import annotations

import argparse
import os
import time

import uvicorn
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp

from mcp_session_mw import SessionMiddleware, current_session
from mcp_session_mw.principal import bearer_principal

ISSUER = "https://auth.example.com"
CLIENT_ID = "demo-client"
SCOPE = "mcp"


class StaticTokenVerifier:
    """Tokens from a fixed table. Implements the SDK's ``TokenVerifier`` protocol."""

    def __init__(self, tokens: dict[str, AccessToken]) -> None:
        self.tokens = tokens

    async def verify_token(self, token: str) -> AccessToken | None:
        return self.tokens.get(token)


def access_token(token: str, subject: str, *, lifetime: float = 3600.0) -> AccessToken:
    """A token of ``CLIENT_ID`` for ``subject`` from ``ISSUER``, valid ``lifetime`` seconds."""
    return AccessToken(
        token=token,
        client_id=CLIENT_ID,
        scopes=[SCOPE],
        expires_at=int(time.time() + lifetime),
        subject=subject,
        claims={"iss": ISSUER, "sub": subject},
    )


def demo_tokens() -> dict[str, AccessToken]:
    """alice-1 and its refresh alice-2, bob-1, and alice-old (expired)."""
    return {
        "alice-1": access_token("alice-1", "alice"),
        "alice-2": access_token("alice-2", "alice"),
        "bob-1": access_token("bob-1", "bob"),
        "alice-old": access_token("alice-old", "alice", lifetime=-60),
    }


def build_server(verifier: StaticTokenVerifier, resource_url: str) -> MCPServer:
    server = MCPServer(
        "auth-demo",
        token_verifier=verifier,
        auth=AuthSettings(
            issuer_url=ISSUER,  # type: ignore[arg-type]  # pydantic parses the string
            resource_server_url=resource_url,  # type: ignore[arg-type]
            required_scopes=[SCOPE],
            validate_token_resource=False,  # the static table issues tokens for this server only
        ),
    )

    @server.tool()
    async def count() -> int:
        """Count the calls made in this MCP session; the count is durable."""
        state = await current_session().update(lambda s: {**s, "calls": s.get("calls", 0) + 1})
        return int(state["calls"])

    @server.tool()
    async def owner() -> str:
        """The principal this session is bound to."""
        return current_session().record.principal or "(anonymous)"

    return server


def build_app(
    store: str | None = None,
    *,
    tokens: dict[str, AccessToken] | None = None,
    resource_url: str = "http://127.0.0.1:8000/mcp",
) -> ASGIApp:
    """The SDK's app with auth, wrapped so sessions are bound to the bearer token's principal."""
    verifier = StaticTokenVerifier(demo_tokens() if tokens is None else tokens)
    sdk_app = build_server(verifier, resource_url).streamable_http_app()
    return SessionMiddleware(sdk_app, store=store, principal=bearer_principal(verifier))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--store", default=os.environ.get("MCP_SESSION_STORE_URL"))
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="NAME=SUBJECT",
        help="accept bearer token NAME for SUBJECT (default: the demo tokens)",
    )
    args = parser.parse_args()
    tokens = None
    if args.token:
        tokens = {}
        for item in args.token:
            name, _, subject = item.partition("=")
            if not name or not subject:
                parser.error(f"--token wants NAME=SUBJECT, not {item!r}")
            tokens[name] = access_token(name, subject)
    resource_url = f"http://{args.host}:{args.port}/mcp"
    print(f"MCP endpoint: {resource_url}", flush=True)
    app = build_app(args.store, tokens=tokens, resource_url=resource_url)
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
