"""`alloy-mcp-bridge config CLIENT`: the client config entry that starts this bridge with the current settings.

The settings are read exactly as `run` reads them (flags, env vars, `.env`);
the entry carries every one that differs from its default in its `env` block,
never in `args`. Secrets are placeholders (VS Code: its own password prompts)
unless `--include-secrets`. The entry starts this very installation (see
`bridge/installation.py`). `--install` merges it into the client's config file
under the rules of `bridge/config_files.py`; for Claude Code it goes through
the `claude` CLI when that is on PATH.

Output: the entry on stdout, ready to paste; notes on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from bridge.client_configs import (
    CLIENT_NAMES,
    CLIENTS,
    ClientSpec,
    ServerEntry,
    claude_add_command,
    placeholder,
)
from bridge.config_files import (
    ConfigFileError,
    UnmergeableConfigFile,
    apply,
    plan,
    previous_entry,
    toml_table,
    unified_diff,
)
from bridge.endpoint import Endpoint
from bridge.installation import LaunchCommand, launch_command
from bridge.settings import BridgeSettings, describe, env_name, overrides_from

EXIT_FAILED = 1
EXIT_USAGE = 2


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)


def settings_env(settings: BridgeSettings, endpoint: Endpoint) -> tuple[dict[str, str], set[str]]:
    """The settings that differ from their defaults, as env vars, and which of them hold secrets."""
    env: dict[str, str] = {}
    secret: set[str] = set()
    for name, field in BridgeSettings.model_fields.items():
        value = getattr(settings, name)
        if value is None or value == field.default:
            continue
        text = _as_text(value)
        if isinstance(field.default, (int, float)) and not isinstance(field.default, bool):
            try:
                if float(text) == float(field.default):
                    continue
            except ValueError:
                pass
        env[env_name(name)] = text
        if describe(name)[2] and (name != "mcp_url" or any(s in text for s in endpoint.secrets)):
            secret.add(env_name(name))
    return env, secret


# What the network may need that a desktop client does not pass on (it starts servers with HOME and PATH only).
_NETWORK_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR")


def _network_environment() -> tuple[dict[str, str], set[str]]:
    """The network variables to copy, and which of them are secret (a proxy URL with a password)."""
    found = {name: os.environ[name] for name in _NETWORK_VARIABLES if os.environ.get(name)}
    if found:
        _note(f"copied {', '.join(found)} from this environment: desktop clients do not pass them on")
    secret = {name for name, value in found.items() if name.endswith("_PROXY") and "@" in _authority(value)}
    return found, secret


def _authority(url: str) -> str:
    """The `user:password@host:port` part of a URL, with or without its scheme (proxies accept both)."""
    return urlsplit(url if "://" in url else "//" + url).netloc


def _absolute_command(command: str) -> bool:
    from bridge.secret_sources import split_command

    try:
        words = split_command(command)
    except ValueError:
        return False
    return bool(words) and os.path.isabs(words[0])


def _as_text(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Path):
        return str(value.expanduser().resolve())  # the client starts the bridge in another directory
    return str(value)


def server_entry(name: str, launch: LaunchCommand, env: dict[str, str], secrets: set[str], *,
                 include_secrets: bool, stand_ins: dict[str, str] | None = None) -> ServerEntry:
    hidden = set() if include_secrets else set(secrets)
    stand_ins = stand_ins or {}
    shown = {key: (stand_ins.get(key) or placeholder(key) if key in hidden else value) for key, value in env.items()}
    return ServerEntry(name, launch.command, launch.args, shown, frozenset(secrets), frozenset(hidden))


def render(spec: ClientSpec, server: ServerEntry) -> str:
    """The entry as the user pastes it."""
    if spec.name == "claude-code":
        return claude_add_command(server)
    if spec.format == "toml":
        import tomlkit

        document = tomlkit.document()
        servers = tomlkit.table(is_super_table=True)
        servers[server.name] = toml_table(spec.entry(server))
        document[spec.key] = servers
        return tomlkit.dumps(document).strip()
    return json.dumps(spec.document(server), indent=2, ensure_ascii=False)


def main(args: argparse.Namespace, drop: tuple[str, ...] = ()) -> int:
    """`alloy-mcp-bridge config CLIENT [...]` (and `servers connect`, which `drop`s the configured endpoint)."""
    from bridge.commands.run import load_configuration

    if args.client not in CLIENTS:
        print(f"alloy-mcp-bridge: error: unknown client {args.client!r}; one of: {', '.join(CLIENT_NAMES)} "
              "(see alloy-mcp-bridge config --help)", file=sys.stderr)
        return EXIT_USAGE
    for flag in ("no_secrets", "force", "dry_run", "config_path"):
        if getattr(args, flag) and not args.install:
            print(f"alloy-mcp-bridge: error: --{flag.replace('_', '-')} goes with --install "
                  "(see alloy-mcp-bridge config --help)", file=sys.stderr)
            return EXIT_USAGE
    spec = CLIENTS[args.client]
    overrides = {k: v for k, v in overrides_from(args).items() if k not in drop}
    settings, endpoint = load_configuration(overrides, args.env_file or None, drop=drop, resolve=False)
    try:
        launch = launch_command(args.launcher)
    except LookupError as exc:
        print(f"alloy-mcp-bridge: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    env, secrets = settings_env(settings, endpoint)
    network, network_secrets = _network_environment()
    env.update(network)
    secrets |= network_secrets
    for name in ("api_key_command", "user_token_command"):
        command = getattr(settings, name)
        if command and not _absolute_command(command):
            _note(f"{env_name(name)} starts with a program found on your PATH; the client may not have that PATH "
                  "(desktop clients do not read your shell profile): use its absolute path, and absolute paths "
                  "in its arguments")
    include = args.include_secrets or (args.install and not args.no_secrets)
    # A token URL keeps its host and server id; only the token is a placeholder.
    stand_ins = {"ALLOY_MCP_URL": endpoint.display_url.replace("***", "<ACCESS_TOKEN>")} \
        if "***" in endpoint.display_url else {}
    server = server_entry(args.name, launch, env, secrets, include_secrets=include, stand_ins=stand_ins)
    pasteable = server_entry(args.name, launch, env, secrets, include_secrets=args.include_secrets,
                             stand_ins=stand_ins)  # what is printed when the file cannot take the entry
    for text in launch.notes:
        _note(text)
    if not args.install:
        print(render(spec, server))
        if server.hidden and spec.name != "vscode":
            _note(f"secrets are placeholders ({', '.join(sorted(server.hidden))}): fill them in, or run again "
                  "with --include-secrets")
        _note(f"{spec.title} reads {_default_path(spec)}; `--install` merges the entry there")
        return 0
    return _install(spec, server, pasteable, args)


def _default_path(spec: ClientSpec) -> Path:
    return spec.config_path(sys.platform if sys.platform in ("darwin", "win32") else "linux", os.environ, Path.home())


def _install(spec: ClientSpec, server: ServerEntry, pasteable: ServerEntry, args: argparse.Namespace) -> int:
    """Merge `server` into the client's file; when the file cannot take it, print `pasteable` instead."""
    path = Path(args.config_path).expanduser() if args.config_path else _default_path(spec)
    try:
        change = plan(spec, path, server, force=args.force or args.dry_run)
    except UnmergeableConfigFile as exc:
        print(f"alloy-mcp-bridge: {exc}", file=sys.stderr)
        print(render(spec, pasteable))
        _note(f"the entry to paste by hand under {spec.key!r} is printed above"
              + (" (secrets as placeholders; --include-secrets without --install prints them)"
                 if pasteable.hidden else ""))
        return EXIT_FAILED
    except ConfigFileError as exc:
        print(f"alloy-mcp-bridge: {exc}", file=sys.stderr)
        return EXIT_FAILED
    via_cli = spec.name == "claude-code" and not args.config_path and shutil.which("claude") is not None
    if args.dry_run:
        diff = unified_diff(change, server)
        print(diff or f"# {path}: already up to date", end="" if diff else "\n")
        if change.replaced and not args.force:
            _note(f"an entry named {server.name!r} exists and differs: --install --force would replace it")
        if via_cli:
            _note("Claude Code's own CLI would make this change: claude mcp add-json -s user " + server.name)
        return 0
    if change.unchanged:
        _note(f"{path} already has this entry; nothing to do")
        return 0
    if via_cli:
        return _install_with_claude(server, spec, replace=change.replaced,
                                    previous=previous_entry(spec, change, server.name))
    try:
        backup = apply(change)
    except OSError as exc:
        print(f"alloy-mcp-bridge: cannot write {path} ({type(exc).__name__}); it was left as it was",
              file=sys.stderr)
        return EXIT_FAILED
    if backup is not None:
        _note(f"backup of the previous file: {backup}")
    print(f"{'Replaced' if change.replaced else 'Added'} {server.name!r} in {path}. Restart {spec.title} to use it.",
          file=sys.stderr)
    _placeholders_note(spec, server, path)
    return 0


