"""Command line: `alloy-mcp-bridge [run] [--flags]`, `check`, `demo`, `--version`.

A thin dispatcher: it turns flags into setting overrides (each setting's flag
is its env var without `ALLOY_`, kebab-cased) and hands over to a command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from bridge import __version__

COMMANDS = ("run", "check", "demo")

# (setting, flag help, kind) — kept in step with bridge.settings.BridgeSettings (a test checks it).
_FLAGS: tuple[tuple[str, str, str], ...] = (
    ("mcp_url", "full MCP endpoint URL (ALLOY_MCP_URL)", "str"),
    ("server_id", "Alloy server id (ALLOY_SERVER_ID)", "str"),
    ("base_url", "base URL used with --server-id (ALLOY_BASE_URL)", "str"),
    ("access_token", "access token for the token URL (ALLOY_ACCESS_TOKEN); prefer the env var", "str"),
    ("api_key", "API key sent as a Bearer token (ALLOY_API_KEY); prefer the env var", "str"),
    ("user_id", "x-alloy-userid (ALLOY_USER_ID)", "str"),
    ("user_token", "x-alloy-user-token JWT (ALLOY_USER_TOKEN); prefer the env var", "str"),
    ("user_token_file", "file holding the user JWT, re-read when it changes (ALLOY_USER_TOKEN_FILE)", "str"),
    ("credential_id", "x-credential-id (ALLOY_CREDENTIAL_ID)", "str"),
    ("redirect_uri", "x-redirect-uri (ALLOY_REDIRECT_URI)", "str"),
    ("mcp_headers", "extra headers as a JSON object (ALLOY_MCP_HEADERS)", "str"),
    ("transport", "auto, streamable-http or sse (ALLOY_TRANSPORT)", "str"),
    ("connect_timeout", "seconds to connect (ALLOY_CONNECT_TIMEOUT)", "str"),
    ("read_timeout", "seconds of remote silence before a request fails (ALLOY_READ_TIMEOUT)", "str"),
    ("max_retries", "retries of requests the remote did not run (ALLOY_MAX_RETRIES)", "str"),
    ("retry_budget", "most seconds spent waiting to retry one request (ALLOY_RETRY_BUDGET)", "str"),
    ("max_message_bytes", "largest message accepted (ALLOY_MAX_MESSAGE_BYTES)", "str"),
    ("rate_limit", "pace requests, e.g. 100/min (ALLOY_RATE_LIMIT)", "str"),
    ("allowed_tools", "comma-separated tool globs to allow (ALLOY_ALLOWED_TOOLS)", "str"),
    ("blocked_tools", "comma-separated tool globs to block (ALLOY_BLOCKED_TOOLS)", "str"),
    ("ca_bundle", "PEM file of CA certificates to trust (ALLOY_CA_BUNDLE)", "str"),
    ("allow_http", "allow plain http:// to a non-loopback host (ALLOY_ALLOW_HTTP)", "flag"),
    ("log_level", "debug, info, warning or error (ALLOY_LOG_LEVEL)", "str"),
    ("log_file", "also write logs to this file (ALLOY_LOG_FILE)", "str"),
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alloy-mcp-bridge",
        description="A stdio MCP server that relays to a remote Streamable HTTP MCP server (Alloy or any other). "
        "Every flag has an ALLOY_* environment variable; flags win, then env vars, then .env.",
        epilog="Commands: run (default) serves stdio; check tests the configuration against the remote; "
        "demo runs a self-contained round trip.",
    )
    parser.add_argument("command", nargs="?", choices=COMMANDS, default="run", help="what to do (default: run)")
    parser.add_argument("--version", action="version", version=f"alloy-mcp-bridge {__version__}")
    parser.add_argument("--env-file", default=".env",
                        help="dotenv file to read (default: .env in the working directory)")
    for setting, text, kind in _FLAGS:
        flag = "--" + setting.replace("_", "-")
        if kind == "flag":
            parser.add_argument(flag, dest=setting, action="store_const", const=True, default=None, help=text)
        else:
            parser.add_argument(flag, dest=setting, default=None, metavar="VALUE", help=text)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> tuple[str, dict[str, Any], str | None]:
    """The command, the setting overrides given as flags, and the dotenv file."""
    args = _parser().parse_args(argv)
    overrides = {setting: getattr(args, setting) for setting, _, _ in _FLAGS if getattr(args, setting) is not None}
    env_file = args.env_file or None
    return args.command, overrides, env_file


def main(argv: Sequence[str] | None = None) -> int:
    command, overrides, env_file = parse_args(sys.argv[1:] if argv is None else argv)
    if command == "demo":
        from bridge.demo import run_demo

        return run_demo()
    if command == "check":
        from bridge.commands.check import check

        return check(overrides, env_file)
    from bridge.commands.run import run

    return run(overrides, env_file)


if __name__ == "__main__":
    raise SystemExit(main())
