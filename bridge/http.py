"""The HTTP side: the httpx2 client (auth headers, timeouts, TLS, proxies) and sending under the retry policy.

`RemoteHttp.open()` sends one HTTP request and hands back the streaming
response once the remote has accepted it, after retrying what `retry.py` says
is safe to retry. Every failure it cannot recover from becomes one of the
typed errors of `bridge.errors`, translated here and nowhere else (like httpx's
`map_httpcore_exceptions()`): network errors never escape as raw exceptions,
so one bad request cannot take the bridge down.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import httpx2

from bridge import __version__
from bridge.auth.headers import CommandHeader, FileHeader, HeaderSource, RotatingHeaders
from bridge.direct_pool import DirectSender
from bridge.endpoint import Endpoint
from bridge.errors import (
    BridgeError,
    BridgeErrorCode,
    ConnectionDropped,
    RemoteRpcError,
    SessionExpired,
    bad_response,
    status_error,
)
from bridge.logs import SecretList
from bridge.messages import NotJson, decode_value
from bridge.network import AsyncioBackend, keepalive_options
from bridge.pacing import Pacer, parse_rate_limit
from bridge.retry import RetryPolicy, is_idempotent, parse_retry_after
from bridge.settings import BridgeSettings, ConfigError
from bridge.stats import SessionStats

logger = logging.getLogger(__name__)

SESSION_HEADER = "mcp-session-id"
_MAX_CONNECTIONS = 128
_DETAIL_CHARS = 300
# Non-2xx statuses whose JSON-RPC error body is the remote's real answer (others get the bridge's own message).
_PASS_THROUGH_STATUSES = frozenset({400, 404, 405, 406, 409, 415, 422})
_PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")


def build_client(settings: BridgeSettings, endpoint: Endpoint, secrets: SecretList,
                 transport: httpx2.AsyncHTTPTransport | None = None) -> httpx2.AsyncClient:
    """The one HTTP client of the bridge: static auth headers, timeouts, TLS trust, pooling, proxies.

    `transport` serves the connections that need no proxy (default: one on the bridge's network backend).

    Raises:
        ConfigError: a proxy variable the client cannot use.
    """
    timeout = httpx2.Timeout(
        connect=settings.connect_timeout,
        read=settings.read_timeout,
        write=settings.read_timeout,
        pool=settings.connect_timeout,  # all connections busy: a free one is part of connecting
    )
    headers = {"user-agent": f"alloy-mcp-bridge/{__version__}", **endpoint.headers}
    # Proxy variables (HTTPS_PROXY, ALL_PROXY) are honoured, but never for loopback: a proxy would receive
    # the credentials of a local endpoint, over plain HTTP.
    loopback = ["all://localhost", "all://127.0.0.1", "all://[::1]"]
    if endpoint.is_loopback:
        loopback.append(f"all://{httpx2.URL(endpoint.url).netloc.decode('ascii')}")
    verify = _tls_context(settings, endpoint)
    limits = _limits()
    try:
        return httpx2.AsyncClient(
            headers=headers,
            timeout=timeout,
            verify=verify,
            follow_redirects=False,
            limits=limits,
            transport=transport or _direct_transport(verify, limits),
            trust_env=True,  # HTTPS_PROXY / NO_PROXY, SSL_CERT_FILE
            mounts=dict.fromkeys(loopback),
            auth=rotating_auth(settings, secrets),
        )
    except (ValueError, ImportError, TypeError) as exc:
        raise ConfigError("/".join(_PROXY_VARIABLES), _proxy_problem(exc)) from None


def rotating_auth(settings: BridgeSettings, secrets: SecretList) -> httpx2.Auth | None:
    """The auth flow for credentials that change while the bridge runs (files, secret commands), if any."""
    sources: list[HeaderSource] = []
    if settings.user_token_file is not None:
        sources.append(FileHeader("x-alloy-user-token", settings.user_token_file, secrets))
    if settings.user_token_command is not None and settings.user_token is not None:
        sources.append(CommandHeader("x-alloy-user-token", "user_token_command", settings.user_token_command,
                                     settings.user_token.get_secret_value(), secrets))
    if settings.api_key_command is not None and settings.api_key is not None:
        sources.append(CommandHeader("authorization", "api_key_command", settings.api_key_command,
                                     settings.api_key.get_secret_value(), secrets, prefix="Bearer "))
    return RotatingHeaders(sources) if sources else None


def _limits() -> httpx2.Limits:
    return httpx2.Limits(max_connections=_MAX_CONNECTIONS, max_keepalive_connections=32, keepalive_expiry=30.0)


def _direct_transport(verify: ssl.SSLContext | bool, limits: httpx2.Limits) -> httpx2.AsyncHTTPTransport:
    """httpx2's transport for connections without a proxy, on the bridge's own network backend (see `network.py`)."""
    transport = httpx2.AsyncHTTPTransport(verify=verify, limits=limits, trust_env=True)
    pool = getattr(transport, "_pool", None)
    if pool is not None and hasattr(pool, "_network_backend"):
        pool._network_backend = AsyncioBackend(keepalive_options())
    else:  # pragma: no cover - another httpx2 layout: the stock backend works, only slower
        logger.debug("httpx2's connection pool has no network backend to replace; using its own")
    return transport


def check_network_settings(settings: BridgeSettings) -> None:
    """What the HTTP client will need, checked before any network use: proxy variables, the CA bundle.

    Raises:
        ConfigError: naming the proxy variable or `ALLOY_CA_BUNDLE`.
    """
    from httpx2._utils import get_environment_proxies

    for pattern, url in get_environment_proxies().items():
        if url is None:
            continue
        try:
            proxy = httpx2.Proxy(url)
        except (ValueError, TypeError, httpx2.InvalidURL) as exc:
            raise ConfigError(_proxy_variable(pattern), _proxy_problem(exc)) from None
        if proxy.url.scheme.startswith("socks") and importlib.util.find_spec("socksio") is None:
            raise ConfigError(_proxy_variable(pattern), _proxy_problem(ImportError()))
    if settings.ca_bundle is not None:
        try:
            ssl.create_default_context(cafile=str(settings.ca_bundle))
        except (ssl.SSLError, OSError, ValueError):
            raise ConfigError("ca_bundle", "is not a readable PEM file of CA certificates") from None


def _proxy_variable(pattern: str) -> str:
    scheme = pattern.partition("://")[0]
    return {"http": "HTTP_PROXY", "https": "HTTPS_PROXY"}.get(scheme, "ALL_PROXY")


def _proxy_problem(exc: Exception) -> str:
    if isinstance(exc, ImportError) or "socksio" in str(exc):
        return "a SOCKS proxy needs the optional 'socksio' package; use an http:// proxy or install it"
    return "the proxy URL is not usable (supported: http://, https://, socks5://); check the proxy variables"


def _tls_context(settings: BridgeSettings, endpoint: Endpoint) -> ssl.SSLContext | bool:
    if settings.ca_bundle is not None:
        return ssl.create_default_context(cafile=str(settings.ca_bundle))
    if endpoint.url.startswith("http://"):
        # Plain HTTP never uses TLS (redirects are not followed), so skip loading the system CA store
        # (~100 ms at start-up): this context verifies and trusts nothing yet, it fails closed. OAuth,
        # whose authorization server may be HTTPS, loads the store into it when it starts.
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return True


@contextlib.asynccontextmanager
async def remote_http(settings: BridgeSettings, endpoint: Endpoint, secrets: SecretList,
                      stats: SessionStats | None = None) -> AsyncIterator[RemoteHttp]:
    """The client and the sender on top of it, for as long as the bridge talks to the remote."""
    tls = _tls_context(settings, endpoint)
    transport = _direct_transport(tls, _limits())
    async with build_client(settings, endpoint, secrets, transport) as client:
        direct = DirectSender.for_client(client, httpx2.URL(endpoint.url), transport)
        yield RemoteHttp(client, settings, endpoint, secrets, direct=direct, stats=stats,
                         tls=tls if isinstance(tls, ssl.SSLContext) else None)


class RemoteHttp:
    """Sends requests to the endpoint with the retry policy and error mapping applied."""

    def __init__(
        self, client: httpx2.AsyncClient, settings: BridgeSettings, endpoint: Endpoint, secrets: SecretList,
        *, direct: DirectSender | None = None, stats: SessionStats | None = None, tls: ssl.SSLContext | None = None,
    ) -> None:
        self._tls = tls
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
        self._settings = settings
        self.oauth: Any = None  # the OAuth flow, once the remote asked for it (or ALLOY_OAUTH=on)
        self._oauth_eligible = settings.oauth != "off" and not (
            settings.api_key or settings.user_token or settings.user_token_file or settings.user_token_command
            or settings.access_token or _has_url_token(endpoint) or "authorization" in endpoint.headers)
        if settings.oauth == "on" or (self._oauth_eligible and _signed_in_before(settings, endpoint.url)):
            self.enable_oauth()  # tokens are stored: use them from the first request, no 401 round trip

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
    ) -> AsyncIterator[httpx2.Response]:
        """Send one request (retrying what is safe) and yield the accepted streaming response.

        `on_sent` is called once the request's bytes are on the wire (before the remote answers).

        Raises:
            SessionExpired: 404 to a request that carried a session id.
            RemoteRpcError: the remote answered with a JSON-RPC error in a 4xx body.
            ConnectionDropped: the connection failed after the request was sent.
            BridgeError: the remote is unreachable, refused the request, or failed.
        """
        state = self.policy.start()
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
                    f"All {_MAX_CONNECTIONS} connections to the remote stayed busy for ALLOY_CONNECT_TIMEOUT; "
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
            except httpx2.TimeoutException as exc:
                raise self.lost(exc, rpc_method) from None
            except (httpx2.TransportError, httpx2.DecodingError) as exc:
                raise self.lost(exc, rpc_method) from None
            except httpx2.HTTPError as exc:  # anything else httpx2 raises, e.g. a header it cannot decode
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
            raw = await _read_some(response)
            await response.aclose()
            if status == 401 and self.oauth is None and self._oauth_eligible and await self._asks_for_oauth(challenge):
                logger.info("the remote asks for OAuth sign-in (HTTP 401 with a Bearer challenge)")
                self.enable_oauth()
                direct = None
                continue  # refused without running: sent again, signing in first
            if status == 401 and self.oauth is not None:
                from bridge.auth.oauth import sign_in_failed

                raise sign_in_failed("the remote still refuses the access token (HTTP 401). Run "
                                     "`alloy-mcp-bridge logout` then `alloy-mcp-bridge login`.")
            rpc_error = _jsonrpc_error(raw)
            with_session = bool(headers and SESSION_HEADER in headers)
            if with_session and _forgot_session(status, rpc_error):
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
                rpc_method=rpc_method, location=self._shorten(location) if location else None,
            )

    def enable_oauth(self) -> None:
        """Sign in with OAuth from now on (the SDK and the flow are imported only now)."""
        if self.oauth is not None:
            return
        from bridge.auth.oauth import build_provider

        if self._tls is not None and self.url.startswith("http://") and self._settings.ca_bundle is None:
            self._tls.load_default_certs()  # the authorization server may well be HTTPS
        self.oauth = build_provider(self._settings, self.url, self.secrets)
        self._client.auth = self.oauth
        self._direct = None  # the hot path carries no auth flow

    async def _asks_for_oauth(self, challenge: str) -> bool:
        """A Bearer challenge, or protected-resource metadata (RFC 9728) published for the endpoint."""
        if challenge.strip().lower().startswith("bearer"):
            return True
        url = httpx2.URL(self.url)
        with anyio.move_on_after(5):  # the whole probe, however slowly a remote answers
            for path in (f"/.well-known/oauth-protected-resource{url.path.rstrip('/')}",
                         "/.well-known/oauth-protected-resource"):
                with contextlib.suppress(httpx2.HTTPError, ValueError):
                    async with self._client.stream("GET", url.copy_with(path=path, query=None),
                                                   timeout=5.0) as response:
                        if response.status_code != 200:
                            continue
                        body = b""
                        async for chunk in response.aiter_bytes():
                            body += chunk
                            if len(body) > 65536:
                                break
                        if b"authorization_servers" in body:
                            return True
        return False

    def oauth_status(self) -> dict[str, Any] | None:
        """Whether OAuth is in use, and when the stored access token expires (for `check`)."""
        if self.oauth is None:
            return None
        expires_at = self.oauth.store.expires_at()
        return {"inUse": True, "accessTokenExpiresAt": expires_at, "tokenFile": str(self.oauth.store.path)}

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

    def _shorten(self, text: str) -> str:
        """The remote's words for a message: secrets redacted first, then cut (a secret never half-shows)."""
        text = self.secrets.redact(text)
        return text if len(text) <= _DETAIL_CHARS else text[:_DETAIL_CHARS] + "…"

    def _detail(self, raw: bytes) -> str:
        detail = _error_detail(raw)
        return self._shorten(detail) if detail else ""

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

    def lost(self, exc: BaseException, rpc_method: str | None, *, timed_out: bool | None = None) -> BridgeError:
        """The error for a request whose response failed after the remote accepted it.

        A timeout is final; a dropped connection is a `ConnectionDropped` that `retry.py` may resend.
        """
        if timed_out is None:
            timed_out = isinstance(exc, httpx2.TimeoutException)
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


def _signed_in_before(settings: BridgeSettings, url: str) -> bool:
    from bridge.auth.paths import has_tokens, oauth_directory

    try:
        return has_tokens(oauth_directory(settings.oauth_dir), url)
    except (OSError, ValueError):
        return False


def _has_url_token(endpoint: Endpoint) -> bool:
    return "***" in endpoint.display_url


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
    """The first bytes of an error response's body (enough for any JSON-RPC error), read for a bounded time."""
    chunks: list[bytes] = []
    size = 0
    with anyio.move_on_after(5.0):
        try:
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size >= limit:
                    break
        except httpx2.HTTPError:
            pass
    return b"".join(chunks)[:limit]


def _jsonrpc_error(raw: bytes) -> dict[str, Any] | None:
    """The `error` object of a JSON-RPC error body, or None.

    Raises:
        BridgeError: the body is a JSON-RPC error in lenient JSON only (NaN, Infinity): refused as invalid.
    """
    try:
        body = decode_value(raw)
    except NotJson:
        if _is_lenient_jsonrpc_error(raw):
            raise bad_response("The remote's JSON-RPC error is not strict JSON (it holds NaN or Infinity); "
                               "it was refused.") from None
        return None
    if isinstance(body, dict) and body.get("jsonrpc") == "2.0" and isinstance(body.get("error"), dict):
        error = body["error"]
        if isinstance(error.get("code"), int) and isinstance(error.get("message"), str):
            return error
    return None


def _is_lenient_jsonrpc_error(raw: bytes) -> bool:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return False
    return isinstance(body, dict) and body.get("jsonrpc") == "2.0" and isinstance(body.get("error"), dict)


def _error_detail(raw: bytes, limit: int = 8192) -> str:
    """The remote's own explanation of an error status (JSON `error`/`message` or text), uncut."""
    text = raw[:limit].decode("utf-8", "replace").strip()
    if not text:
        return ""
    with contextlib.suppress(NotJson):
        body: Any = decode_value(raw[:limit])
        if isinstance(body, dict):
            err = body.get("error")
            if isinstance(err, dict):
                return str(err.get("message") or err)
            for key in ("error_description", "message", "error", "detail"):
                if isinstance(body.get(key), str):
                    return str(body[key])
    if text.startswith("<"):
        return ""  # an HTML error page says nothing useful on one line
    return " ".join(text.split())
