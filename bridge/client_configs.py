"""What each desktop client's MCP configuration looks like, and where it lives on macOS, Windows and Linux.

One `ClientSpec` per client: the file (and the environment variables that move
it), the format, the key servers live under, and the shape of one stdio
server entry. Sources (each client's documentation or source code) are in
`docs/clients.md`.
"""

from __future__ import annotations

import glob
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Platform = Literal["darwin", "win32", "linux"]
CLIENT_NAMES = ("claude-desktop", "claude-code", "cursor", "vscode", "windsurf", "zed", "gemini-cli", "codex")


@dataclass(frozen=True)
class ServerEntry:
    """One stdio MCP server as a client starts it: a name, a command line and its environment.

    `secrets` names the env vars whose values are secrets; `hidden` those of them whose values were
    replaced by placeholders (the user fills them in, or VS Code asks for them).
    """

    name: str
    command: str
    args: tuple[str, ...]
    env: dict[str, str] = field(repr=False)
    secrets: frozenset[str] = frozenset()
    hidden: frozenset[str] = frozenset()


def placeholder(env_var: str) -> str:
    """The stand-in written where a secret's value would go."""
    return f"<{env_var}>"


def input_id(env_var: str) -> str:
    """VS Code's `${input:…}` id for a secret env var: `ALLOY_API_KEY` -> `alloy-api-key`."""
    return env_var.lower().replace("_", "-")


PathFinder = Callable[[str, Mapping[str, str], Path], Path]


@dataclass(frozen=True)
class ClientSpec:
    """A desktop client's MCP configuration."""

    name: str
    title: str
    format: Literal["json", "toml"]
    key: str
    locate: PathFinder = field(repr=False)

    def config_path(self, platform: str, env: Mapping[str, str], home: Path) -> Path:
        """The user-level config file on `platform`, given the environment and the home directory."""
        return self.locate(platform, env, home)

    def entry(self, server: ServerEntry) -> dict[str, Any]:
        """The object stored under `key` / the server's name."""
        env = dict(server.env)
        if self.name == "vscode":
            env.update({name: "${input:" + input_id(name) + "}" for name in server.hidden})
            return {"type": "stdio", "command": server.command, "args": list(server.args), "env": env}
        if self.name == "claude-code":
            return {"type": "stdio", "command": server.command, "args": list(server.args), "env": env}
        # Zed needs `args` even when empty; every client accepts it.
        return {"command": server.command, "args": list(server.args), "env": env}

    def inputs(self, server: ServerEntry) -> list[dict[str, Any]]:
        """VS Code's prompts for the secrets kept out of the file (other clients: none)."""
        if self.name != "vscode":
            return []
        return [{"type": "promptString", "id": input_id(name), "description": f"{name} for {server.name}",
                 "password": True} for name in sorted(server.hidden)]

    def document(self, server: ServerEntry) -> dict[str, Any]:
        """A whole config document holding just this server (what `config` prints)."""
        document: dict[str, Any] = {}
        inputs = self.inputs(server)
        if inputs:
            document["inputs"] = inputs
        document[self.key] = {server.name: self.entry(server)}
        return document


def _xdg_config(env: Mapping[str, str], home: Path) -> Path:
    return Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else home / ".config"


def _appdata(env: Mapping[str, str], home: Path) -> Path:
    return Path(env["APPDATA"]) if env.get("APPDATA") else home / "AppData" / "Roaming"


def _claude_desktop(platform: str, env: Mapping[str, str], home: Path) -> Path:
    name = "claude_desktop_config.json"
    if platform == "darwin":
        return home / "Library" / "Application Support" / "Claude" / name
    if platform == "win32":
        # The MSIX install (2026) reads its own copy and ignores %APPDATA%\Claude.
        local = Path(env["LOCALAPPDATA"]) if env.get("LOCALAPPDATA") else home / "AppData" / "Local"
        packaged = sorted(glob.glob(str(local / "Packages" / "Claude_*" / "LocalCache" / "Roaming" / "Claude")))
        if packaged:
            return Path(packaged[0]) / name
        return _appdata(env, home) / "Claude" / name
    return _xdg_config(env, home) / "Claude" / name


def _claude_code(platform: str, env: Mapping[str, str], home: Path) -> Path:
    return (Path(env["CLAUDE_CONFIG_DIR"]) if env.get("CLAUDE_CONFIG_DIR") else home) / ".claude.json"


def _vscode(platform: str, env: Mapping[str, str], home: Path) -> Path:
    if platform == "darwin":
        return home / "Library" / "Application Support" / "Code" / "User" / "mcp.json"
    if platform == "win32":
        return _appdata(env, home) / "Code" / "User" / "mcp.json"
    return _xdg_config(env, home) / "Code" / "User" / "mcp.json"


def _zed(platform: str, env: Mapping[str, str], home: Path) -> Path:
    if platform == "win32":
        return _appdata(env, home) / "Zed" / "settings.json"
    if platform == "darwin":
        return home / ".config" / "zed" / "settings.json"
    base = Path(env["FLATPAK_XDG_CONFIG_HOME"]) if env.get("FLATPAK_XDG_CONFIG_HOME") else _xdg_config(env, home)
    return base / "zed" / "settings.json"


def _gemini(platform: str, env: Mapping[str, str], home: Path) -> Path:
    return (Path(env["GEMINI_CLI_HOME"]) if env.get("GEMINI_CLI_HOME") else home) / ".gemini" / "settings.json"


def _codex(platform: str, env: Mapping[str, str], home: Path) -> Path:
    return (Path(env["CODEX_HOME"]) if env.get("CODEX_HOME") else home / ".codex") / "config.toml"


CLIENTS: dict[str, ClientSpec] = {spec.name: spec for spec in (
    ClientSpec("claude-desktop", "Claude Desktop", "json", "mcpServers", _claude_desktop),
    ClientSpec("claude-code", "Claude Code", "json", "mcpServers", _claude_code),
    ClientSpec("cursor", "Cursor", "json", "mcpServers", lambda p, e, h: h / ".cursor" / "mcp.json"),
    ClientSpec("vscode", "VS Code", "json", "servers", _vscode),
    ClientSpec("windsurf", "Windsurf", "json", "mcpServers",
               lambda p, e, h: h / ".codeium" / "windsurf" / "mcp_config.json"),
    ClientSpec("zed", "Zed", "json", "context_servers", _zed),
    ClientSpec("gemini-cli", "Gemini CLI", "json", "mcpServers", _gemini),
    ClientSpec("codex", "Codex", "toml", "mcp_servers", _codex),
)}

def claude_add_command(server: ServerEntry) -> str:
    """The `claude mcp add` line for Claude Code: one line, shell-quoted, the name before `-e` (which is
    variadic and would swallow it), the bridge's command after `--`."""
    parts = ["claude", "mcp", "add", "-s", "user", server.name]
    for name, value in server.env.items():
        parts += ["-e", f"{name}={value}"]
    parts += ["--", server.command, *server.args]
    return " ".join(shlex.quote(part) for part in parts)
