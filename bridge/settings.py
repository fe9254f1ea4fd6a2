"""Every setting of the bridge: its name, type, default and description, and how it is loaded and checked.

Settings come from CLI flags, then environment variables, then a `.env` file
(pydantic-settings; flags win). Each setting has one env var (`ALLOY_*`) and
one flag (`--*`, the env var without the prefix, kebab-cased). The model below
is the one table of settings: the CLI generates its flags from it, and README's
configuration table is checked against it.

`load_settings()` reads and checks each value on its own; what only makes sense
together (URLs, headers) is `bridge.endpoint`'s job. Both raise `ConfigError`
with a message that names the setting and never contains a secret value.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from bridge.pacing import parse_rate_limit
from bridge.secret_sources import SecretCommandError, read_secret_file, run_secret_command

ENV_PREFIX = "ALLOY_"
DEFAULT_BASE_URL = "https://mcp.runalloy.com"

LogLevel = Literal["debug", "info", "warning", "error"]
TransportMode = Literal["auto", "streamable-http", "sse"]
OAuthMode = Literal["auto", "on", "off"]


class ConfigError(Exception):
    """A setting is missing, malformed or contradicts another one.

    `setting` is a field name (`mcp_url`, shown as `ALLOY_MCP_URL (--mcp-url)`) or, for
    configuration that is not the bridge's own (`HTTPS_PROXY`), the variable's name as is.
    """

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        where = f"{env_name(setting)} ({flag_name(setting)})" if setting.islower() else setting
        super().__init__(f"{where}: {problem}")


def env_name(setting: str) -> str:
    """`mcp_url` -> `ALLOY_MCP_URL`."""
    return ENV_PREFIX + setting.upper()


def flag_name(setting: str) -> str:
    """`mcp_url` -> `--mcp-url`."""
    return "--" + setting.replace("_", "-")


def _setting(default: Any, text: str, *, shown_default: str = "—", secret: bool = False) -> Any:
    """A setting: its default, its description (CLI help and README), the default as README shows it, secrecy."""
    return Field(default, description=text, json_schema_extra={"shown_default": shown_default, "secret": secret})


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
    mcp_url: SecretStr | None = _setting(None,
        "Full endpoint URL: `https://…/mcp/{serverId}`, a token URL `…/mcp/{serverId}/{accessToken}`, or any "
        "Streamable HTTP / SSE MCP endpoint.", secret=True)
    server_id: str | None = _setting(None,
        "Alloy server id; with `ALLOY_BASE_URL` the bridge builds `/mcp/{serverId}` (alternative to the URL).")
    base_url: str = _setting(DEFAULT_BASE_URL, "Base URL used with `ALLOY_SERVER_ID`.",
                             shown_default=DEFAULT_BASE_URL)
    access_token: SecretStr | None = _setting(None,
        "With `ALLOY_SERVER_ID`: builds the token URL `/mcp/{serverId}/{accessToken}` (no headers needed).",
        secret=True)
    # Authentication headers.
    api_key: SecretStr | None = _setting(None, "Sent as `Authorization: Bearer <key>`.", secret=True)
    user_id: str | None = _setting(None, "Sent as `x-alloy-userid`.")
    user_token: SecretStr | None = _setting(None,
        "Sent as `x-alloy-user-token` (a JWT isolating one end user).", secret=True)
    user_token_file: Path | None = _setting(None,
        "A file holding the user JWT instead; re-read whenever it changes (and after a 401), so a token can be "
        "rotated without restarting the client.")
    user_token_command: str | None = _setting(None,
        "A command whose output is the user JWT, e.g. `op read op://vault/alloy/jwt` (run without a shell); run "
        "again shortly before the JWT's `exp` and once after a 401.")
    api_key_file: Path | None = _setting(None, "A file holding the API key (Docker and Kubernetes secrets).")
    api_key_command: str | None = _setting(None,
        "A command whose output is the API key, e.g. `op read op://vault/alloy/api-key`; run again once after "
        "a 401.")
    access_token_file: Path | None = _setting(None, "A file holding the access token of a token URL.")
    mcp_url_file: Path | None = _setting(None, "A file holding the endpoint URL (a token URL is a secret).")
    mcp_headers_file: Path | None = _setting(None, "A file holding `ALLOY_MCP_HEADERS`' JSON object.")
    # OAuth 2.1, for remotes that require the MCP authorization flow.
    oauth: OAuthMode = _setting("auto",
        "`auto`: sign in with OAuth when the remote asks for it (a 401 with a Bearer challenge) and no API key, "
        "user token or token URL is configured; `on`: always; `off`: never (the 401 is reported).",
        shown_default="auto")
    oauth_client_id: str | None = _setting(None,
        "A client id registered with the remote's authorization server (instead of dynamic registration).")
    oauth_client_secret: SecretStr | None = _setting(None, "Its secret, for a confidential client.", secret=True)
    oauth_scope: str | None = _setting(None,
        "Scopes to ask for (space-separated); default: what the remote advertises.")
    oauth_callback_port: int | None = _setting(None,
        "The loopback port the browser returns to (`http://127.0.0.1:PORT/callback`); default: a free port, "
        "kept once registered.")
    oauth_timeout: float = _setting(300.0,
        "Seconds to wait for the sign-in in the browser before the request fails.", shown_default="300")
    oauth_dir: Path | None = _setting(None,
        "Where tokens are stored (one file per remote, readable by you only).",
        shown_default="your config dir")
    credential_id: str | None = _setting(None, "Sent as `x-credential-id` (forces one stored credential).")
    redirect_uri: str | None = _setting(None, "Sent as `x-redirect-uri` (where an OAuth flow returns).")
    mcp_headers: SecretStr | None = _setting(None,
        "Extra headers for any remote, as a JSON object, e.g. `{\"X-Team\": \"a\"}`. Values are treated as "
        "secrets.", secret=True)
    # Behaviour.
    transport: TransportMode = _setting("auto",
        "`auto` (Streamable HTTP, falling back to legacy HTTP+SSE when the endpoint answers 404/405), "
        "`streamable-http`, or `sse`.", shown_default="auto")
    connect_timeout: float = _setting(10.0,
        "Seconds to establish a connection; also how long the bridge keeps retrying a remote that stopped "
        "answering (before any session existed, 1.5 s at most).", shown_default="10")
    read_timeout: float = _setting(120.0,
        "Seconds without a message from the remote before a request fails (each progress notification restarts "
        "the clock; SSE comments do not).", shown_default="120")
    max_retries: int = _setting(4,
        "Retries of a request the remote rejected without running it (429, 503, connection refused).",
        shown_default="4")
    retry_budget: float = _setting(30.0,
        "Most seconds spent waiting between retries of one request, `Retry-After` included.", shown_default="30")
    max_message_bytes: int = _setting(64 * 1024 * 1024,
        "Largest single message accepted from either side (64 MiB).", shown_default="67108864")
    rate_limit: str | None = _setting(None,
        "Pace requests to the remote to at most N per period, e.g. `100/min` (Alloy's default limit) or `5/2s`, "
        "instead of waiting for 429s.", shown_default="off")
    read_only: bool = _setting(False,
        "Only tools annotated `readOnlyHint: true` are listed and callable; others (unannotated ones too) are "
        "hidden and refused locally.", shown_default="false")
    allowed_tools: str | None = _setting(None,
        "Comma-separated tool names or globs the desktop may see and call; others are hidden and refused.")
    blocked_tools: str | None = _setting(None,
        "Comma-separated tool names or globs hidden from `tools/list` and refused on `tools/call`.")
    ca_bundle: Path | None = _setting(None,
        "PEM file of CA certificates to trust for an HTTPS remote (e.g. a self-signed or corporate CA).",
        shown_default="system store")
    allow_http: bool = _setting(False,
        "Allow plain `http://` to a host that is not loopback (never do this with real credentials).",
        shown_default="false")
    log_level: LogLevel = _setting("info",
        "`debug`, `info`, `warning` or `error`. Logs go to stderr (and the log file), never stdout.",
        shown_default="info")
    log_file: Path | None = _setting(None, "Also append logs to this file (created readable by you only).")
    log_max_bytes: int = _setting(10 * 1024 * 1024,
        "Size at which the log file is rotated (10 MiB).", shown_default="10485760")
    log_backups: int = _setting(3, "Rotated log files kept (`bridge.log.1` …).", shown_default="3")
    trace: bool = _setting(False,
        "Log one line per JSON-RPC message each way (direction, method, id, size, time since the request); "
        "never payloads.", shown_default="false")
    stream_idle_timeout: float = _setting(300.0,
        "Seconds without a byte on a long-lived stream (server-to-client, subscriptions, legacy SSE) before it "
        "is taken for dead and re-opened.", shown_default="300")


def setting_names() -> tuple[str, ...]:
    """Every setting, in the model's (and README's) order."""
    return tuple(BridgeSettings.model_fields)


def describe(setting: str) -> tuple[str, str, bool]:
    """A setting's description, its default as README shows it, and whether it is a secret."""
    field = BridgeSettings.model_fields[setting]
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return field.description or "", str(extra.get("shown_default", "—")), bool(extra.get("secret"))


