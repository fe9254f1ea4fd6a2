"""Every setting of the bridge: where it comes from, how it is checked, what it builds.

Settings come from CLI flags, then environment variables, then a `.env` file
(pydantic-settings; flags win). Each setting has one env var (`ALLOY_*`) and
one flag (`--*`, the env var without the prefix, kebab-cased): see `SETTINGS`.

`load_settings()` reads them; `resolve_endpoint()` turns them into the one
thing the rest of the bridge needs, an `Endpoint`: the URL, the headers, and
the secrets that must never be shown. Both raise `ConfigError` with a message
that names the setting and never contains a secret value.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "ALLOY_"
DEFAULT_BASE_URL = "https://mcp.runalloy.com"

LogLevel = Literal["debug", "info", "warning", "error"]
TransportMode = Literal["auto", "streamable-http", "sse"]


class ConfigError(Exception):
    """A setting is missing, malformed or contradicts another one."""

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"{env_name(setting)} ({flag_name(setting)}): {problem}")


def env_name(setting: str) -> str:
    """`mcp_url` -> `ALLOY_MCP_URL`."""
    return ENV_PREFIX + setting.upper()


def flag_name(setting: str) -> str:
    """`mcp_url` -> `--mcp-url`."""
    return "--" + setting.replace("_", "-")


class BridgeSettings(BaseSettings):
    """The bridge's configuration, read from flags (init kwargs), `ALLOY_*` env vars and `.env`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        hide_input_in_errors=True,
        validate_default=False,
    )

    # Where the remote is.
    mcp_url: SecretStr | None = None
    server_id: str | None = None
    base_url: str = DEFAULT_BASE_URL
    access_token: SecretStr | None = None
    # Authentication headers.
    api_key: SecretStr | None = None
    user_id: str | None = None
    user_token: SecretStr | None = None
    user_token_file: Path | None = None
    credential_id: str | None = None
    redirect_uri: str | None = None
    mcp_headers: SecretStr | None = None
    # Behaviour.
    transport: TransportMode = "auto"
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    max_retries: int = 4
    retry_budget: float = 30.0
    max_message_bytes: int = 64 * 1024 * 1024
    rate_limit: str | None = None
    allowed_tools: str | None = None
    blocked_tools: str | None = None
    ca_bundle: Path | None = None
    allow_http: bool = False
    log_level: LogLevel = "info"
    log_file: Path | None = None


# Human descriptions of each setting, in README order: (setting, default shown, meaning).
SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("mcp_url", "-", "Full endpoint URL: `https://…/mcp/{serverId}`, a token URL `…/mcp/{serverId}/{accessToken}`, or any Streamable HTTP / SSE MCP endpoint."),
    ("server_id", "-", "Alloy server id; with `ALLOY_BASE_URL` the bridge builds `/mcp/{serverId}` (alternative to the URL)."),
    ("base_url", DEFAULT_BASE_URL, "Base URL used with `ALLOY_SERVER_ID`."),
    ("access_token", "-", "With `ALLOY_SERVER_ID`: builds the token URL `/mcp/{serverId}/{accessToken}` (no headers needed)."),
    ("api_key", "-", "Sent as `Authorization: Bearer <key>`."),
    ("user_id", "-", "Sent as `x-alloy-userid`."),
    ("user_token", "-", "Sent as `x-alloy-user-token` (a JWT isolating one end user)."),
    ("user_token_file", "-", "A file holding the user JWT instead; re-read whenever it changes (and after a 401), so a token can be rotated without restarting the client."),
    ("credential_id", "-", "Sent as `x-credential-id` (forces one stored credential)."),
    ("redirect_uri", "-", "Sent as `x-redirect-uri` (where an OAuth flow returns)."),
    ("mcp_headers", "-", "Extra headers for any remote, as a JSON object, e.g. `{\"X-Team\": \"a\"}`. Values are treated as secrets."),
    ("transport", "auto", "`auto` (Streamable HTTP, falling back to legacy HTTP+SSE when the endpoint answers 404/405), `streamable-http`, or `sse`."),
    ("connect_timeout", "10", "Seconds to establish a connection; also how long the bridge keeps retrying an unreachable remote."),
    ("read_timeout", "120", "Seconds of silence from the remote before a request fails (each progress notification restarts the clock)."),
    ("max_retries", "4", "Retries of a request the remote rejected without running it (429, 503, connection refused)."),
    ("retry_budget", "30", "Most seconds spent waiting between retries of one request, `Retry-After` included."),
    ("max_message_bytes", "67108864", "Largest single message accepted from either side (64 MiB)."),
    ("rate_limit", "off", "Pace requests to the remote to at most N per period, e.g. `100/min` (Alloy's default limit) or `5/2s`, instead of waiting for 429s."),
    ("allowed_tools", "-", "Comma-separated tool names or globs the desktop may see and call; others are hidden and refused."),
    ("blocked_tools", "-", "Comma-separated tool names or globs hidden from `tools/list` and refused on `tools/call`."),
    ("ca_bundle", "system store", "PEM file of CA certificates to trust for an HTTPS remote (e.g. a self-signed or corporate CA)."),
    ("allow_http", "false", "Allow plain `http://` to a host that is not loopback (never do this with real credentials)."),
    ("log_level", "info", "`debug`, `info`, `warning` or `error`. Logs go to stderr (and the log file), never stdout."),
    ("log_file", "-", "Also append logs to this file."),
)

