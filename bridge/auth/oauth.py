"""OAuth 2.1 for remotes that require the MCP authorization flow, on the SDK's client provider.

The SDK's `OAuthClientProvider` (an `httpx2.Auth` flow) does the protocol:
protected-resource metadata (RFC 9728, path-aware), authorization-server
metadata (RFC 8414 and OIDC), dynamic client registration (RFC 7591),
authorization code with PKCE S256, `state` and the `resource` parameter
(RFC 8707), and the token exchange. `BridgeOAuthProvider` adds what a
long-lived bridge, started two to four times at once by a desktop, needs
(the SDK's 2.3 provider lacks each; the pin `mcp<2.4` keeps its private hooks
stable, and a test covers each behaviour):

1. Tokens survive restarts with their expiry and the metadata (`token_store.py`): an
   expired token is refreshed before it is sent, at the real token endpoint.
2. Refresh `REFRESH_MARGIN` seconds before expiry (half the lifetime of a short-lived token), not after.
3. A 401 to a token believed valid tries the refresh token first; only a refused refresh
   (a revoked grant) starts a new sign-in in the browser.
4. With a valid token, requests go out without the SDK's flow lock (it would serialise
   every request until its response headers arrive).
5. The flow's own requests (discovery, registration, tokens) get timeouts.
6. Several copies at once: the first request of a flow that must talk to the authorization
   server takes a file lock; a copy that waited adopts what the holder stored instead of
   opening a second browser or spending a rotating refresh token twice.

Failures become one `BridgeError` (-32053) that says what happened and what to do.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from typing import Any

import anyio
import httpx2
from filelock import Timeout as LockTimeout
from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata
from pydantic import AnyUrl

from bridge import __version__
from bridge.auth.browser import LoopbackCallback, SignInFailed, free_port, open_browser
from bridge.auth.paths import oauth_directory
from bridge.auth.token_store import TokenStore
from bridge.errors import BridgeError, BridgeErrorCode
from bridge.logs import SecretList
from bridge.settings import BridgeSettings

logger = logging.getLogger(__name__)

REFRESH_MARGIN = 30.0  # seconds before expiry at which a token is refreshed
AUTH_REQUEST_TIMEOUT = 15.0  # each discovery, registration or token request
_HINT = ("Sign in again: run `alloy-mcp-bridge login` in a terminal (with the same settings), or check that the "
         "browser opened; `alloy-mcp-bridge logout` forgets stored tokens.")


class _StoreChangedElsewhere(BaseException):
    """Internal: another copy updated the token store while this one waited for the lock.

    A BaseException, so the SDK's `except Exception: logger.exception(...)` lets it pass.
    """


def sign_in_failed(reason: str) -> BridgeError:
    return BridgeError(BridgeErrorCode.AUTH_REJECTED, f"OAuth sign-in did not complete: {reason}", hint=_HINT)


class BridgeOAuthProvider(OAuthClientProvider):
    """The SDK's provider with the additions listed in the module docstring."""

    def __init__(self, server_url: str, store: TokenStore, callback: LoopbackCallback, *, scope: str | None,
                 sign_in_timeout: float, client_id: str | None = None, client_secret: str | None = None) -> None:
        metadata = OAuthClientMetadata(
            client_name="alloy-mcp-bridge",
            redirect_uris=[AnyUrl(callback.redirect_uri)],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="client_secret_post" if client_secret else "none",
            scope=scope,
            software_id="alloy-mcp-bridge",
            software_version=__version__,
        )
        super().__init__(server_url, metadata, store, redirect_handler=self._open_browser,
                         callback_handler=self._wait_for_browser)
        self.store = store
        self.callback = callback
        self.sign_in_timeout = sign_in_timeout
        self.preregistered = (client_id, client_secret) if client_id else None
        self._browser: Any = None

    # --- restarts: expiry and metadata from the store, a refresh margin ------------------------

    async def _initialize(self) -> None:
        await super()._initialize()
        if self.context.client_info is None and self.preregistered is not None:
            client_id, client_secret = self.preregistered
            self.context.client_info = OAuthClientInformationFull(
                client_id=client_id, client_secret=client_secret, redirect_uris=[AnyUrl(self.callback.redirect_uri)],
                token_endpoint_auth_method="client_secret_post" if client_secret else "none",
                grant_types=["authorization_code", "refresh_token"], response_types=["code"])
        expires_at = self.store.expires_at()
        lifetime = self.context.current_tokens.expires_in if self.context.current_tokens else None
        self.context.token_expiry_time = expires_at - _margin(lifetime) if expires_at is not None else None
        as_metadata, prm = self.store.metadata()
        if self.context.oauth_metadata is None and as_metadata is not None:
            self.context.oauth_metadata = as_metadata
        if self.context.protected_resource_metadata is None and prm is not None:
            self.context.protected_resource_metadata = prm
            if prm.authorization_servers:
                self.context.auth_server_url = str(prm.authorization_servers[0])

    async def _handle_token_response(self, response: httpx2.Response) -> None:
        await super()._handle_token_response(response)
        self._apply_margin()
        self.store.save_metadata(self.context.oauth_metadata, self.context.protected_resource_metadata)

    async def _handle_refresh_response(self, response: httpx2.Response) -> bool:
        refreshed = await super()._handle_refresh_response(response)
        if refreshed:
            self._apply_margin()
        else:
            logger.info("the refresh token was refused; signing in again")
        return bool(refreshed)

    def _apply_margin(self) -> None:
        """Count a fresh token as expiring a little early, so it is refreshed before the remote refuses it."""
        if self.context.token_expiry_time is not None:
            lifetime = self.context.current_tokens.expires_in if self.context.current_tokens else None
            self.context.token_expiry_time -= _margin(lifetime)

    # --- the human step ---------------------------------------------------------------------

    async def _open_browser(self, authorization_url: str) -> None:
        try:
            await self.callback.listen()
        except OSError:
            self.store.forget_client()  # the next sign-in registers again, on a port that is free then
            raise sign_in_failed(
                f"the callback port {self.callback.port} on 127.0.0.1 is in use; set ALLOY_OAUTH_CALLBACK_PORT to a "
                "free one, or retry (a new port is registered)") from None
        self._browser = await open_browser(authorization_url)

    async def _wait_for_browser(self) -> Any:
        try:
            return await self.callback.wait(self.sign_in_timeout, self._browser)
        except TimeoutError:
            raise sign_in_failed(f"nobody signed in within ALLOY_OAUTH_TIMEOUT ({self.sign_in_timeout:g}s)") from None
        except SignInFailed as exc:
            raise sign_in_failed(f"the authorization server refused: {exc}") from None
        finally:
            await self._stop_listening()

    async def _stop_listening(self) -> None:
        await self.callback.close()
        browser, self._browser = self._browser, None
        if browser is not None:
            with anyio.move_on_after(2, shield=True):
                await browser.wait()
            if browser.returncode is None:
                browser.kill()
                with anyio.move_on_after(1, shield=True):
                    await browser.wait()  # reaped: no zombie

    # --- the flow ---------------------------------------------------------------------------------

    async def _auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        if self._initialized and self.store.changed_elsewhere():
            self._initialized = False  # another copy stored new tokens: start from them
        if self._initialized and self.context.is_token_valid():
            sent = self.context.current_tokens.access_token if self.context.current_tokens else None
            self._add_auth_header(request)
            response = yield request  # no lock while the request waits for its answer
            if response.status_code != 401 and not _insufficient_scope(response):
                return
            if response.status_code == 401 and self.context.current_tokens is not None \
                    and self.context.current_tokens.access_token == sent:
                self.context.token_expiry_time = 1.0  # a past moment (0 reads as "never expires"): refresh first
        restarts = 0
        while True:
            flow = super()._auth_flow(request)
            try:
                outgoing = await flow.__anext__()
                while True:
                    if outgoing is not request:
                        outgoing.extensions.setdefault("timeout", httpx2.Timeout(AUTH_REQUEST_TIMEOUT).as_dict())
                        if not self.store.lock.is_locked:
                            await self._take_lock()
                            if self.store.changed_elsewhere():
                                raise _StoreChangedElsewhere
                    elif self.store.lock.is_locked:
                        self.store.lock.release(force=True)  # stored: never hold the lock while the call runs
                    response = yield outgoing
                    outgoing = await flow.asend(response)
            except StopAsyncIteration:
                return
            except _StoreChangedElsewhere:
                restarts += 1
                self._initialized = False
                if restarts > 10:
                    raise sign_in_failed("the token store keeps changing under this copy") from None
            except BridgeError:
                raise
            except Exception as exc:  # the SDK's OAuthFlowError, OAuthTokenError, a network failure
                said = self.store.secrets.redact(str(exc))
                raise sign_in_failed(f"{type(exc).__name__}: {said[:300]}") from None
            finally:
                await flow.aclose()
                await self._stop_listening()  # a flow cut short must not leave the callback port bound
                if self.store.lock.is_locked:
                    self.store.lock.release(force=True)

    async def _take_lock(self) -> None:
        """The token store's lock, without blocking the event loop; bounded by the sign-in timeout."""
        self.store.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with anyio.move_on_after(self.sign_in_timeout + 30):
            while True:
                try:
                    self.store.lock.acquire(timeout=0)
                    return
                except LockTimeout:
                    await anyio.sleep(0.05)
        raise sign_in_failed("another copy of the bridge held the sign-in for too long")