def is_flag(setting: str) -> bool:
    """Whether the setting is a switch (`--allow-http`) rather than a flag taking a value."""
    return BridgeSettings.model_fields[setting].annotation is bool


def unknown_variables(environ: dict[str, str]) -> list[str]:
    """Warnings for `ALLOY_*` variables that are no setting (a typo silently ignored costs an afternoon)."""
    import difflib

    known = [env_name(name) for name in BridgeSettings.model_fields]
    warnings = []
    for name in sorted(environ):
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and upper not in known:
            close = difflib.get_close_matches(upper, known, n=1, cutoff=0.75)
            guess = f" (did you mean {close[0]}?)" if close else ""
            warnings.append(f"{name} is not a setting of this bridge and is ignored{guess}")
    return warnings


def overrides_from(args: Any) -> dict[str, Any]:
    """The settings given as command-line flags (attributes of a parsed namespace named like settings)."""
    return {name: getattr(args, name) for name in BridgeSettings.model_fields if getattr(args, name, None) is not None}


def load_settings(overrides: dict[str, Any] | None = None, *, env_file: str | None = ".env") -> BridgeSettings:
    """Read the settings; `overrides` (from CLI flags) win over env vars and `.env`.

    Raises:
        ConfigError: a value is empty, of the wrong type or out of range; the message names the setting.
    """
    init = {key: value for key, value in (overrides or {}).items() if value is not None}
    if env_file and env_file != ".env" and not Path(env_file).is_file():
        raise ConfigError("--env-file", f"{env_file} is not a readable file")
    try:
        settings = BridgeSettings(_env_file=env_file, **init)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise _config_error_from(exc) from None
    _check_values(settings)
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
        "finite_number": "must be a finite number",
    }.get(kind, error["msg"])
    if kind == "literal_error":
        expected = "must be one of: " + error["msg"].split("Input should be ", 1)[-1].replace("'", "")
    return ConfigError(setting, expected)