_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9._~\-]+$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_ALLOY_PATH = re.compile(r"^(?P<prefix>.*?/mcp)/(?P<server>[^/]+)(?:/(?P<token>[^/]+))?/?$")
# Headers the bridge owns: setting them from configuration would break the protocol.
_RESERVED_HEADERS = frozenset(
    {"host", "content-length", "content-type", "accept", "mcp-session-id", "mcp-protocol-version", "last-event-id",
     "transfer-encoding", "connection"}
)
_SECRET_FIELDS = ("api_key", "user_token", "access_token")


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*\.?\d*)\s*(s|sec|second|m|min|minute|h|hour)?\s*$")
_PERIOD_SECONDS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


def parse_rate_limit(text: str) -> tuple[int, float] | None:
    """`100/min` -> (100, 60.0); None when malformed or not positive."""
    match = _RATE.match(text)
    if match is None:
        return None
    count, amount, unit = int(match[1]), match[2], match[3] or "s"
    if not amount and not match[3]:
        return None
    seconds = (float(amount) if amount else 1.0) * _PERIOD_SECONDS[unit]
    return (count, seconds) if count > 0 and seconds > 0 else None


def read_token_file(path: Path) -> str:
    """A secret kept in a file: its content without the surrounding whitespace (a trailing newline is normal)."""
    return path.read_text(encoding="utf-8").strip()


def load_settings(overrides: dict[str, Any] | None = None, *, env_file: str | None = ".env") -> BridgeSettings:
    """Read the settings; `overrides` (from CLI flags) win over env vars and `.env`.

    Raises:
        ConfigError: a value is empty or of the wrong type; the message names the setting.
    """
    init = {key: value for key, value in (overrides or {}).items() if value is not None}
    try:
        settings = BridgeSettings(_env_file=env_file, **init)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise _config_error_from(exc) from None
    _reject_empty(settings)
    return settings


def _config_error_from(exc: ValidationError) -> ConfigError:
    """The first validation problem, as one readable line without the offending value."""
    error = exc.errors(include_input=False, include_url=False)[0]
    setting = str(error["loc"][0]) if error["loc"] else "settings"
    kind = error["type"]
    expected = {
        "float_parsing": "must be a number",
        "float_type": "must be a number",
        "int_parsing": "must be a whole number",
        "int_type": "must be a whole number",
        "int_from_float": "must be a whole number",
        "bool_parsing": "must be true or false",
        "bool_type": "must be true or false",
        "literal_error": "must be one of the documented values",
        "enum": "must be one of the documented values",
    }.get(kind, error["msg"])
    if kind == "literal_error":
        expected = "must be one of: " + error["msg"].split("Input should be ", 1)[-1].replace("'", "")
    return ConfigError(setting, expected)


def _reject_empty(settings: BridgeSettings) -> None:
    for name in BridgeSettings.model_fields:
        value = getattr(settings, name)
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(raw, str) and not raw.strip():
            raise ConfigError(name, "is set but empty; remove it or give it a value")
    for name, low in (("connect_timeout", 0.1), ("read_timeout", 0.1), ("retry_budget", 0.0)):
        if getattr(settings, name) < low:
            raise ConfigError(name, f"must be at least {low} seconds")
    if settings.max_retries < 0:
        raise ConfigError("max_retries", "must be 0 or more")
    if settings.max_message_bytes < 10 * 1024 * 1024:
        raise ConfigError("max_message_bytes", "must be at least 10485760 (10 MiB, the largest body Alloy sends)")
    if settings.ca_bundle is not None and not settings.ca_bundle.is_file():
        raise ConfigError("ca_bundle", "is not a readable file")
    if settings.rate_limit is not None and parse_rate_limit(settings.rate_limit) is None:
        raise ConfigError("rate_limit", "must look like 100/min, 600/hour or 5/2s (requests per period)")
    if settings.user_token_file is not None:
        if settings.user_token is not None:
            raise ConfigError("user_token_file", "conflicts with ALLOY_USER_TOKEN; set only one of them")
        try:
            token = read_token_file(settings.user_token_file)
        except OSError:
            raise ConfigError("user_token_file", "is not a readable file") from None
        if not token:
            raise ConfigError("user_token_file", "is empty")
        _check_header_safe("user_token_file", token, secret=True, label="the token in the file")


