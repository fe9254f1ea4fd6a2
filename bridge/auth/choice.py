"""Whether the bridge signs in with OAuth, and the flow once it does (no SDK import until then).

OAuth never replaces credentials the user configured (`has_own_credentials`). Otherwise it starts
with `ALLOY_OAUTH=on`, when tokens for the endpoint are already stored (no 401 round trip), or when the
remote refuses a request with HTTP 401 and asks for OAuth: a `Bearer` challenge, or protected-resource
metadata (RFC 9728) published for the endpoint. A remote found not to ask is not probed again.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from typing import Any

import anyio
import httpx2

from bridge.endpoint import Endpoint
from bridge.error_bodies import read_some
from bridge.logs import SecretList
from bridge.settings import BridgeSettings

logger = logging.getLogger(__name__)

_PROBE_SECONDS = 5.0


def has_own_credentials(settings: BridgeSettings, endpoint: Endpoint) -> bool:
    """An API key, a user token (in any form), a token URL or an `Authorization` header: no OAuth then."""
    return bool(settings.api_key or settings.user_token or settings.user_token_file or settings.user_token_command
                or settings.access_token or endpoint.has_url_token or "authorization" in endpoint.headers)


class OAuthChoice:
    """The OAuth decision for one endpoint; `flow` is the `httpx2.Auth` once OAuth is in use."""

    def __init__(self, settings: BridgeSettings, endpoint: Endpoint, secrets: SecretList,
                 tls: ssl.SSLContext | None) -> None:
        self._settings = settings
        self._url = endpoint.url
        self._secrets = secrets
        self._tls = tls
        self.flow: Any = None
        self._may_ask = settings.oauth != "off" and not has_own_credentials(settings, endpoint)
        self.wanted_at_start = settings.oauth == "on" or (self._may_ask and _signed_in_before(settings, endpoint.url))

    def start(self) -> httpx2.Auth:
        """The OAuth flow, built on first use (the SDK is imported only now)."""
        if self.flow is None:
            from bridge.auth.oauth import build_provider

            if self._tls is not None and self._url.startswith("http://") and self._settings.ca_bundle is None:
                self._tls.load_default_certs()  # the authorization server may well be HTTPS
            self.flow = build_provider(self._settings, self._url, self._secrets)
        return self.flow

    async def asked_for(self, client: httpx2.AsyncClient, challenge: str) -> bool:
        """Whether a 401 (with `WWW-Authenticate: challenge`) asks for OAuth sign-in, when OAuth may start."""
        if self.flow is not None or not self._may_ask:
            return False
        if challenge.strip().lower().startswith("bearer"):
            return True
        published = await self._publishes_metadata(client)
        if published is False:
            self._may_ask = False  # a remote that clearly does not ask is not probed on every 401
        return bool(published)

    def status(self) -> dict[str, Any] | None:
        """Whether OAuth is in use, and when the stored access token expires (for `check` and `login`)."""
        if self.flow is None:
            return None
        store = self.flow.store
        return {"inUse": True, "accessTokenExpiresAt": store.expires_at(), "tokenFile": str(store.path)}

    async def _publishes_metadata(self, client: httpx2.AsyncClient) -> bool | None:
        """Whether the remote publishes protected-resource metadata; None when the probe could not tell."""
        url = httpx2.URL(self._url)
        answered = 0
        with anyio.move_on_after(_PROBE_SECONDS):  # the whole probe, however slowly a remote answers
            for path in (f"/.well-known/oauth-protected-resource{url.path.rstrip('/')}",
                         "/.well-known/oauth-protected-resource"):
                with contextlib.suppress(httpx2.HTTPError, ValueError):
                    async with client.stream("GET", url.copy_with(path=path, query=None),
                                             timeout=_PROBE_SECONDS) as response:
                        if response.status_code == 200 and b"authorization_servers" in await read_some(response):
                            return True
                        answered += 1
        return False if answered == 2 else None


def _signed_in_before(settings: BridgeSettings, url: str) -> bool:
    from bridge.auth.paths import has_tokens, oauth_directory

    try:
        return has_tokens(oauth_directory(settings.oauth_dir), url)
    except (OSError, ValueError):
        return False