# Each secret and its other sources: (field, file field, command field).
SECRET_SOURCES = (
    ("mcp_url", "mcp_url_file", None),
    ("access_token", "access_token_file", None),
    ("api_key", "api_key_file", "api_key_command"),
    ("user_token", "user_token_file", "user_token_command"),
    ("mcp_headers", "mcp_headers_file", None),
)


def resolve_secrets(settings: BridgeSettings, *, run_commands: bool = True) -> BridgeSettings:
    """The settings with secrets from files and commands in their fields (the user token file excepted: it
    is re-read while the bridge runs). Without `run_commands`, command-sourced secrets stay unset.

    Raises:
        ConfigError: naming the file or command setting that failed (never showing a secret).
    """
    update: dict[str, Any] = {}
    for name, file_field, command_field in SECRET_SOURCES:
        path = getattr(settings, file_field)
        if path is not None and name != "user_token":
            update[name] = SecretStr(read_file_setting(file_field, path))
        command = getattr(settings, command_field) if command_field else None
        if command is not None and run_commands:
            try:
                update[name] = SecretStr(run_secret_command(command))
            except SecretCommandError as exc:
                raise ConfigError(str(command_field), f"the command {exc}") from None
    return settings.model_copy(update=update) if update else settings


def read_file_setting(setting: str, path: Path) -> str:
    """The secret in the file a `*_FILE` setting names; a `ConfigError` naming the setting otherwise."""
    try:
        value = read_secret_file(path)
    except (OSError, UnicodeDecodeError):
        raise ConfigError(setting, "is not a readable file") from None
    if not value:
        raise ConfigError(setting, "is empty")
    return value


