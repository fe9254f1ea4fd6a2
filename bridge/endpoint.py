"""Where the bridge connects and with what: the remote's URL and headers from the settings, and what is secret.

`resolve_endpoint()` validates the settings that only make sense together (a
server id and a URL that must agree, a token URL, header values that must be
safe to send) and builds the one thing the rest of the bridge needs, an
`Endpoint`. Every failure is a `ConfigError` naming the setting, never showing
a secret value.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from urllib.parse import SplitResult, quote, unquote, urlsplit, urlunsplit

from bridge.settings import BridgeSettings, ConfigError, read_file_setting

# A run of 16+ letters and digits, both present: a random token, not a word or a dashed id.
_TOKEN_RUN = re.compile(r"(?=[A-Za-z_]*[0-9])(?=[0-9_]*[A-Za-z])[A-Za-z0-9_]{16,}")
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9._~\-]+$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_ALLOY_PATH = re.compile(r"^(?P<prefix>.*?/mcp)/(?P<server>[^/]+)(?:/(?P<token>[^/]+))?/?$")
# A host (name, IPv4 or bracketed IPv6) and an optional port: what httpx2 will accept as an authority.
_AUTHORITY = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^\[\]:@/?#]+)(:\d{1,5})?$")
# Headers the bridge owns: setting them from configuration would break the protocol.
_RESERVED_HEADERS = frozenset(
    {"host", "content-length", "content-type", "accept", "mcp-session-id", "mcp-protocol-version", "last-event-id",
     "transfer-encoding", "connection"}
)
_SECRET_FIELDS = ("api_key", "user_token", "access_token")


@dataclass(frozen=True)
class Endpoint:
    """Where the bridge connects and with what: the product of validated settings.

    `url` may contain an access token; print `display_url` instead. `secrets`
    lists every value the redaction must hide (`SecretList` adds their other spellings).
    """

    url: str
    headers: dict[str, str] = field(repr=False)
    secrets: tuple[str, ...] = field(repr=False)
    display_url: str = ""
    warnings: tuple[str, ...] = ()
    has_url_token: bool = False  # the URL itself carries the credential (`/mcp/{serverId}/{accessToken}`)

    def __repr__(self) -> str:
        return f"Endpoint(url={self.display_url!r}, headers=[{', '.join(sorted(self.headers))}])"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def is_loopback(self) -> bool:
        return is_loopback(self.host)


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
        secrets.append(read_file_setting("user_token_file", settings.user_token_file))

    url, url_token, written_token = _endpoint_url(settings)
    parts = urlsplit(url)
    hidden_segments = [] if url_token else _token_segments(parts.path)
    if url_token:
        secrets += [url_token, written_token]
    for segment in hidden_segments:
        secrets += [segment, unquote(segment)]
    for _, value in _query_pairs(parts.query):
        if len(value) >= 4:
            secrets += [value, unquote(value)]
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

    display = _display_url(parts, [written_token] if url_token else hidden_segments)
    return Endpoint(url=url, headers=headers, secrets=_distinct(secrets), display_url=display,
                    warnings=tuple(warnings), has_url_token=bool(url_token))


def resolve_management_endpoint(settings: BridgeSettings) -> Endpoint:
    """The Server Management API (`{ALLOY_BASE_URL}/api/servers`) with the key and user headers.

    Raises:
        ConfigError: no API key, or a malformed base URL or header value.
    """
    if settings.api_key is None:
        raise ConfigError("api_key", "is required to manage servers (the management API takes the API key)")
    _check_no_whitespace("base_url", settings.base_url)
    base = parse_http_url("base_url", settings.base_url)
    if base.query or base.fragment:
        raise ConfigError("base_url", "must not have a query string or fragment")
    url = urlunsplit((base.scheme, base.netloc, base.path.rstrip("/") + "/api/servers", "", ""))
    if not (base.scheme == "https" or settings.allow_http or is_loopback(base.hostname or "")):
        raise ConfigError("base_url", "uses plain http:// to a non-loopback host; use https:// "
                                      "(or set ALLOY_ALLOW_HTTP=true if you must)")
    secrets = [settings.api_key.get_secret_value()]
    _check_header_safe("api_key", secrets[0], secret=True)
    headers = {"authorization": "Bearer " + secrets[0]}
    if settings.user_id is not None:
        _check_header_safe("user_id", settings.user_id)
        headers["x-alloy-userid"] = settings.user_id
    if settings.user_token is not None:
        _check_header_safe("user_token", settings.user_token.get_secret_value(), secret=True)
        headers["x-alloy-user-token"] = settings.user_token.get_secret_value()
        secrets.append(settings.user_token.get_secret_value())
    if settings.user_token_file is not None:
        secrets.append(read_file_setting("user_token_file", settings.user_token_file))
    return Endpoint(url=url, headers=headers, secrets=_distinct(secrets), display_url=url)


def _endpoint_url(settings: BridgeSettings) -> tuple[str, str | None, str]:
    """The endpoint URL, a token URL's access token (decoded) and the token as written in the URL."""
    token = settings.access_token.get_secret_value() if settings.access_token else None
    if token is not None:
        _check_path_segment("access_token", token)
    if settings.server_id is not None:
        _check_path_segment("server_id", settings.server_id, what="no slashes or spaces")

    if settings.mcp_url is not None:
        raw = settings.mcp_url.get_secret_value()
        _check_no_whitespace("mcp_url", raw)
        parts = parse_http_url("mcp_url", raw)
        match = _ALLOY_PATH.match(parts.path)
        url_server = unquote(match["server"]) if match else None
        written = match["token"] if match and match["token"] else ""
        url_token = unquote(written) if written else None
        if settings.server_id is not None and url_server != settings.server_id:
            raise ConfigError("server_id", "disagrees with the server id in ALLOY_MCP_URL; set only one of them")
        if token is not None and url_token != token:
            raise ConfigError("access_token", "disagrees with the token URL in ALLOY_MCP_URL; set only one of them")
        return raw, url_token, written

    if settings.server_id is None:
        if token is not None:
            raise ConfigError("server_id", "is required with ALLOY_ACCESS_TOKEN to build the token URL")
        raise ConfigError(
            "mcp_url", "is required: set ALLOY_MCP_URL to the MCP endpoint, or ALLOY_SERVER_ID (with ALLOY_BASE_URL)"
        )
    _check_no_whitespace("base_url", settings.base_url)
    base = parse_http_url("base_url", settings.base_url)
    if base.query or base.fragment:
        raise ConfigError("base_url", "must not have a query string or fragment")
    path = base.path.rstrip("/") + "/mcp/" + quote(settings.server_id, safe="")
    written = ""
    if token is not None:
        written = quote(token, safe="")
        path += "/" + written
    return urlunsplit((base.scheme, base.netloc, path, "", "")), token, written


