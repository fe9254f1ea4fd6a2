"""Sending to the remote: `RemoteHttp`, one request at a time under the retry policy, every failure typed.

`RemoteHttp.open()` sends one HTTP request and hands back the streaming
response once the remote has accepted it, after retrying what `retry.py` says
is safe to retry. Every failure it cannot recover from becomes one of the
typed errors of `bridge.errors`, translated here and nowhere else (like httpx's
`map_httpcore_exceptions()`): network errors never escape as raw exceptions,
so one bad request cannot take the bridge down.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import httpx2

from bridge.auth.choice import OAuthChoice
from bridge.direct_pool import DirectSender
from bridge.endpoint import Endpoint
from bridge.error_bodies import error_detail, forgot_session, jsonrpc_error, read_some
from bridge.errors import (
    BridgeError,
    BridgeErrorCode,
    ConnectionDropped,
    RemoteRpcError,
    SessionExpired,
    status_error,
)
from bridge.http_client import MAX_CONNECTIONS, build_client, direct_transport, tls_context
from bridge.logs import SecretList
from bridge.pacing import Pacer, parse_rate_limit
from bridge.retry import RetryPolicy, RetryState, is_idempotent, parse_retry_after
from bridge.settings import BridgeSettings
from bridge.stats import SessionStats

logger = logging.getLogger(__name__)

SESSION_HEADER = "mcp-session-id"
# Non-2xx statuses whose JSON-RPC error body is the remote's real answer (others get the bridge's own message).
_PASS_THROUGH_STATUSES = frozenset({400, 404, 405, 406, 409, 415, 422})


@contextlib.asynccontextmanager
async def remote_http(settings: BridgeSettings, endpoint: Endpoint, secrets: SecretList,
                      stats: SessionStats | None = None) -> AsyncIterator[RemoteHttp]:
    """The client and the sender on top of it, for as long as the bridge talks to the remote."""
    tls = tls_context(settings, endpoint)
    async with build_client(settings, endpoint, secrets, tls) as client:
        direct = DirectSender.for_client(client, httpx2.URL(endpoint.url), direct_transport(client))
        yield RemoteHttp(client, settings, endpoint, secrets, direct=direct, stats=stats,
                         tls=tls if isinstance(tls, ssl.SSLContext) else None)


class RemoteHttp:
    """Sends requests to the endpoint with the retry policy and error mapping applied."""

    def __init__(
        self, client: httpx2.AsyncClient, settings: BridgeSettings, endpoint: Endpoint, secrets: SecretList,
        *, direct: DirectSender | None = None, stats: SessionStats | None = None, tls: ssl.SSLContext | None = None,
    ) -> None:
        self._client = client
        self.stats = stats or SessionStats()
        self._direct = direct  # the endpoint's hot path (see direct_pool.py), when it applies
        self.secrets = secrets
        self.url = endpoint.url
        self._parsed_url = httpx2.URL(endpoint.url)  # parsed once, not per request
        self.endpoint = endpoint
        self.policy = RetryPolicy(settings.max_retries, settings.retry_budget, settings.connect_timeout)
        self.max_message_bytes = settings.max_message_bytes
        self.read_timeout = settings.read_timeout
        self.connect_timeout = settings.connect_timeout
        limit = parse_rate_limit(settings.rate_limit) if settings.rate_limit else None
        self.pacer = Pacer(*limit) if limit else None
        # For streams the remote may leave quiet for minutes: the GET stream, subscriptions, legacy SSE.
        self.quiet_stream_timeout = httpx2.Timeout(
            settings.connect_timeout, read=settings.stream_idle_timeout, pool=settings.connect_timeout
        )
        self.ever_connected = False  # has the remote ever answered? (see retry.FIRST_CONTACT_WINDOW)
        self.auth = OAuthChoice(settings, endpoint, secrets, tls)
        if self.auth.wanted_at_start:
            self.enable_oauth()  # ALLOY_OAUTH=on, or tokens are stored: no 401 round trip

    @contextlib.asynccontextmanager
    async def open(
        self,
        http_method: str,
        *,
        url: str | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        rpc_method: str | None = None,
        timeout: httpx2.Timeout | None = None,
        on_sent: Callable[[], None] | None = None,
        retry: RetryState | None = None,
    ) -> AsyncIterator[httpx2.Response]:
        """Send one request (retrying what is safe) and yield the accepted streaming response.

        `on_sent` is called once the request's bytes are on the wire (before the remote answers). `retry`:
        the caller's view of the retries (e.g. whether a resent request may have run before).

        Raises:
            SessionExpired: 404 to a request that carried a session id.
            RemoteRpcError: the remote answered with a JSON-RPC error in a 4xx body.
            ConnectionDropped: the connection failed after the request was sent.
            BridgeError: the remote is unreachable, refused the request, or failed.
        """
        state = retry or self.policy.start()
        target = url or self._parsed_url
        direct = self._direct if url is None else None
        extensions: dict[str, Any] = {"trace": _sent_tracer(on_sent)} if on_sent is not None else {}
        if direct is not None:
            extensions["timeout"] = (timeout if timeout is not None else self._client.timeout).as_dict()
        while True:
            request: httpx2.Request | None = None
            if direct is None:
                try:
                    request = self._client.build_request(
                        http_method, target, content=body, headers=headers,
                        timeout=timeout if timeout is not None else self._client.timeout, extensions=extensions,
                    )
                except (httpx2.InvalidURL, ValueError, TypeError) as exc:
                    raise BridgeError(BridgeErrorCode.BAD_RESPONSE,
                                      f"The bridge could not build a request for {rpc_method or http_method}: "
                                      f"{type(exc).__name__}.") from None
            if self.pacer is not None:
                await self.pacer.wait_turn()
            try:
                if direct is not None:
                    response: Any = await direct.send(http_method, body, headers, extensions)
                    if _debugging():
                        logger.debug("HTTP %s %s -> %s", http_method, self.endpoint.display_url,
                                     response.status_code)
                else:
                    assert request is not None
                    response = await self._client.send(request, stream=True)
            except httpx2.PoolTimeout:
                raise BridgeError(
                    BridgeErrorCode.REMOTE_UNAVAILABLE,
                    f"All {MAX_CONNECTIONS} connections to the remote stayed busy for ALLOY_CONNECT_TIMEOUT; "
                    f"{rpc_method or 'the request'} was not sent.",
                ) from None
            except (httpx2.ConnectError, httpx2.ConnectTimeout) as exc:
                if _is_tls_failure(exc):
                    raise self._tls_error(exc) from None
                delay = self.policy.delay_after_connect_failure(state, ever_connected=self.ever_connected)
                if delay is None:
                    raise self._unreachable(exc) from None
                logger.log(logging.INFO if state.retries <= 1 else logging.DEBUG,
                           "remote unreachable (%s); retrying in %.1fs", _describe(exc), delay)
                self.stats.retries += 1
                await anyio.sleep(delay)
                continue
            except httpx2.HTTPError as exc:  # timeouts, dropped connections, a header it cannot decode, ...
                raise self.lost(exc, rpc_method) from None
            self.ever_connected = True

            status = response.status_code
            if status < 300:
                try:
                    yield response
                finally:
                    await response.aclose()
                return

            retry_after = parse_retry_after(response.headers.get("retry-after"))
            location = response.headers.get("location") if 300 <= status < 400 else None
            challenge = response.headers.get("www-authenticate", "") if status == 401 else ""
            raw = await read_some(response)
            await response.aclose()
            if status == 401 and await self.auth.asked_for(self._client, challenge):
                logger.info("the remote asks for OAuth sign-in (HTTP 401)")
                self.enable_oauth()
                direct = None
                continue  # refused without running: sent again, signing in first
            if status == 401 and self.auth.flow is not None:
                from bridge.auth.oauth import sign_in_failed

                raise sign_in_failed("the remote still refuses the access token (HTTP 401). Run "
                                     "`alloy-mcp-bridge logout` then `alloy-mcp-bridge login`.")
            rpc_error = jsonrpc_error(raw)
            with_session = bool(headers and SESSION_HEADER in headers)
            if with_session and forgot_session(status, rpc_error):
                raise SessionExpired()
            delay = self.policy.delay_after_status(state, status, retry_after, rpc_method)
            if delay is not None:
                logger.info("remote answered %s to %s; retrying in %.1fs", status, rpc_method or http_method, delay)
                self.stats.retries += 1
                await anyio.sleep(delay)
                continue
            if rpc_error is not None and status in _PASS_THROUGH_STATUSES:
                raise RemoteRpcError(rpc_error, status)
            raise status_error(
                status, where=self.endpoint.display_url, detail=self._detail(raw), retry_after=retry_after,
                rpc_method=rpc_method, location=self.secrets.shorten(location) if location else None,
            )

    async def wait_to_resend(self, drops: RetryState, method: str | None, *, still_wanted: bool) -> bool:
        """After a connection dropped under `method`: wait and return True when retry.py lets it be resent."""
        delay = self.policy.delay_after_drop(drops, method) if still_wanted else None
        if delay is None:
            return False
        logger.info("connection dropped during %s; resending it in %.1fs (safe to repeat)", method, delay)
        self.stats.retries += 1
        await anyio.sleep(delay)
        return True

    async def read_body(self, response: httpx2.Response, method: str | None = None) -> bytes:
        """A whole (non-streaming) response body, within ALLOY_MAX_MESSAGE_BYTES; failures typed."""
        limit = self.max_message_bytes
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise self.too_large()
                chunks.append(chunk)
        except httpx2.HTTPError as exc:
            raise self.lost(exc, method) from None
        return b"".join(chunks)

    def enable_oauth(self) -> None:
        """Sign in with OAuth from now on (the SDK and the flow are imported only now)."""
        self._client.auth = self.auth.start()
        self._direct = None  # the hot path carries no auth flow

    async def end_session(self, headers: dict[str, str]) -> None:
        """DELETE the session named in `headers`; best effort, bounded to one second."""
        with anyio.move_on_after(1.0):
            try:
                response = await self._client.request("DELETE", self._parsed_url, headers=headers,
                                                      timeout=httpx2.Timeout(1.0))
                logger.debug("remote session ended (HTTP %s)", response.status_code)
            except Exception as exc:  # noqa: BLE001 - best effort: an auth flow may refuse too (BridgeError)
                logger.debug("could not end the remote session: %s", type(exc).__name__)

    # --- error mapping -------------------------------------------------------------------

    def _detail(self, raw: bytes) -> str:
        detail = error_detail(raw)
        return self.secrets.shorten(detail) if detail else ""

    def _unreachable(self, exc: Exception) -> BridgeError:
        return BridgeError(
            BridgeErrorCode.REMOTE_UNREACHABLE,
            f"Cannot reach the remote MCP server at {self.endpoint.display_url} (host {self.endpoint.host}): "
            f"{_describe(exc)}.",
        )

    def _tls_error(self, exc: Exception) -> BridgeError:
        if "WRONG_VERSION_NUMBER" in str(exc) or "wrong version number" in str(exc).lower():
            return BridgeError(
                BridgeErrorCode.REMOTE_UNREACHABLE,
                f"{self.endpoint.display_url} does not speak TLS on that port ({_describe(exc)}): is the URL "
                "http:// rather than https://, or the port wrong?",
                hint="Check the URL's scheme and port (ALLOY_MCP_URL or ALLOY_BASE_URL).",
            )
        return BridgeError(
            BridgeErrorCode.REMOTE_UNREACHABLE,
            f"The TLS certificate of {self.endpoint.display_url} is not trusted ({_describe(exc)}). "
            "If the server uses a private or self-signed CA, set ALLOY_CA_BUNDLE to its PEM file.",
        )

    def lost(self, exc: BaseException, rpc_method: str | None) -> BridgeError:
        """The error for a request whose response failed after the remote accepted it.

        A timeout is final; a dropped connection is a `ConnectionDropped` that `retry.py` may resend.
        """
        timed_out = isinstance(exc, (httpx2.TimeoutException, TimeoutError))
        what = "did not answer in time" if timed_out else f"dropped the connection ({_describe(exc)})"
        kind = BridgeError if timed_out else ConnectionDropped
        if not is_idempotent(rpc_method):
            return kind(
                BridgeErrorCode.OUTCOME_UNKNOWN,
                f"The remote {what} after receiving {rpc_method}; it may or may not have run, "
                "so it was not retried. Check its effect before trying again.",
            )
        code = BridgeErrorCode.REMOTE_TIMEOUT if timed_out else BridgeErrorCode.REMOTE_ERROR
        return kind(code, f"The remote {what} while handling {rpc_method or 'the request'}.")

    def too_large(self) -> BridgeError:
        return BridgeError(
            BridgeErrorCode.MESSAGE_TOO_LARGE,
            f"A message from the remote exceeded ALLOY_MAX_MESSAGE_BYTES ({self.max_message_bytes} bytes).",
        )


def _debugging() -> bool:
    return logger.isEnabledFor(logging.DEBUG)


def _sent_tracer(on_sent: Callable[[], None]) -> Callable[[str, dict[str, Any]], Awaitable[None]]:
    """An httpcore trace hook that reports when a request's body has been written."""

    async def trace(event: str, info: dict[str, Any]) -> None:
        if event.endswith("send_request_body.complete"):
            on_sent()

    return trace


def _is_tls_failure(exc: Exception) -> bool:
    if any(isinstance(cause, ssl.SSLError) for cause in _root_causes(exc)):
        return True
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def _root_causes(exc: BaseException) -> list[BaseException]:
    """The exception, its causes and contexts, and members of exception groups (depth-first)."""
    seen: list[BaseException] = []
    stack = [exc]
    while stack and len(seen) < 50:
        current = stack.pop()
        if any(current is s for s in seen):
            continue
        seen.append(current)
        stack.extend(getattr(current, "exceptions", ()))
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                stack.append(linked)
    return seen


def _describe(exc: BaseException) -> str:
    """A short human description of a network failure."""
    for cause in _root_causes(exc):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "host name not found"
    text = str(exc).strip()
    if isinstance(exc, httpx2.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, httpx2.ReadTimeout):
        return "read timed out"
    if not text:
        return type(exc).__name__
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    if "Name or service not known" in text or "nodename nor servname" in text or "Errno -2" in text:
        return "host name not found"
    return text[:200]