_PLACEHOLDER = re.compile(r"<(ALLOY_[A-Z_]+|ACCESS_TOKEN)>")


def _check_values(settings: BridgeSettings) -> None:
    for name in BridgeSettings.model_fields:
        value = getattr(settings, name)
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(raw, str) and not raw.strip():
            raise ConfigError(name, "is set but empty; remove it or give it a value")
        if isinstance(raw, str) and (found := _PLACEHOLDER.search(raw)):
            raise ConfigError(name, f"still holds the placeholder {found.group()} that `config` wrote; put the real "
                                    "value there")
    for name, low in (("connect_timeout", 0.1), ("read_timeout", 0.1), ("retry_budget", 0.0)):
        value = getattr(settings, name)
        if not value >= low or value == float("inf"):  # `not >=` also refuses NaN
            raise ConfigError(name, f"must be a number of seconds, at least {low}")
    if settings.max_retries < 0:
        raise ConfigError("max_retries", "must be 0 or more")
    if settings.max_message_bytes < 10 * 1024 * 1024:
        raise ConfigError("max_message_bytes", "must be at least 10485760 (10 MiB, the largest body Alloy sends)")
    if settings.ca_bundle is not None and not settings.ca_bundle.is_file():
        raise ConfigError("ca_bundle", "is not a readable file")
    if settings.rate_limit is not None and parse_rate_limit(settings.rate_limit) is None:
        raise ConfigError("rate_limit", "must look like 100/min, 600/hour or 5/2s (requests per period)")
    if settings.log_max_bytes < 1024:
        raise ConfigError("log_max_bytes", "must be at least 1024")
    if settings.log_backups < 0:
        raise ConfigError("log_backups", "must be 0 or more")
    if not settings.stream_idle_timeout >= 1 or settings.stream_idle_timeout == float("inf"):
        raise ConfigError("stream_idle_timeout", "must be a number of seconds, at least 1")
    if not settings.oauth_timeout >= 5 or settings.oauth_timeout == float("inf"):
        raise ConfigError("oauth_timeout", "must be a number of seconds, at least 5")
    if settings.oauth_callback_port is not None and not 1 <= settings.oauth_callback_port <= 65535:
        raise ConfigError("oauth_callback_port", "must be a port number (1-65535)")
    if settings.oauth == "on" and (settings.api_key or settings.api_key_file or settings.api_key_command):
        raise ConfigError("oauth", "is on, and an API key is configured too; use one of them")
    if settings.oauth_client_secret is not None and settings.oauth_client_id is None:
        raise ConfigError("oauth_client_secret", "needs ALLOY_OAUTH_CLIENT_ID")
    for name, file_field, command_field in SECRET_SOURCES:
        given = [field for field in (name, file_field, command_field) if field and getattr(settings, field)]
        if len(given) > 1:
            raise ConfigError(given[1], f"conflicts with {env_name(given[0])}; set only one of them")
        path = getattr(settings, file_field)
        if path is not None:
            value = read_file_setting(file_field, path)
            if name in ("api_key", "user_token", "access_token") and (
                    any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value) or not value.isascii()):
                raise ConfigError(file_field, "the secret in the file contains whitespace, a control character "
                                              "or non-ASCII characters; copy it again")