def _check_path_segment(setting: str, value: str, what: str = "") -> None:
    if not _TOKEN_CHARS.match(value):
        extra = f" ({what})" if what else ""
        raise ConfigError(setting, f"may contain only letters, digits and . _ ~ -{extra}")
    if value in (".", ".."):
        raise ConfigError(setting, "must not be '.' or '..' (it would walk the URL path)")


def parse_http_url(setting: str, raw: str) -> SplitResult:
    """An absolute http(s) URL with a host and no user info, or a `ConfigError` naming `setting`."""
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ConfigError(setting, "is not a valid URL (check the host, brackets and port)") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError(setting, "must be an http:// or https:// URL")
    if not parts.hostname:
        raise ConfigError(setting, "has no host name")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(setting, "must not contain a user name or password; use ALLOY_API_KEY or ALLOY_MCP_HEADERS")
    if not _AUTHORITY.match(parts.netloc):
        raise ConfigError(setting, "is not a valid URL (check the host, brackets and port)")
    return parts


def _check_scheme(settings: BridgeSettings, parts: SplitResult) -> None:
    if parts.scheme == "https" or settings.allow_http or is_loopback(parts.hostname or ""):
        return
    setting = "mcp_url" if settings.mcp_url is not None else "base_url"
    raise ConfigError(
        setting, "uses plain http:// to a non-loopback host; use https:// (or set ALLOY_ALLOW_HTTP=true if you must)"
    )


def is_loopback(host: str) -> bool:
    """`localhost`, 127.0.0.0/8 or ::1."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
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
        try:
            target = urlsplit(settings.redirect_uri)
        except ValueError:
            raise ConfigError("redirect_uri", "must be an absolute http:// or https:// URL") from None
        if target.scheme not in ("http", "https") or not target.netloc:
            raise ConfigError("redirect_uri", "must be an absolute http:// or https:// URL")
        headers["x-redirect-uri"] = settings.redirect_uri
    return headers


def _extra_headers(settings: BridgeSettings) -> dict[str, str]:
    if settings.mcp_headers is None:
        return {}
    try:
        parsed = json.loads(settings.mcp_headers.get_secret_value())
    except (ValueError, RecursionError):
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


def _token_segments(path: str) -> list[str]:
    """Path segments shaped like a secret (a token URL that is not Alloy's, e.g. `/api/mcp/s/<token>/mcp`):
    a run of 16+ letters and digits mixed. When in doubt, hide."""
    alloy = _ALLOY_PATH.match(path)
    server = alloy["server"] if alloy else None  # an Alloy server id is not a secret (its token is handled apart)
    return [segment for segment in path.split("/") if segment != server and any(
        _TOKEN_RUN.fullmatch(run) for run in re.findall(r"[A-Za-z0-9_]{16,}", segment))]


def _display_url(parts: SplitResult, written_tokens: list[str]) -> str:
    """The endpoint URL with its token segments and query values masked, for logs and messages."""
    hidden = set(written_tokens)
    path = "/".join("***" if segment in hidden else segment for segment in parts.path.split("/"))
    query = "&".join(f"{key}=***" for key, _ in _query_pairs(parts.query))
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def _distinct(secrets: list[str]) -> tuple[str, ...]:
    """The secrets as given (every spelling of each is added by `SecretList`)."""
    return tuple(dict.fromkeys(secret for secret in secrets if secret))