def _margin(lifetime: int | None) -> float:
    """`REFRESH_MARGIN`, but never more than half a token's lifetime (a 60 s token is used for 30 s)."""
    return REFRESH_MARGIN if lifetime is None else min(REFRESH_MARGIN, lifetime / 2)


def _insufficient_scope(response: httpx2.Response) -> bool:
    return response.status_code == 403 and "insufficient_scope" in response.headers.get("www-authenticate", "")


def build_provider(settings: BridgeSettings, server_url: str, secrets: SecretList) -> BridgeOAuthProvider:
    """The OAuth flow for `server_url`, its tokens in the configured (or default) directory."""
    store = TokenStore(oauth_directory(settings.oauth_dir), server_url, secrets)
    port = settings.oauth_callback_port or store.callback_port() or free_port()
    secret = settings.oauth_client_secret.get_secret_value() if settings.oauth_client_secret else None
    if secret:
        secrets.add([secret])
    # The SDK logs every flow failure with a traceback; the bridge reports it in one line instead.
    logging.getLogger("mcp.client.auth").setLevel(logging.CRITICAL)
    return BridgeOAuthProvider(server_url, store, LoopbackCallback(port), scope=settings.oauth_scope,
                               sign_in_timeout=settings.oauth_timeout, client_id=settings.oauth_client_id,
                               client_secret=secret)
