"""An MCP server that requires the MCP authorization flow, built with the SDK's `mcp.server.auth`.

Authorization server and protected resource in one app on 127.0.0.1: metadata, dynamic
registration, an `authorize` that approves at once (a 302 straight back to the client's
redirect URI, like a user clicking "Allow"), short-lived access tokens, rotating refresh
tokens, revocation. A control endpoint counts what happened and revokes grants.

    python -m tests.oauth_server --port 0 [--ttl SECONDS]
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import time
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    OAuthAuthorizationServerProvider,
    RefreshToken,
    construct_redirect_uri,
)
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.server.mcpserver import MCPServer
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import AnyHttpUrl


class InstantApproval(OAuthAuthorizationServerProvider[AuthorizationCode, RefreshToken, AccessToken]):
    """In memory; `authorize` approves at once; refresh tokens rotate."""

    def __init__(self, ttl: int) -> None:
        self.ttl = ttl
        self.clients: dict[str, OAuthClientInformationFull] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.access_tokens: dict[str, AccessToken] = {}
        self.issued: list[str] = []  # every token ever issued (for the tests' secret scan)
        self.counts: dict[str, int] = {"register": 0, "authorize": 0, "code": 0, "refresh": 0, "refused_refresh": 0}

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        return self.clients.get(client_id)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        self.counts["register"] += 1
        self.clients[client_info.client_id] = client_info

    async def authorize(self, client: OAuthClientInformationFull, params: AuthorizationParams) -> str:
        self.counts["authorize"] += 1
        code = AuthorizationCode(code=secrets.token_urlsafe(32), scopes=params.scopes or ["mcp"],
                                 expires_at=time.time() + 300, client_id=client.client_id,
                                 code_challenge=params.code_challenge, redirect_uri=params.redirect_uri,
                                 redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
                                 resource=params.resource)
        self.codes[code.code] = code
        return construct_redirect_uri(str(params.redirect_uri), code=code.code, state=params.state)

    async def load_authorization_code(self, client: OAuthClientInformationFull, authorization_code: str) -> Any:
        return self.codes.get(authorization_code)

    async def exchange_authorization_code(self, client: OAuthClientInformationFull, authorization_code: Any) -> Any:
        self.counts["code"] += 1
        self.codes.pop(authorization_code.code, None)
        return self._issue(client.client_id, authorization_code.scopes, authorization_code.resource)

    async def load_refresh_token(self, client: OAuthClientInformationFull, refresh_token: str) -> Any:
        found = self.refresh_tokens.get(refresh_token)
        if found is None:
            self.counts["refused_refresh"] += 1
        return found

    async def exchange_refresh_token(self, client: OAuthClientInformationFull, refresh_token: Any,
                                     scopes: list[str]) -> Any:
        self.counts["refresh"] += 1
        self.refresh_tokens.pop(refresh_token.token, None)  # rotation: the old one dies
        return self._issue(client.client_id, scopes or refresh_token.scopes, refresh_token.resource)

    async def load_access_token(self, token: str) -> AccessToken | None:
        return self.access_tokens.get(token)

    async def revoke_token(self, token: Any) -> None:
        self.access_tokens.pop(token.token, None)
        self.refresh_tokens.pop(token.token, None)

    def _issue(self, client_id: str, scopes: list[str], resource: str | None) -> OAuthToken:
        access, refresh = "at_" + secrets.token_urlsafe(24), "rt_" + secrets.token_urlsafe(24)
        self.issued += [access, refresh]
        self.access_tokens[access] = AccessToken(token=access, client_id=client_id, scopes=scopes,
                                                 expires_at=int(time.time()) + self.ttl, resource=resource)
        self.refresh_tokens[refresh] = RefreshToken(token=refresh, client_id=client_id, scopes=scopes,
                                                    resource=resource)
        return OAuthToken(access_token=access, expires_in=self.ttl, scope=" ".join(scopes), refresh_token=refresh)


def build_app(base: str, provider: InstantApproval) -> Any:
    server = MCPServer("oauth-remote", log_level="WARNING", auth=AuthSettings(
        issuer_url=AnyHttpUrl(base), resource_server_url=AnyHttpUrl(base + "/mcp"), required_scopes=["mcp"],
        client_registration_options=ClientRegistrationOptions(enabled=True, valid_scopes=["mcp"],
                                                              default_scopes=["mcp"]),
        revocation_options=RevocationOptions(enabled=True), validate_token_resource=True),
        auth_server_provider=provider)

    @server.tool(description="Echo the text back.")
    def echo(text: str) -> str:
        return text

    app = server.streamable_http_app()
    requests: list[dict[str, Any]] = []

    async def gate(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/_control/"):
            command = scope["path"].rsplit("/", 1)[-1]
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            payload = json.loads(body or b"{}")
            if command == "revoke":
                provider.access_tokens.clear()
                provider.refresh_tokens.clear()
            elif command == "revoke_access":
                provider.access_tokens.clear()
            elif command == "ttl":
                provider.ttl = int(payload["seconds"])
            answer = json.dumps({"counts": provider.counts, "issued": provider.issued, "requests": requests}).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": answer})
            return
        if scope["type"] == "http":
            query = parse_qs(scope["query_string"].decode())
            requests.append({"method": scope["method"], "path": scope["path"], "query": query})
        await app(scope, receive, send)

    return gate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ttl", type=int, default=3600)
    options = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", options.port))
    sock.listen(128)
    port = sock.getsockname()[1]
    app = build_app(f"http://127.0.0.1:{port}", InstantApproval(options.ttl))
    print(f"PORT {port}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="on")).run(sockets=[sock])


if __name__ == "__main__":
    main()
