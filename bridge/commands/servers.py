"""`alloy-mcp-bridge servers …`: create, restrict, list and connect Alloy MCP servers from the command line.

Auth and base URL come from the bridge's own settings (`ALLOY_API_KEY`,
`ALLOY_USER_ID` / `ALLOY_USER_TOKEN`, `ALLOY_BASE_URL`, flags and `.env`);
`ALLOY_SERVER_ID` is not needed. Tables by default, `--json` for the API's
objects as received. The access token (and the access URL embedding it) is
shown once, by `create`, and by no other command.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import anyio

from bridge.commands.options import CONFIG_OPTIONS
from bridge.endpoint import resolve_management_endpoint
from bridge.http import remote_http
from bridge.logs import SecretList, configure_logging
from bridge.management import (
    CATEGORIES,
    ManagementError,
    RestrictionChange,
    ServerManagement,
    merge_restrictions,
    restrictions_from,
    without_secrets,
)
from bridge.settings import BridgeSettings, ConfigError, overrides_from

EXIT_FAILED = 1
EXIT_USAGE = 2


def add_arguments(parser: argparse.ArgumentParser, parser_class: type[argparse.ArgumentParser],
                  add_settings: Any) -> None:
    """The `servers` sub-commands and their flags (the settings flags come from `add_settings`)."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=parser_class, required=True)

    def sub(name: str, summary: str, example: str) -> argparse.ArgumentParser:
        command = actions.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".",
                                     epilog=f"example:\n  {example}", allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
        if name != "connect":
            command.add_argument("--json", action="store_true", help="print the API's objects as received")
        return command

    sub("list", "list your MCP servers", "alloy-mcp-bridge servers list")
    sub("get", "show one server", "alloy-mcp-bridge servers get srv_123").add_argument("id", help="server id")
    create = sub("create", "create a server; its access token is shown once",
                 "alloy-mcp-bridge servers create crm-readonly --allow-connector hubspot --block-action "
                 "hubspot_delete_contact")
    create.add_argument("name", help="1-100 characters, unique among your servers")
    _describe_flags(create, public_switch=False)
    create.add_argument("--token-days", type=_token_days, metavar="N",
                        help="days until the access token expires (1-365)")
    _restriction_flags(create)
    update = sub("update", "change a server (restrictions given replace the old ones whole)",
                 "alloy-mcp-bridge servers update srv_123 --allow-action hubspot_get_contact --merge-restrictions")
    update.add_argument("id", help="server id")
    update.add_argument("--name", help="a new name")
    _describe_flags(update, public_switch=True)
    _restriction_flags(update)
    update.add_argument("--merge-restrictions", action="store_true",
                        help="merge the restrictions given with the server's current ones instead of replacing them")
    delete = sub("delete", "delete a server", "alloy-mcp-bridge servers delete srv_123 --yes")
    delete.add_argument("id", help="server id")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    connect = sub("connect", "print or install the client config entry for a server",
                  "alloy-mcp-bridge servers connect srv_123 claude-desktop --install")
    connect.add_argument("id", help="server id")
    connect.add_argument("client", help="claude-desktop, claude-code, cursor, vscode, windsurf, zed, gemini-cli "
                                        "or codex")
    for names, options in CONFIG_OPTIONS:
        if names == ("--name",):
            options = {**options, "default": None, "help": "the entry's name (default: alloy-<server name>)"}
        connect.add_argument(*names, **options)
    for command in actions.choices.values():
        add_settings(command)


def _token_days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days") from None
    if not 1 <= days <= 365:
        raise argparse.ArgumentTypeError("must be between 1 and 365")
    return days


def _describe_flags(parser: argparse.ArgumentParser, *, public_switch: bool) -> None:
    parser.add_argument("--description", metavar="TEXT")
    parser.add_argument("--instructions", metavar="TEXT", help="custom instructions for the assistant")
    visibility = parser.add_mutually_exclusive_group()
    visibility.add_argument("--public", dest="public", action="store_const", const=True, default=None,
                            help="make the server public")
    if public_switch:
        visibility.add_argument("--private", dest="public", action="store_const", const=False,
                                help="make the server private")


