"""`alloy-mcp-bridge login` / `logout`: sign in to an OAuth remote from a terminal, or forget the sign-in.

`login` runs the OAuth flow the bridge would run on first use — the browser opens,
the tokens are stored for the configured remote — and exits 0 once they are: the
robust first step before a desktop client ever starts the bridge. `logout`
deletes the stored tokens and the registered client for the configured remote.
"""

from __future__ import annotations

import argparse
import sys
import time

import anyio

from bridge import __version__
from bridge.auth.choice import has_own_credentials
from bridge.endpoint import Endpoint
from bridge.errors import RemoteFailure
from bridge.http import SESSION_HEADER, remote_http
from bridge.logs import SecretList, configure_logging
from bridge.messages import build_request
from bridge.settings import BridgeSettings, overrides_from

EXIT_FAILED = 1
EXIT_USAGE = 2


def _configured(args: argparse.Namespace) -> tuple[BridgeSettings, Endpoint, SecretList] | None:
    from bridge.commands.run import load_configuration

    settings, endpoint = load_configuration(overrides_from(args), args.env_file or None)
    if settings.oauth == "off":
        print("alloy-mcp-bridge: error: ALLOY_OAUTH is off", file=sys.stderr)
        return None
    if has_own_credentials(settings, endpoint):
        print("alloy-mcp-bridge: error: this configuration already has credentials (an API key, a user token, a "
              "token URL or an Authorization header); login is for remotes that sign in with OAuth",
              file=sys.stderr)
        return None
    secrets = SecretList(endpoint.secrets)
    configure_logging("warning" if settings.log_level == "info" else settings.log_level, settings.log_file, secrets)
    return settings.model_copy(update={"oauth": "on"}), endpoint, secrets


def login(args: argparse.Namespace) -> int:
    """`alloy-mcp-bridge login`."""
    configured = _configured(args)
    if configured is None:
        return EXIT_USAGE
    settings, endpoint, secrets = configured
    try:
        expires_at, token_file = anyio.run(_sign_in, settings, endpoint, secrets)
    except RemoteFailure as failure:
        print(f"alloy-mcp-bridge: {secrets.redact(failure.reason)}", file=sys.stderr)
        return EXIT_FAILED
    left = f"; the access token is valid for {int((expires_at - time.time()) / 60)} more minute(s) and is " \
           "refreshed as needed" if expires_at else ""
    print(f"Signed in to {endpoint.display_url}. Tokens are stored in {token_file}{left}.", file=sys.stderr)
    return 0


async def _sign_in(settings: BridgeSettings, endpoint: Endpoint, secrets: SecretList) -> tuple[float | None, str]:
    request = build_request("login-1", "initialize", {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "alloy-mcp-bridge-login", "version": __version__}})
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    async with remote_http(settings, endpoint, secrets) as http:
        async with http.open("POST", body=request.raw, headers=headers, rpc_method="initialize") as response:
            session = response.headers.get(SESSION_HEADER)
            with anyio.move_on_after(10):
                async for _ in response.aiter_bytes():
                    pass
        if session:
            await http.end_session({**headers, SESSION_HEADER: session})
        status = http.auth.status() or {}
        return status.get("accessTokenExpiresAt"), str(status.get("tokenFile"))


def logout(args: argparse.Namespace) -> int:
    """`alloy-mcp-bridge logout`."""
    from bridge.auth.paths import oauth_directory
    from bridge.auth.token_store import TokenStore
    from bridge.commands.run import load_configuration

    settings, endpoint = load_configuration(overrides_from(args), args.env_file or None)
    store = TokenStore(oauth_directory(settings.oauth_dir), endpoint.url, SecretList(endpoint.secrets))
    if store.forget():
        print(f"Forgot the OAuth tokens and the registered client for {endpoint.display_url} ({store.folder}).",
              file=sys.stderr)
    else:
        print(f"Nothing was stored for {endpoint.display_url}.", file=sys.stderr)
    return 0