@dataclass(frozen=True)
class Endpoint:
    """Where the bridge connects and with what: the product of validated settings.

    `url` may contain an access token; print `display_url` instead. `secrets`
    lists every value the log redaction must hide.
    """

    url: str
    headers: dict[str, str] = field(repr=False)
    secrets: tuple[str, ...] = field(repr=False)
    display_url: str = ""
    warnings: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"Endpoint(url={self.display_url!r}, headers=[{', '.join(sorted(self.headers))}])"


def resolve_endpoint(settings: BridgeSettings) -> Endpoint:
    """Validate the settings together and build the endpoint URL and headers.

    Raises:
        ConfigError: a missing, malformed or conflicting setting.
    """
    secrets: list[str] = []
    for name in _SECRET_FIELDS:
        value = getattr(settings, name)
        if value is not None:
            _check_header_safe(name, value.get_secret_value(), secret=True)
            secrets.append(value.get_secret_value())
    if settings.user_token_file is not None:
        secrets.append(read_token_file(settings.user_token_file))

    url, url_token = _endpoint_url(settings)
    if url_token:
        secrets.append(url_token)
    parts = urlsplit(url)
    for _, value in _query_pairs(parts.query):
        if len(value) >= 4:
            secrets.append(value)
    _check_scheme(settings, parts)

    headers = _auth_headers(settings)
    extra = _extra_headers(settings)
    for name, value in extra.items():
        if name.lower() in headers:
            raise ConfigError("mcp_headers", f"header {name!r} is already set by another ALLOY_* setting")
        headers[name.lower()] = value
        if len(value) >= 4:
            secrets.append(value)

    warnings: list[str] = []
    if settings.api_key is not None and not (settings.user_id or settings.user_token or settings.user_token_file):
        warnings.append(
            "ALLOY_API_KEY is set without ALLOY_USER_ID or ALLOY_USER_TOKEN; Alloy expects one of them "
            "to know which end user's connections to use."
        )
    host = (parts.hostname or "").lower()
    has_credentials = bool(url_token or settings.api_key or "authorization" in headers)
    if host.endswith("runalloy.com") and not has_credentials:
        warnings.append(
            "No credentials configured (ALLOY_API_KEY or a token URL); Alloy will answer 401 Unauthorized."
        )

    display = _display_url(parts, url_token)
    return Endpoint(url=url, headers=headers, secrets=secret_forms(secrets), display_url=display,
                    warnings=tuple(warnings))


def _endpoint_url(settings: BridgeSettings) -> tuple[str, str | None]:
    """The endpoint URL and, for a token URL, its access token."""
    token = settings.access_token.get_secret_value() if settings.access_token else None
    if token is not None and not _TOKEN_CHARS.match(token):
        raise ConfigError("access_token", "may contain only letters, digits and . _ ~ -")
    if settings.server_id is not None and not _TOKEN_CHARS.match(settings.server_id):
        raise ConfigError("server_id", "may contain only letters, digits and . _ ~ - (no slashes or spaces)")

    if settings.mcp_url is not None:
        raw = settings.mcp_url.get_secret_value()
        _check_no_whitespace("mcp_url", raw)
        parts = _parse_http_url("mcp_url", raw)
        match = _ALLOY_PATH.match(parts.path)
        url_server = unquote(match["server"]) if match else None
        url_token = unquote(match["token"]) if match and match["token"] else None
        if settings.server_id is not None and url_server != settings.server_id:
            raise ConfigError(
                "server_id", "disagrees with the server id in ALLOY_MCP_URL; set only one of them"
            )
        if token is not None and url_token != token:
            raise ConfigError(
                "access_token", "disagrees with the token URL in ALLOY_MCP_URL; set only one of them"
            )
        return raw, url_token

    if settings.server_id is None:
        if token is not None:
            raise ConfigError("server_id", "is required with ALLOY_ACCESS_TOKEN to build the token URL")
        raise ConfigError(
            "mcp_url", "is required: set ALLOY_MCP_URL to the MCP endpoint, or ALLOY_SERVER_ID (with ALLOY_BASE_URL)"
        )
    _check_no_whitespace("base_url", settings.base_url)
    base = _parse_http_url("base_url", settings.base_url)
    if base.query or base.fragment:
        raise ConfigError("base_url", "must not have a query string or fragment")
    path = base.path.rstrip("/") + "/mcp/" + quote(settings.server_id, safe="")
    if token is not None:
        path += "/" + quote(token, safe="")
    return urlunsplit((base.scheme, base.netloc, path, "", "")), token