def _restriction_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("restrictions (least privilege: allow only what the assistant needs)")
    for noun, _, _, _ in CATEGORIES:
        group.add_argument(f"--allow-{noun}", action="append", default=[], metavar="ID",
                           help=f"make {noun}s an allowlist with this id (repeatable)")
        group.add_argument(f"--block-{noun}", action="append", default=[], metavar="ID",
                           help=f"make {noun}s a blocklist with this id (repeatable)")
    group.add_argument("--restrictions-file", metavar="FILE",
                       help="a JSON restrictions object ({connectors, actions, users}); flags override its categories")


def main(args: argparse.Namespace) -> int:
    """`alloy-mcp-bridge servers ACTION …`."""
    from bridge.commands.run import load_configuration

    if args.action == "connect":
        return _connect(args)
    settings, endpoint = load_configuration(overrides_from(args), args.env_file or None,
                                            endpoint_of=resolve_management_endpoint)
    try:
        change = _restriction_change(args) if args.action in ("create", "update") else RestrictionChange()
    except ConfigError as exc:
        print(f"alloy-mcp-bridge: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:
        print(f"alloy-mcp-bridge: error: {exc} (see alloy-mcp-bridge servers {args.action} --help)", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "delete" and not args.yes and not _confirmed(args.id):
        return EXIT_FAILED if sys.stdin.isatty() else EXIT_USAGE
    secrets = SecretList(endpoint.secrets)
    configure_logging("warning" if settings.log_level == "info" else settings.log_level, settings.log_file, secrets)
    try:
        return anyio.run(_run, args, settings, endpoint, secrets, change)
    except ManagementError as exc:
        print(f"alloy-mcp-bridge: {secrets.redact(str(exc))}", file=sys.stderr)
        return EXIT_FAILED


async def _lookup(settings: BridgeSettings, endpoint: Any, secrets: SecretList, server_id: str) -> dict[str, Any]:
    async with remote_http(settings, endpoint, secrets) as http:
        return await ServerManagement(http).get(server_id)


def _slug(name: str) -> str:
    """A server name as an entry name: letters, digits and dashes."""
    import re

    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60] or "server"


def _restriction_change(args: argparse.Namespace) -> RestrictionChange:
    base = None
    if args.restrictions_file:
        try:
            base = json.loads(Path(args.restrictions_file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"--restrictions-file: cannot read a JSON object from {args.restrictions_file} "
                             f"({type(exc).__name__})") from None
    allow = {noun: getattr(args, f"allow_{noun}") for noun, _, _, _ in CATEGORIES}
    block = {noun: getattr(args, f"block_{noun}") for noun, _, _, _ in CATEGORIES}
    return restrictions_from(allow, block, base)


def _confirmed(server_id: str) -> bool:
    if not sys.stdin.isatty():
        print("alloy-mcp-bridge: error: `servers delete` asks for confirmation, and stdin is not a terminal; "
              "add --yes to delete without asking", file=sys.stderr)
        return False
    answer = input(f"Delete server {server_id}? Clients using it stop working. Type 'yes' to confirm: ")
    if answer.strip().lower() != "yes":
        print("Not deleted.", file=sys.stderr)
        return False
    return True


async def _run(args: argparse.Namespace, settings: BridgeSettings, endpoint: Any, secrets: SecretList,
               change: RestrictionChange) -> int:
    async with remote_http(settings, endpoint, secrets) as http:
        api = ServerManagement(http)
        if args.action == "list":
            listed = await api.list()
            servers = [without_secrets(server) for server in listed["servers"]]
            if args.json:
                _print_json({**listed, "servers": servers})
            else:
                _print_table(servers)
                print(f"{listed.get('count', len(servers))} server(s)", file=sys.stderr)
        elif args.action == "get":
            server = without_secrets(await api.get(args.id))
            _print_json(server) if args.json else _print_server(server)
        elif args.action == "create":
            created = await api.create(_body(args, change, creating=True))
            secrets.add([str(created.get(key)) for key in ("accessToken", "accessUrl") if created.get(key)])
            if args.json:
                _print_json(created)
            else:
                _print_server(without_secrets(created))
                _print_access(created)
            print("warning: the access token (and the access URL, which embeds it) is shown only this once; "
                  "store it now (a password manager), or use the API key with `servers connect`.",
                  file=sys.stderr)
        elif args.action == "update":
            body = _body(args, change, creating=False)
            if change and args.merge_restrictions:
                current = await api.get(args.id)
                body["restrictions"], notes = merge_restrictions(current.get("restrictions"), change)
                for note in notes:
                    print(f"note: {note}", file=sys.stderr)
            elif change:
                print("note: the restrictions given replace the server's current ones whole "
                      "(--merge-restrictions merges them)", file=sys.stderr)
            if not body:
                print("alloy-mcp-bridge: error: nothing to update (see alloy-mcp-bridge servers update --help)",
                      file=sys.stderr)
                return EXIT_USAGE
            server = without_secrets(await api.update(args.id, body))
            _print_json(server) if args.json else _print_server(server)
        elif args.action == "delete":
            deleted = await api.delete(args.id)
            if args.json:
                _print_json(deleted)
            else:
                print(str(deleted.get("message") or f"Deleted {args.id}."))
    return 0


def _body(args: argparse.Namespace, change: RestrictionChange, *, creating: bool) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if creating or args.name is not None:
        body["name"] = args.name
    if args.description is not None:
        body["description"] = args.description
    if args.instructions is not None:
        body["customInstructions"] = args.instructions
    if args.public is not None:
        body["isPublic"] = args.public
    if creating and args.token_days is not None:
        body["tokenExpiresInDays"] = args.token_days
    if change:
        body["restrictions"] = dict(change.categories)
    return body


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return " ".join(text.split())


def _print_table(servers: list[Any]) -> None:
    columns = [("ID", "serverId"), ("NAME", "name"), ("MODE", "mode"), ("RESTRICTED", "hasRestrictions"),
               ("UPDATED", "updatedAt")]
    rows = [[_cell(server.get(key)) if isinstance(server, dict) else "?" for _, key in columns]
            for server in servers]
    widths = [max([len(title), *(len(row[i]) for row in rows)]) for i, (title, _) in enumerate(columns)]
    for row in [[title for title, _ in columns], *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _print_server(server: dict[str, Any]) -> None:
    width = max((len(key) for key in server), default=0)
    for key, value in server.items():
        if key == "restrictions" and isinstance(value, dict):
            print(f"{key.ljust(width)}  " + ("-" if not value else ""))
            for category, rule in value.items():
                print(f"{'':{width}}    {category}: {_cell(rule)}")
            continue
        print(f"{key.ljust(width)}  {_cell(value)}")


def _print_access(created: dict[str, Any]) -> None:
    for key, label in (("accessToken", "access token"), ("accessUrl", "access URL")):
        if created.get(key):
            print(f"{label}: {created[key]}")


def _connect(args: argparse.Namespace) -> int:
    """The `config` entry for server ID: its id and the base URL, the key and user settings as configured.

    The server is looked up first: an entry for a server that does not exist (or is not yours) is never written.
    """
    from bridge.commands import config
    from bridge.commands.run import load_configuration

    settings, endpoint = load_configuration(overrides_from(args), args.env_file or None,
                                            endpoint_of=resolve_management_endpoint)
    secrets = SecretList(endpoint.secrets)
    configure_logging("warning" if settings.log_level == "info" else settings.log_level, settings.log_file, secrets)
    try:
        server = anyio.run(_lookup, settings, endpoint, secrets, args.id)
    except ManagementError as exc:
        print(f"alloy-mcp-bridge: {secrets.redact(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    if args.name is None:
        args.name = "alloy-" + _slug(str(server.get("name") or args.id))
    args.server_id = args.id
    return config.main(args, drop=("mcp_url", "access_token", "mcp_url_file", "access_token_file"))
