"""Command line: `alloy-mcp-bridge [run] [--flags]`, `check`, `demo`, `--version`.

A thin dispatcher: it turns flags into setting overrides (each setting's flag
is its env var without `ALLOY_`, kebab-cased, generated from the settings
model) and hands over to a command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from bridge import __version__
from bridge.settings import describe, env_name, flag_name, is_flag, setting_names

COMMANDS = ("run", "check", "demo")


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
    for setting in setting_names():
        description, shown_default, secret = describe(setting)
        text = f"{_plain(description)} ({env_name(setting)}; default {shown_default})"
        if secret:
            text += "; prefer the env var"
        if is_flag(setting):
            parser.add_argument(flag_name(setting), dest=setting, action="store_const", const=True, default=None,
                                help=text)
        else:
            parser.add_argument(flag_name(setting), dest=setting, default=None, metavar="VALUE", help=text)
    return parser


def _plain(markdown: str) -> str:
    """A README description as terminal help text (no backticks; `%` escaped for argparse)."""
    return markdown.replace("`", "").replace("%", "%%")


def parse_args(argv: Sequence[str] | None = None) -> tuple[str, dict[str, Any], str | None]:
    """The command, the setting overrides given as flags, and the dotenv file."""
    args = _parser().parse_args(argv)
    overrides = {setting: getattr(args, setting) for setting in setting_names() if getattr(args, setting) is not None}
    env_file = args.env_file or None
    return args.command, overrides, env_file


def main(argv: Sequence[str] | None = None) -> int:
    command, overrides, env_file = parse_args(sys.argv[1:] if argv is None else argv)
    if command == "demo":
        from bridge.commands.demo import run_demo

        return run_demo()
    if command == "check":
        from bridge.commands.check import check

        return check(overrides, env_file)
    from bridge.commands.run import run

    return run(overrides, env_file)


if __name__ == "__main__":
    raise SystemExit(main())