def _placeholders_note(spec: ClientSpec, server: ServerEntry, path: Path) -> None:
    if server.hidden and spec.name != "vscode":
        _note(f"fill in {', '.join(sorted(server.hidden))} in {path}: placeholders are written there "
              "(--no-secrets); the bridge refuses to start until they are replaced")


def _install_with_claude(server: ServerEntry, spec: ClientSpec, *, replace: bool,
                         previous: dict[str, Any] | None) -> int:
    """`claude mcp add-json -s user NAME -`: the JSON on stdin, so no secret is on a command line.

    Replacing is remove-then-add; if the add fails, the `previous` entry is added back.
    """
    claude = shutil.which("claude")
    assert claude is not None

    def add(entry: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([claude, "mcp", "add-json", "-s", "user", server.name, "-"], input=json.dumps(entry),
                              capture_output=True, text=True, timeout=60, check=False)

    if replace:
        subprocess.run([claude, "mcp", "remove", server.name, "-s", "user"], capture_output=True, text=True,
                       timeout=60, check=False)
    result = add(spec.entry(server))
    if result.returncode != 0:
        first = (result.stderr or result.stdout).strip().splitlines()[:1]
        kept = " (the previous entry was put back)" if previous is not None and add(previous).returncode == 0 else ""
        print(f"alloy-mcp-bridge: `claude mcp add-json` failed: {first[0] if first else result.returncode}{kept}",
              file=sys.stderr)
        return EXIT_FAILED
    print(f"{'Replaced' if replace else 'Added'} {server.name!r} in Claude Code's user config (through the claude "
          "CLI). Check it with: claude mcp list", file=sys.stderr)
    return 0
