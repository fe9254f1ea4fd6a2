"""The HTTP side: the httpx2 client (auth headers, timeouts, TLS) and resilient sending.

`RemoteHttp.open()` sends one HTTP request and hands back the streaming
response once the remote has accepted it, after retrying what `retry.py`
says is safe to retry. Every failure it cannot recover from becomes a
`BridgeError` whose message says what happened and what to check — network
errors never escape as raw exceptions, so one bad request cannot take the
bridge down.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any

import anyio
import httpx2

from bridge import __version__
from bridge.errors import BridgeError, BridgeErrorCode
from bridge.logs import SecretList
from bridge.pacing import Pacer
from bridge.retry import RetryPolicy, is_idempotent, parse_retry_after
from bridge.settings import (
    BridgeSettings,
    Endpoint,
    header_value_problem,
    parse_rate_limit,
    read_token_file,
    secret_forms,
)
from bridge.sse import EventTooLarge

logger = logging.getLogger("bridge.http")

SESSION_HEADER = "mcp-session-id"
# A stream the remote may leave quiet for a long time (the GET stream, a subscription) gets this read timeout.
_QUIET_STREAM_READ = 300.0


class SessionExpired(Exception):
    """The remote answered 404 to a request sent with a session id: re-initialize and resend."""


class RemoteRpcError(Exception):
    """The remote refused a request with a JSON-RPC error in a non-2xx body: pass it on as the answer.

    Spec-correct servers send errors such as -32602 (invalid params), -32601 (method not found) or
    -32022 (unsupported protocol version) this way, at 400 / 404.
    """

    def __init__(self, error: dict[str, Any], http_status: int) -> None:
        super().__init__(str(error.get("message")))
        self.error = error
        self.http_status = http_status

    @property
    def code(self) -> int | None:
        code = self.error.get("code")
        return code if isinstance(code, int) else None


class ConnectionDropped(Exception):
    """The connection failed after the request was sent: it may have run (resend only if idempotent)."""

    def __init__(self, error: BridgeError) -> None:
        super().__init__(error.message)
        self.error = error


class FileUserToken(httpx2.Auth):
    """`x-alloy-user-token` read from a file: re-read when the file changes, and once after a 401.

    A user JWT expires; whoever refreshes it only has to rewrite the file. Retrying
    after a 401 is safe: the remote refused the request without running it.
    """

    header = "x-alloy-user-token"

    def __init__(self, path: Path, secrets: SecretList) -> None:
        self.path = path
        self.secrets = secrets
        self._token = ""
        self._stamp: tuple[int, int] | None = None

    def current(self, *, force: bool = False) -> str:
        try:
            info = os.stat(self.path)
            stamp = (info.st_mtime_ns, info.st_size)
            if force or stamp != self._stamp:
                token = read_token_file(self.path)
                self._stamp = stamp
                if token and token != self._token:
                    self.secrets.add(secret_forms([token]))  # hidden before anything can print it
                    problem = header_value_problem(token, secret=True)
                    if problem is not None:
                        logger.warning("ignoring the new ALLOY_USER_TOKEN_FILE content: the token %s", problem)
                    else:
                        if self._token:
                            logger.info("user token file changed; using the new token")
                        self._token = token
        except OSError as exc:
            logger.warning("cannot read ALLOY_USER_TOKEN_FILE (%s); keeping the last token", type(exc).__name__)
        return self._token

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        sent = self.current()
        request.headers[self.header] = sent
        response = yield request
        if response.status_code == 401:
            fresh = self.current(force=True)
            if fresh != sent:
                request.headers[self.header] = fresh
                yield request


def build_client(settings: BridgeSettings, endpoint: Endpoint, secrets: SecretList) -> httpx2.AsyncClient:
    """The one HTTP client of the bridge: static auth headers, timeouts, TLS trust, pooling."""
    timeout = httpx2.Timeout(
        connect=settings.connect_timeout,
        read=settings.read_timeout,
        write=settings.read_timeout,
        pool=None,  # waiting for a free connection is not a failure
    )
    headers = {"user-agent": f"alloy-mcp-bridge/{__version__}", **endpoint.headers}
    return httpx2.AsyncClient(
        headers=headers,
        timeout=timeout,
        verify=_tls_context(settings, endpoint),
        follow_redirects=False,
        limits=httpx2.Limits(max_connections=128, max_keepalive_connections=32, keepalive_expiry=30.0),
        trust_env=True,  # HTTPS_PROXY / NO_PROXY, SSL_CERT_FILE
        auth=FileUserToken(settings.user_token_file, secrets) if settings.user_token_file is not None else None,
    )


@contextlib.asynccontextmanager
async def remote_http(settings: BridgeSettings, endpoint: Endpoint, secrets: SecretList) -> AsyncIterator[RemoteHttp]:
    """The client and the sender on top of it, for as long as the bridge talks to the remote."""
    async with build_client(settings, endpoint, secrets) as client:
        yield RemoteHttp(client, settings, endpoint, secrets)


def _tls_context(settings: BridgeSettings, endpoint: Endpoint) -> ssl.SSLContext | bool:
    if settings.ca_bundle is not None:
        return ssl.create_default_context(cafile=str(settings.ca_bundle))
    if endpoint.url.startswith("http://"):
        # Plain HTTP never uses TLS (redirects are not followed), so skip loading the system
        # CA store (~100 ms at start-up). The context verifies and trusts nothing: it fails closed.
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return True


class RemoteHttp:
    """Sends requests to the endpoint with the retry policy and error mapping applied."""

    def __init__(
        self, client: httpx2.AsyncClient, settings: BridgeSettings, endpoint: Endpoint, secrets: SecretList
    ) -> None:
        self.client = client
        self.secrets = secrets
        self.url = endpoint.url
        self._parsed_url = httpx2.URL(endpoint.url)  # parsed once, not per request
        self.endpoint = endpoint
        self.policy = RetryPolicy(settings.max_retries, settings.retry_budget, settings.connect_timeout)
        self.max_message_bytes = settings.max_message_bytes
        self.read_timeout = settings.read_timeout
        limit = parse_rate_limit(settings.rate_limit) if settings.rate_limit else None
        self.pacer = Pacer(*limit) if limit else None
        # For streams the remote may leave quiet for minutes: the GET stream, subscriptions, legacy SSE.
        self.quiet_stream_timeout = httpx2.Timeout(
            settings.connect_timeout, read=max(_QUIET_STREAM_READ, settings.read_timeout)
        )

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
    ) -> AsyncIterator[httpx2.Response]:
        """Send one request (retrying what is safe) and yield the accepted streaming response.

        Raises:
            SessionExpired: 404 to a request that carried a session id.
            RemoteRpcError: the remote answered with a JSON-RPC error in a 4xx body.
            ConnectionDropped: the connection failed after the request was sent.
            BridgeError: the remote is unreachable, refused the request, or failed.
        """
        state = self.policy.start()
        target = url or self._parsed_url
        while True:
            request = self.client.build_request(
                http_method, target, content=body, headers=headers,
                timeout=timeout if timeout is not None else self.client.timeout,
            )
            if self.pacer is not None:
                await self.pacer.wait_turn()
            try:
                response = await self.client.send(request, stream=True)
            except (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout) as exc:
                if _is_tls_failure(exc):
                    raise self._tls_error(exc) from None
                delay = self.policy.delay_after_connect_failure(state)
                if delay is None:
                    raise self._unreachable(exc) from None
                logger.info("remote unreachable (%s); retrying in %.1fs", _describe(exc), delay)
                await anyio.sleep(delay)
                continue
            except httpx2.TimeoutException as exc:
                raise self._lost(exc, rpc_method, timed_out=True) from None
            except httpx2.TransportError as exc:
                raise ConnectionDropped(self._lost(exc, rpc_method, timed_out=False)) from None

            status = response.status_code
            if status < 400:
                try:
                    yield response
                finally:
                    await response.aclose()
                return

            retry_after = parse_retry_after(response.headers.get("retry-after"))
            raw = await _read_some(response)
            await response.aclose()
            rpc_error = _jsonrpc_error(raw)
            with_session = bool(headers and SESSION_HEADER in headers)
            if with_session and _forgot_session(status, rpc_error):
                raise SessionExpired()
            delay = self.policy.delay_after_status(state, status, retry_after, rpc_method)
            if delay is not None:
                logger.info("remote answered %s to %s; retrying in %.1fs", status, rpc_method or http_method, delay)
                await anyio.sleep(delay)
                continue
            if rpc_error is not None and status in _PASS_THROUGH_STATUSES:
                raise RemoteRpcError({**rpc_error, "message": self._clean(rpc_error["message"])}, status)
            raise self.status_error(status, _error_detail(raw), retry_after, rpc_method)

    # --- error mapping -------------------------------------------------------------------

    def _clean(self, text: str) -> str:
        return self.secrets.redact(text)

    def _unreachable(self, exc: Exception) -> BridgeError:
        return BridgeError.of(
            BridgeErrorCode.REMOTE_UNREACHABLE,
            self._clean(f"Cannot reach the remote MCP server at {self.endpoint.display_url}: {_describe(exc)}."),
        )

    def _tls_error(self, exc: Exception) -> BridgeError:
        return BridgeError.of(
            BridgeErrorCode.REMOTE_UNREACHABLE,
            self._clean(
                f"The TLS certificate of {self.endpoint.display_url} is not trusted ({_describe(exc)}). "
                "If the server uses a private or self-signed CA, set ALLOY_CA_BUNDLE to its PEM file."
            ),
        )

    def _lost(self, exc: Exception, rpc_method: str | None, *, timed_out: bool) -> BridgeError:
        what = "did not answer in time" if timed_out else f"dropped the connection ({_describe(exc)})"
        if not is_idempotent(rpc_method):
            return BridgeError.of(
                BridgeErrorCode.OUTCOME_UNKNOWN,
                self._clean(f"The remote {what} after receiving {rpc_method}; it may or may not have run, "
                            "so it was not retried. Check its effect before trying again."),
            )
        code = BridgeErrorCode.REMOTE_TIMEOUT if timed_out else BridgeErrorCode.REMOTE_ERROR
        return BridgeError.of(code, self._clean(f"The remote {what} while handling {rpc_method or 'the request'}."))

    def lost(self, exc: Exception, rpc_method: str | None) -> BridgeError:
        """The error for a response stream that failed after the remote accepted the request."""
        if isinstance(exc, EventTooLarge):
            return BridgeError.of(
                BridgeErrorCode.MESSAGE_TOO_LARGE,
                f"A message from the remote exceeded ALLOY_MAX_MESSAGE_BYTES ({self.max_message_bytes} bytes).",
            )
        return self._lost(exc, rpc_method, timed_out=isinstance(exc, httpx2.TimeoutException))

    def status_error(
        self, status: int, detail: str, retry_after: float | None, rpc_method: str | None
    ) -> BridgeError:
        """Map an HTTP error status to a message that says what to check."""
        said = f" Remote said: {detail}" if detail else ""
        where = self.endpoint.display_url
        if status == 401:
            code, text = BridgeErrorCode.AUTH_REJECTED, (
                f"The remote rejected the credentials (HTTP 401 Unauthorized). Check ALLOY_API_KEY and "
                f"ALLOY_USER_ID / ALLOY_USER_TOKEN; a token URL expires when its token is regenerated.{said}"
            )
        elif status == 403:
            code, text = BridgeErrorCode.FORBIDDEN, (
                f"The remote refused {rpc_method or 'the request'} (HTTP 403 Forbidden): the server restricts "
                f"this action or connector.{said}"
            )
        elif status == 404:
            code, text = BridgeErrorCode.NOT_FOUND, (
                f"No MCP server at {where} (HTTP 404 Not Found). Check the server id; the server may have been "
                f"deleted.{said}"
            )
        elif status == 413:
            code = BridgeErrorCode.MESSAGE_TOO_LARGE
            text = f"The remote refused a message as too large (HTTP 413).{said}"
        elif status == 429:
            wait = f" Retry after {retry_after:.0f}s." if retry_after is not None else ""
            code, text = BridgeErrorCode.RATE_LIMITED, (
                f"The remote is rate limiting requests (HTTP 429 Too Many Requests) and the bridge's retry budget "
                f"is spent.{wait}{said}"
            )
        elif status in (502, 503, 504):
            wait = f" Retry after {retry_after:.0f}s." if retry_after is not None else ""
            code, text = BridgeErrorCode.REMOTE_UNAVAILABLE, (
                f"The remote is temporarily unavailable (HTTP {status}).{wait}{said}"
            )
        elif status == 405 or status == 406 or status == 415:
            code, text = BridgeErrorCode.BAD_RESPONSE, (
                f"{where} did not accept an MCP request (HTTP {status}); is it a Streamable HTTP MCP endpoint?{said}"
            )
        else:
            code, text = BridgeErrorCode.REMOTE_ERROR, f"The remote failed with HTTP {status}.{said}"
        return BridgeError.of(code, self._clean(text), http_status=status, retry_after=retry_after)


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


# Non-2xx statuses whose JSON-RPC error body is the remote's real answer (others get the bridge's own message).
_PASS_THROUGH_STATUSES = frozenset({400, 404, 405, 406, 409, 415, 422})


def _forgot_session(status: int, rpc_error: dict[str, Any] | None) -> bool:
    """Whether an error to a request that carried a session id means "I do not know that session".

    404 is the spec's answer (unless it is a JSON-RPC "method not found"); some servers (the TypeScript
    SDK's examples among them) answer 400 "No valid session ID provided" instead.
    """
    if status == 404:
        return rpc_error is None or rpc_error.get("code") != -32601
    if status == 400 and rpc_error is not None:
        return "session" in str(rpc_error.get("message", "")).lower()
    return False


async def _read_some(response: httpx2.Response, limit: int = 65536) -> bytes:
    """The first bytes of an error response's body (enough for any JSON-RPC error)."""
    raw = b""
    try:
        async for chunk in response.aiter_bytes():
            raw += chunk
            if len(raw) >= limit:
                break
    except httpx2.HTTPError:
        pass
    return raw[:limit]


def _jsonrpc_error(raw: bytes) -> dict[str, Any] | None:
    """The `error` object of a JSON-RPC error body, or None."""
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    if isinstance(body, dict) and body.get("jsonrpc") == "2.0" and isinstance(body.get("error"), dict):
        error = body["error"]
        if isinstance(error.get("code"), int) and isinstance(error.get("message"), str):
            return error
    return None


def _error_detail(raw: bytes, limit: int = 2048) -> str:
    """The remote's own explanation of an error status (JSON `error`/`message` or text), shortened."""
    text = raw[:limit].decode("utf-8", "replace").strip()
    if not text:
        return ""
    with contextlib.suppress(ValueError):
        body: Any = json.loads(text)
        if isinstance(body, dict):
            err = body.get("error")
            if isinstance(err, dict):
                return str(err.get("message") or err)[:300]
            for key in ("error_description", "message", "error", "detail"):
                if isinstance(body.get(key), str):
                    return body[key][:300]
    if text.startswith("<"):
        return ""  # an HTML error page says nothing useful on one line
    return " ".join(text.split())[:300]
