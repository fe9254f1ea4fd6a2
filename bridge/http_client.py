"""The bridge's one httpx2 client: static auth headers, timeouts, TLS trust, pooling, proxies, rotating credentials.

Built once per process. Connections that need no proxy go through a transport on the
bridge's own network backend (`network.py`); proxy variables are honoured, but never for
loopback, where a proxy would receive the credentials of a local endpoint over plain HTTP.
`check_network_settings()` refuses unusable proxy variables and CA bundles before any
network use.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import re
import ssl

import httpx2

from bridge import __version__
from bridge.auth.headers import CommandHeader, FileHeader, HeaderSource, RotatingHeaders
from bridge.endpoint import Endpoint
from bridge.logs import SecretList
from bridge.network import AsyncioBackend, keepalive_options
from bridge.settings import BridgeSettings, ConfigError

logger = logging.getLogger(__name__)

MAX_CONNECTIONS = 128
_PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")
_PROXY_PLACEHOLDER = re.compile(r"<[A-Z_]*PROXY>", re.IGNORECASE)


def build_client(settings: BridgeSettings, endpoint: Endpoint, secrets: SecretList,
                 verify: ssl.SSLContext | bool | None = None) -> httpx2.AsyncClient:
    """The one HTTP client of the bridge: static auth headers, timeouts, TLS trust, pooling, proxies.

    `verify`: the TLS context (default: `tls_context()`). The client's own transport, which serves the
    connections that need no proxy, runs on the bridge's network backend; proxy variables get httpx2's.

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
    try:
        client = httpx2.AsyncClient(
            headers=headers,
            timeout=timeout,
            verify=tls_context(settings, endpoint) if verify is None else verify,
            follow_redirects=False,
            limits=limits(),
            trust_env=True,  # HTTPS_PROXY / NO_PROXY (httpx2 reads them only when given no transport), SSL_CERT_FILE
            mounts=dict.fromkeys(loopback),
            auth=rotating_auth(settings, secrets),
        )
    except (ValueError, ImportError, TypeError) as exc:
        raise ConfigError("/".join(_PROXY_VARIABLES), _proxy_problem(exc)) from None
    use_bridge_backend(direct_transport(client))
    return client


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


def limits() -> httpx2.Limits:
    return httpx2.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=32, keepalive_expiry=30.0)


def direct_transport(client: httpx2.AsyncClient) -> httpx2.AsyncBaseTransport | None:
    """The client's transport for connections without a proxy (None: another httpx2 layout)."""
    return getattr(client, "_transport", None)


def use_bridge_backend(transport: httpx2.AsyncBaseTransport | None) -> None:
    """Run `transport`'s connections on the bridge's own network backend (see `network.py`)."""
    pool = getattr(transport, "_pool", None)
    if pool is not None and hasattr(pool, "_network_backend"):
        pool._network_backend = AsyncioBackend(keepalive_options())
    else:  # pragma: no cover - another httpx2 layout: the stock backend works, only slower
        logger.debug("httpx2's connection pool has no network backend to replace; using its own")


def check_network_settings(settings: BridgeSettings) -> None:
    """What the HTTP client will need, checked before any network use: proxy variables, the CA bundle.

    Raises:
        ConfigError: naming the proxy variable or `ALLOY_CA_BUNDLE`.
    """
    from httpx2._utils import get_environment_proxies

    for name in _PROXY_VARIABLES:
        for variable in (name, name.lower()):
            if (found := _PROXY_PLACEHOLDER.search(os.environ.get(variable, ""))) is not None:
                raise ConfigError(variable, f"still holds the placeholder {found.group()} that `config` wrote; put "
                                            "the real proxy URL there")
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
            _ca_bundle_context(str(settings.ca_bundle))
        except (ssl.SSLError, OSError, ValueError):
            raise ConfigError("ca_bundle", "is not a readable PEM file of CA certificates") from None


def _proxy_variable(pattern: str) -> str:
    scheme = pattern.partition("://")[0]
    return {"http": "HTTP_PROXY", "https": "HTTPS_PROXY"}.get(scheme, "ALL_PROXY")


def _proxy_problem(exc: Exception) -> str:
    if isinstance(exc, ImportError) or "socksio" in str(exc):
        return "a SOCKS proxy needs the optional 'socksio' package; use an http:// proxy or install it"
    return "the proxy URL is not usable (supported: http://, https://, socks5://); check the proxy variables"


def tls_context(settings: BridgeSettings, endpoint: Endpoint) -> ssl.SSLContext | bool:
    if settings.ca_bundle is not None:
        return _ca_bundle_context(str(settings.ca_bundle))
    if endpoint.url.startswith("http://"):
        # Plain HTTP never uses TLS (redirects are not followed), so skip loading the system CA store
        # (~100 ms at start-up): this context verifies and trusts nothing yet, it fails closed. OAuth,
        # whose authorization server may be HTTPS, loads the store into it when it starts.
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return True


@functools.lru_cache(maxsize=2)
def _ca_bundle_context(path: str) -> ssl.SSLContext:
    """The TLS context trusting `path`'s CAs; built once (loading a large bundle costs tens of milliseconds)."""
    return ssl.create_default_context(cafile=path)