def _parse_http_url(setting: str, raw: str):
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(setting, "must be an http:// or https:// URL")
    if not parts.hostname:
        raise ConfigError(setting, "has no host name")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(setting, "must not contain a user name or password; use ALLOY_API_KEY or ALLOY_MCP_HEADERS")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ConfigError(setting, "has an invalid port") from None
    return parts


def _check_scheme(settings: BridgeSettings, parts) -> None:
    if parts.scheme == "https" or settings.allow_http or _is_loopback(parts.hostname or ""):
        return
    setting = "mcp_url" if settings.mcp_url is not None else "base_url"
    raise ConfigError(
        setting, "uses plain http:// to a non-loopback host; use https:// (or set ALLOY_ALLOW_HTTP=true if you must)"
    )


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _auth_headers(settings: BridgeSettings) -> dict[str, str]:
    headers: dict[str, str] = {}
    if settings.api_key is not None:
        headers["authorization"] = "Bearer " + settings.api_key.get_secret_value()
    if settings.user_id is not None:
        _check_header_safe("user_id", settings.user_id)
        headers["x-alloy-userid"] = settings.user_id
    if settings.user_token is not None:
        headers["x-alloy-user-token"] = settings.user_token.get_secret_value()
    if settings.credential_id is not None:
        _check_header_safe("credential_id", settings.credential_id)
        headers["x-credential-id"] = settings.credential_id
    if settings.redirect_uri is not None:
        _check_header_safe("redirect_uri", settings.redirect_uri)
        target = urlsplit(settings.redirect_uri)
        if target.scheme not in ("http", "https") or not target.netloc:
            raise ConfigError("redirect_uri", "must be an absolute http:// or https:// URL")
        headers["x-redirect-uri"] = settings.redirect_uri
    return headers


def _extra_headers(settings: BridgeSettings) -> dict[str, str]:
    if settings.mcp_headers is None:
        return {}
    try:
        parsed = json.loads(settings.mcp_headers.get_secret_value())
    except ValueError:
        raise ConfigError("mcp_headers", 'must be a JSON object such as {"X-Name": "value"}') from None
    if not isinstance(parsed, dict):
        raise ConfigError("mcp_headers", 'must be a JSON object such as {"X-Name": "value"}')
    headers: dict[str, str] = {}
    for name, value in parsed.items():
        if not _HEADER_NAME.match(name):
            raise ConfigError("mcp_headers", "contains an invalid header name (letters, digits and - only)")
        if name.lower() in _RESERVED_HEADERS:
            raise ConfigError("mcp_headers", f"must not set {name!r}: the bridge manages that header")
        if not isinstance(value, str):
            raise ConfigError("mcp_headers", f"header {name!r} must have a string value")
        _check_header_safe("mcp_headers", value, label=f"header {name!r}")
        headers[name] = value
    return headers


def header_value_problem(value: str, *, secret: bool = False) -> str | None:
    """Why `value` cannot be sent as an HTTP header value (header injection, a pasted newline), or None."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return "contains a line break or control character (check for a stray newline)"
    if secret and any(ch.isspace() for ch in value):
        return "contains whitespace; copy the secret again without spaces"
    if not value.isascii():
        return "contains non-ASCII characters, which HTTP headers cannot carry"
    return None


def _check_header_safe(setting: str, value: str, *, secret: bool = False, label: str | None = None) -> None:
    problem = header_value_problem(value, secret=secret)
    if problem is not None:
        raise ConfigError(setting, f"{label or 'the value'} {problem}")


def _check_no_whitespace(setting: str, value: str) -> None:
    if any(ch.isspace() or ord(ch) < 32 for ch in value):
        raise ConfigError(setting, "contains whitespace or a line break")


def _query_pairs(query: str) -> list[tuple[str, str]]:
    pairs = []
    for item in query.split("&"):
        if item:
            key, _, value = item.partition("=")
            pairs.append((key, value))
    return pairs


def _display_url(parts, token: str | None) -> str:
    """The endpoint URL with its token segment and query values masked, for logs and messages."""
    path = parts.path
    if token:
        path = path.replace(quote(token, safe=""), "***").replace(token, "***")
    query = "&".join(f"{key}=***" for key, _ in _query_pairs(parts.query))
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def secret_forms(secrets: list[str]) -> tuple[str, ...]:
    """Each secret plus its URL-encoded and JSON-escaped forms, longest first (redaction order)."""
    forms: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        forms.add(secret)
        forms.add(quote(secret, safe=""))
        forms.add(json.dumps(secret)[1:-1])
    return tuple(sorted(forms, key=len, reverse=True))
