"""Command line: `alloy-mcp-bridge [COMMAND] [--flags]`; `run` when no command is given.

A thin dispatcher. Every setting is a flag on every command that reads the
configuration (generated from the settings model: each flag is its env var
without `ALLOY_`, kebab-cased); each command adds its own flags and runs from
its module in `bridge/commands/`. A mistake on the command line is one line
on stderr naming it, and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from bridge import __version__
from bridge.commands.options import CONFIG_OPTIONS, SERVERS_VALUE_FLAGS
from bridge.settings import describe, env_name, flag_name, is_flag, overrides_from, setting_names

PROG = "alloy-mcp-bridge"
EXIT_USAGE = 2


@dataclass(frozen=True)
class Command:
    summary: str
    example: str
    settings: bool = True  # takes the settings flags
    positionals: tuple[tuple[str, str], ...] = ()  # (name, help)
    options: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = ()


COMMANDS: dict[str, Command] = {
    "run": Command(
        "serve the desktop on stdio, relaying to the remote (the default)",
        "ALLOY_SERVER_ID=srv_1 ALLOY_API_KEY=... ALLOY_USER_ID=u1 alloy-mcp-bridge",
    ),
    "check": Command(
        "test the configuration against the remote and report what it serves",
        "alloy-mcp-bridge check --json",
        options=((("--json",), {"action": "store_true", "help": "print one JSON document instead of lines"}),),
    ),
    "config": Command(
        "print (or install) the client config entry that starts this bridge with the current settings",
        "alloy-mcp-bridge config claude-desktop --install",
        positionals=(("client", "claude-desktop, claude-code, cursor, vscode, windsurf, zed, gemini-cli or codex"),),
        options=CONFIG_OPTIONS,
    ),
    "servers": Command(
        "manage Alloy MCP servers: list, get, create, update, delete, connect",
        "alloy-mcp-bridge servers create crm --allow-connector hubspot && alloy-mcp-bridge servers list",
        settings=False,  # each action takes the settings flags itself
    ),
    "login": Command(
        "sign in to an OAuth remote in the browser and store the tokens (before a client starts the bridge)",
        "ALLOY_MCP_URL=https://mcp.example.com/mcp alloy-mcp-bridge login",
    ),
    "logout": Command(
        "forget the OAuth tokens and the registered client for the configured remote",
        "ALLOY_MCP_URL=https://mcp.example.com/mcp alloy-mcp-bridge logout",
    ),
    "demo": Command(
        "a self-contained round trip: a local Alloy-style server, the bridge, a real MCP client",
        "alloy-mcp-bridge demo",
        settings=False,
    ),
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line naming it (no usage dump), exit 2."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix(PROG).strip()
        where = f"{PROG} {command} --help" if command else f"{PROG} --help"
        print(f"{PROG}: error: {message} (see {where})", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _known_flags() -> set[str]:
    flags = {"--env-file", "--version", "--help", "-h"} | {flag_name(name) for name in setting_names()}
    for command in COMMANDS.values():
        for names, _ in command.options:
            flags |= set(names)
    return flags


def _value_flags() -> set[str]:
    flags = {"--env-file", *SERVERS_VALUE_FLAGS}
    flags |= {flag_name(name) for name in setting_names() if not is_flag(name)}
    for command in COMMANDS.values():
        for names, options in command.options:
            if options.get("action") is None:
                flags |= set(names)
    return flags


def split_command(argv: Sequence[str]) -> tuple[str, list[str]]:
    """The command named in `argv` (the first word that is not a flag or a flag's value) and the rest."""
    values = _value_flags()
    known = _known_flags()
    skip = False
    previous = ""
    for index, token in enumerate(argv):
        if skip:
            skip = False
            continue
        if token == "--":
            break
        if token.startswith("-"):
            skip = token in values
            previous = token
            continue
        if token in COMMANDS:
            return token, [*argv[:index], *argv[index + 1:]]
        if previous.startswith("--") and previous.split("=", 1)[0] not in known:
            _Parser(prog=PROG).error(f"unrecognized argument {previous}")
        _Parser(prog=PROG).error(f"unknown command {token!r}; commands: {', '.join(COMMANDS)}")
    return "run", list(argv)


def build_parser(command: str) -> argparse.ArgumentParser:
    spec = COMMANDS[command]
    prog = PROG if command == "run" else f"{PROG} {command}"
    if command == "run":
        listing = "\n".join(f"  {name:<8} {cmd.summary}" for name, cmd in COMMANDS.items())
        description = (
            "A stdio MCP server that relays to a remote Streamable HTTP MCP server (Alloy or any other).\n\n"
            f"commands:\n{listing}\n\n`{PROG} COMMAND --help` for each. Every flag has an ALLOY_* environment "
            "variable; flags win, then env vars, then .env."
        )
    else:
        description = spec.summary[0].upper() + spec.summary[1:] + "."
    parser = _Parser(prog=prog, description=description, epilog=f"example:\n  {spec.example}",
                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    for name, text in spec.positionals:
        parser.add_argument(name, help=text)
    for names, options in spec.options:
        parser.add_argument(*names, **options)
    if spec.settings:
        add_settings(parser)
    if command == "servers":
        from bridge.commands.servers import add_arguments

        add_arguments(parser, _Parser, add_settings)
    return parser


def add_settings(parser: argparse.ArgumentParser) -> None:
    """Every setting as a flag (generated from the settings model), plus `--env-file`."""
    group = parser.add_argument_group("settings (each also an ALLOY_* environment variable)")
    group.add_argument("--env-file", default=".env", metavar="PATH",
                       help="dotenv file to read (default: .env in the working directory)")
    for setting in setting_names():
        description_text, shown_default, secret = describe(setting)
        text = f"{_plain(description_text)} ({env_name(setting)}; default {shown_default})"
        if secret:
            text += "; prefer the env var"
        if is_flag(setting):
            group.add_argument(flag_name(setting), dest=setting, action="store_const", const=True,
                               default=None, help=text)
        else:
            group.add_argument(flag_name(setting), dest=setting, default=None, metavar="VALUE", help=text)


def _plain(markdown: str) -> str:
    """A README description as terminal help text (no backticks; `%` escaped for argparse)."""
    return markdown.replace("`", "").replace("%", "%%")


def parse_args(argv: Sequence[str] | None = None) -> tuple[str, dict[str, Any], str | None]:
    """The command, the setting overrides given as flags, and the dotenv file."""
    command, args = parse(argv)
    return command, overrides_of(args), getattr(args, "env_file", ".env") or None


def parse(argv: Sequence[str] | None = None) -> tuple[str, argparse.Namespace]:
    """The command and its parsed arguments."""
    command, rest = split_command(list(sys.argv[1:] if argv is None else argv))
    return command, build_parser(command).parse_args(rest)


def overrides_of(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags."""
    return overrides_from(args)


def _handler(command: str) -> Callable[[argparse.Namespace], int]:
    if command == "demo":
        from bridge.commands.demo import main as demo_main

        return demo_main
    if command == "check":
        from bridge.commands.check import main as check_main

        return check_main
    if command == "config":
        from bridge.commands.config import main as config_main

        return config_main
    if command == "servers":
        from bridge.commands.servers import main as servers_main

        return servers_main
    if command in ("login", "logout"):
        from bridge.commands import login

        return login.login if command == "login" else login.logout
    from bridge.commands.run import main as run_main

    return run_main


def main(argv: Sequence[str] | None = None) -> int:
    command, args = parse(argv)
    return _handler(command)(args)


if __name__ == "__main__":
    raise SystemExit(main())
