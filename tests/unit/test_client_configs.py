"""Where each client keeps its MCP config on each OS, and how an entry is merged into it."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from bridge.client_configs import CLIENT_NAMES, CLIENTS, ServerEntry, claude_add_command
from bridge.config_files import ConfigFileError, apply, plan, unified_diff

HOME = Path("/home/ada")

EXPECTED_PATHS = {
    ("claude-desktop", "darwin"): HOME / "Library/Application Support/Claude/claude_desktop_config.json",
    ("claude-desktop", "win32"): Path("C:/Users/ada/AppData/Roaming/Claude/claude_desktop_config.json"),
    ("claude-desktop", "linux"): HOME / ".config/Claude/claude_desktop_config.json",
    ("claude-code", "darwin"): HOME / ".claude.json",
    ("claude-code", "win32"): HOME / ".claude.json",
    ("claude-code", "linux"): HOME / ".claude.json",
    ("cursor", "darwin"): HOME / ".cursor/mcp.json",
    ("cursor", "win32"): HOME / ".cursor/mcp.json",
    ("cursor", "linux"): HOME / ".cursor/mcp.json",
    ("vscode", "darwin"): HOME / "Library/Application Support/Code/User/mcp.json",
    ("vscode", "win32"): Path("C:/Users/ada/AppData/Roaming/Code/User/mcp.json"),
    ("vscode", "linux"): HOME / ".config/Code/User/mcp.json",
    ("windsurf", "darwin"): HOME / ".codeium/windsurf/mcp_config.json",
    ("windsurf", "win32"): HOME / ".codeium/windsurf/mcp_config.json",
    ("windsurf", "linux"): HOME / ".codeium/windsurf/mcp_config.json",
    ("zed", "darwin"): HOME / ".config/zed/settings.json",
    ("zed", "win32"): Path("C:/Users/ada/AppData/Roaming/Zed/settings.json"),
    ("zed", "linux"): HOME / ".config/zed/settings.json",
    ("gemini-cli", "darwin"): HOME / ".gemini/settings.json",
    ("gemini-cli", "win32"): HOME / ".gemini/settings.json",
    ("gemini-cli", "linux"): HOME / ".gemini/settings.json",
    ("codex", "darwin"): HOME / ".codex/config.toml",
    ("codex", "win32"): HOME / ".codex/config.toml",
    ("codex", "linux"): HOME / ".codex/config.toml",
}
WINDOWS_ENV = {"APPDATA": "C:/Users/ada/AppData/Roaming", "LOCALAPPDATA": "C:/nowhere-local"}


@pytest.mark.parametrize(("client", "platform"), sorted(EXPECTED_PATHS))
def test_each_client_config_lives_where_the_client_reads_it(client, platform):
    env = WINDOWS_ENV if platform == "win32" else {}
    assert CLIENTS[client].config_path(platform, env, HOME) == EXPECTED_PATHS[client, platform]


@pytest.mark.parametrize(("client", "variable", "value", "expected"), [
    ("claude-desktop", "XDG_CONFIG_HOME", "/x", "/x/Claude/claude_desktop_config.json"),
    ("claude-code", "CLAUDE_CONFIG_DIR", "/c", "/c/.claude.json"),
    ("vscode", "XDG_CONFIG_HOME", "/x", "/x/Code/User/mcp.json"),
    ("zed", "FLATPAK_XDG_CONFIG_HOME", "/f", "/f/zed/settings.json"),
    ("gemini-cli", "GEMINI_CLI_HOME", "/g", "/g/.gemini/settings.json"),
    ("codex", "CODEX_HOME", "/k", "/k/config.toml"),
])
def test_the_variables_that_move_a_config_are_honoured(client, variable, value, expected):
    assert CLIENTS[client].config_path("linux", {variable: value}, HOME) == Path(expected)


def test_claude_desktop_on_windows_prefers_the_packaged_app_config(tmp_path):
    packaged = tmp_path / "Packages" / "Claude_pzs8sxrjxfjjc" / "LocalCache" / "Roaming" / "Claude"
    packaged.mkdir(parents=True)
    env = {"APPDATA": str(tmp_path / "Roaming"), "LOCALAPPDATA": str(tmp_path)}
    assert CLIENTS["claude-desktop"].config_path("win32", env, HOME) == packaged / "claude_desktop_config.json"


SERVER = ServerEntry("alloy", "/opt/bridge/bin/alloy-mcp-bridge", (),
                     {"ALLOY_SERVER_ID": "srv_1", "ALLOY_API_KEY": "sk_unit_SECRET_1"}, frozenset({"ALLOY_API_KEY"}))
HIDDEN = ServerEntry("alloy", "/opt/bridge/bin/alloy-mcp-bridge", (),
                     {"ALLOY_SERVER_ID": "srv_1", "ALLOY_API_KEY": "<ALLOY_API_KEY>"},
                     frozenset({"ALLOY_API_KEY"}), frozenset({"ALLOY_API_KEY"}))


def test_vscode_keeps_hidden_secrets_out_of_the_file_with_password_prompts():
    document = CLIENTS["vscode"].document(HIDDEN)
    assert document["inputs"] == [{"type": "promptString", "id": "alloy-api-key",
                                   "description": "ALLOY_API_KEY for alloy", "password": True}]
    entry = document["servers"]["alloy"]
    assert entry["type"] == "stdio" and entry["env"]["ALLOY_API_KEY"] == "${input:alloy-api-key}"


def test_zed_entries_are_flat_with_args_and_no_source():
    entry = CLIENTS["zed"].document(SERVER)["context_servers"]["alloy"]
    assert entry == {"command": SERVER.command, "args": [], "env": SERVER.env}


def test_the_claude_code_line_puts_the_name_before_the_variadic_env_flag():
    line = claude_add_command(ServerEntry("my alloy", "/opt/x y/bridge", ("--a",), {"K": "v w"}))
    assert line == "claude mcp add -s user 'my alloy' -e 'K=v w' -- '/opt/x y/bridge' --a"


def test_a_new_file_is_created_readable_by_the_user_only(tmp_path):
    path = tmp_path / "deep" / "mcp.json"
    change = plan(CLIENTS["cursor"], path, SERVER, force=False)
    assert change.before is None and apply(change) is None
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(path.read_text())["mcpServers"]["alloy"]["env"]["ALLOY_API_KEY"] == "sk_unit_SECRET_1"


def test_merging_keeps_everything_else_in_order_and_backs_up_first(tmp_path):
    path = tmp_path / "claude_desktop_config.json"
    original = {"globalShortcut": "Ctrl+Space", "mcpServers": {"files": {"command": "npx", "args": ["fs"]}},
                "zzz": [1, 2]}
    path.write_text(json.dumps(original, indent=4))
    os.chmod(path, 0o640)
    backup = apply(plan(CLIENTS["claude-desktop"], path, SERVER, force=False))
    merged = json.loads(path.read_text())
    assert list(merged) == ["globalShortcut", "mcpServers", "zzz"]
    assert list(merged["mcpServers"]) == ["files", "alloy"] and merged["mcpServers"]["files"] == original[
        "mcpServers"]["files"]
    assert '\n    "globalShortcut"' in path.read_text()  # the file's own indentation
    assert backup is not None and json.loads(backup.read_text()) == original
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


@pytest.mark.parametrize("text", ['{\n  // my servers\n  "mcpServers": {}\n}', '{"mcpServers": {},}'])
def test_a_file_with_comments_is_refused_and_left_untouched(tmp_path, text):
    path = tmp_path / "settings.json"
    path.write_text(text)
    with pytest.raises(ConfigFileError, match="comments"):
        plan(CLIENTS["zed"], path, SERVER, force=False)
    assert path.read_text() == text


def test_a_file_that_is_not_json_is_refused(tmp_path):
    path = tmp_path / "mcp.json"
    path.write_text("{nope")
    with pytest.raises(ConfigFileError, match="not valid JSON"):
        plan(CLIENTS["cursor"], path, SERVER, force=False)


def test_an_existing_entry_is_replaced_only_when_forced_and_the_refusal_names_what_differs(tmp_path):
    path = tmp_path / "mcp.json"
    apply(plan(CLIENTS["cursor"], path, SERVER, force=False))
    changed = ServerEntry("alloy", SERVER.command, (), {**SERVER.env, "ALLOY_API_KEY": "sk_unit_SECRET_2"},
                          SERVER.secrets)
    with pytest.raises(ConfigFileError) as refused:
        plan(CLIENTS["cursor"], path, changed, force=False)
    assert "ALLOY_API_KEY" in str(refused.value) and "SECRET" not in str(refused.value)
    assert plan(CLIENTS["cursor"], path, changed, force=True).replaced
    assert plan(CLIENTS["cursor"], path, SERVER, force=False).unchanged


def test_codex_toml_keeps_comments_and_other_tables(tmp_path):
    import tomllib

    path = tmp_path / "config.toml"
    path.write_text('# my settings\nmodel = "o4"\n\n[mcp_servers.files]\ncommand = "npx" # the fs server\n')
    apply(plan(CLIENTS["codex"], path, SERVER, force=False))
    text = path.read_text()
    assert "# my settings" in text and "# the fs server" in text
    parsed = tomllib.loads(text)
    assert parsed["model"] == "o4" and parsed["mcp_servers"]["files"]["command"] == "npx"
    assert parsed["mcp_servers"]["alloy"] == {"command": SERVER.command, "args": [], "env": SERVER.env}


def test_the_dry_run_diff_never_shows_a_secret(tmp_path):
    change = plan(CLIENTS["cursor"], tmp_path / "mcp.json", SERVER, force=False)
    diff = unified_diff(change, SERVER)
    assert '+        "ALLOY_API_KEY": "***"' in diff and "sk_unit_SECRET_1" not in diff


def test_every_client_has_a_spec():
    assert set(CLIENT_NAMES) == set(CLIENTS)
