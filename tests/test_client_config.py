"""`config CLIENT`, `check --json` and the command line, as a new user meets them (the bridge as a subprocess)."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from tests.helpers import API_KEY, ROOT, USER_ID, text_of
from tests.reference import INSPECTOR, require_reference_software

CLIENTS = ("claude-desktop", "claude-code", "cursor", "vscode", "windsurf", "zed", "gemini-cli", "codex")


def run_cli(*args: str, env: dict[str, str] | None = None, home: Path | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("ALLOY_", "XDG_", "CLAUDE_", "CODEX_", "SSL_CERT_"))
            and not k.upper().endswith("_PROXY")}
    if home is not None:
        base.update({"HOME": str(home), "USERPROFILE": str(home)})
    return subprocess.run([sys.executable, "-m", "bridge", *args], env={**base, **(env or {})},
                          cwd=cwd or ROOT / "tests", capture_output=True, text=True, timeout=60, input="")


def alloy_env(remote) -> dict[str, str]:
    return {"ALLOY_MCP_URL": remote.url, "ALLOY_API_KEY": API_KEY, "ALLOY_USER_ID": USER_ID,
            "ALLOY_READ_TIMEOUT": "45"}


@pytest.mark.parametrize("client", CLIENTS)
def test_config_prints_an_entry_in_the_clients_own_shape_with_secrets_as_placeholders(client, remote):
    result = run_cli("config", client, env=alloy_env(remote))
    assert result.returncode == 0, result.stderr
    assert API_KEY not in result.stdout + result.stderr
    if client == "claude-code":
        words = shlex.split(result.stdout)
        assert words[:6] == ["claude", "mcp", "add", "-s", "user", "alloy"]
        env = dict(words[i + 1].split("=", 1) for i, word in enumerate(words) if word == "-e")
        command = words[words.index("--") + 1:]
    elif client == "codex":
        entry = tomllib.loads(result.stdout)["mcp_servers"]["alloy"]
        env, command = entry["env"], [entry["command"], *entry["args"]]
    else:
        document = json.loads(result.stdout)
        key = {"vscode": "servers", "zed": "context_servers"}.get(client, "mcpServers")
        assert list(document) == (["inputs", key] if client == "vscode" else [key])
        entry = document[key]["alloy"]
        env, command = entry["env"], [entry["command"], *entry["args"]]
        if client == "vscode":
            assert entry["type"] == "stdio" and document["inputs"][0]["password"] is True
    expected_key = "${input:alloy-api-key}" if client == "vscode" else "<ALLOY_API_KEY>"
    assert env == {"ALLOY_MCP_URL": remote.url, "ALLOY_API_KEY": expected_key, "ALLOY_USER_ID": USER_ID,
                   "ALLOY_READ_TIMEOUT": "45"}
    assert Path(command[0]).is_absolute()


def test_network_variables_the_client_would_not_pass_on_are_copied(remote, tmp_path):
    result = run_cli("config", "claude-desktop", env={**alloy_env(remote), "SSL_CERT_FILE": "/etc/corp-ca.pem",
                                                      "HTTPS_PROXY": "http://proxy.corp:3128"})
    env = json.loads(result.stdout)["mcpServers"]["alloy"]["env"]
    assert env["SSL_CERT_FILE"] == "/etc/corp-ca.pem" and env["HTTPS_PROXY"] == "http://proxy.corp:3128"
    assert "copied" in result.stderr


def test_only_settings_that_differ_from_their_defaults_appear(remote):
    result = run_cli("config", "cursor", env={**alloy_env(remote), "ALLOY_CONNECT_TIMEOUT": "10",
                                              "ALLOY_TRANSPORT": "auto"})
    env = json.loads(result.stdout)["mcpServers"]["alloy"]["env"]
    assert "ALLOY_CONNECT_TIMEOUT" not in env and "ALLOY_TRANSPORT" not in env


def test_settings_from_dotenv_and_flags_are_in_the_entry_and_paths_are_absolute(remote, tmp_path):
    (tmp_path / ".env").write_text(f"ALLOY_MCP_URL={remote.url}\nALLOY_USER_ID={USER_ID}\n")
    (tmp_path / "jwt.txt").write_text("eyJ.a.b\n")
    result = run_cli("config", "cursor", "--user-token-file", "jwt.txt", "--name", "alloy-work", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    entry = json.loads(result.stdout)["mcpServers"]["alloy-work"]
    assert entry["env"]["ALLOY_MCP_URL"] == remote.url
    assert entry["env"]["ALLOY_USER_TOKEN_FILE"] == str((tmp_path / "jwt.txt").resolve())


@pytest.mark.anyio
async def test_the_printed_claude_desktop_entry_starts_a_working_bridge(remote):
    """What the desktop runs is exactly the printed command, args and env (with the secrets filled in)."""
    result = run_cli("config", "claude-desktop", "--include-secrets", env=alloy_env(remote))
    entry = json.loads(result.stdout)["mcpServers"]["alloy"]
    assert entry["env"]["ALLOY_API_KEY"] == API_KEY
    params = StdioServerParameters(command=entry["command"], args=entry["args"], env=entry["env"], cwd="/")
    with open(os.devnull, "w") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            echoed = await client.call_tool("echo", {"text": "from the printed entry"})
    assert text_of(echoed) == "from the printed entry"


@pytest.mark.npm
def test_the_inspector_runs_the_installed_claude_desktop_config(remote, tmp_path):
    require_reference_software()
    result = run_cli("config", "claude-desktop", "--install", env=alloy_env(remote), home=tmp_path)
    assert result.returncode == 0, result.stderr
    path = tmp_path / ".config" / "Claude" / "claude_desktop_config.json"
    listed = subprocess.run([str(INSPECTOR), "--cli", "--config", str(path), "--server", "alloy", "--method",
                             "tools/list"], capture_output=True, text=True, timeout=90,
                            env={**os.environ, "MCP_INSPECTOR_SECRET_STORE": "memory"})
    assert listed.returncode == 0, listed.stderr
    assert "echo" in {tool["name"] for tool in json.loads(listed.stdout)["tools"]}


@pytest.mark.parametrize("client", [c for c in CLIENTS if c != "claude-code"])
def test_install_writes_the_clients_file_under_a_temporary_home(client, remote, tmp_path):
    result = run_cli("config", client, "--install", env=alloy_env(remote), home=tmp_path)
    assert result.returncode == 0, result.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) == 1
    assert stat.S_IMODE(os.stat(written[0]).st_mode) == 0o600
    text = written[0].read_text()
    assert API_KEY in text  # the client's file is where the client reads its secrets
    assert API_KEY not in result.stdout + result.stderr


def test_install_refuses_to_replace_an_entry_without_force_and_dry_run_writes_nothing(remote, tmp_path):
    assert run_cli("config", "gemini-cli", "--install", env=alloy_env(remote), home=tmp_path).returncode == 0
    path = tmp_path / ".gemini" / "settings.json"
    before = path.read_text()
    changed = {**alloy_env(remote), "ALLOY_READ_TIMEOUT": "90"}
    refused = run_cli("config", "gemini-cli", "--install", env=changed, home=tmp_path)
    assert refused.returncode == 1 and "ALLOY_READ_TIMEOUT" in refused.stderr and "--force" in refused.stderr
    dry = run_cli("config", "gemini-cli", "--install", "--force", "--dry-run", env=changed, home=tmp_path)
    assert dry.returncode == 0 and '-        "ALLOY_READ_TIMEOUT": "45"' in dry.stdout
    assert API_KEY not in dry.stdout and path.read_text() == before
    forced = run_cli("config", "gemini-cli", "--install", "--force", env=changed, home=tmp_path)
    assert forced.returncode == 0
    assert json.loads(path.read_text())["mcpServers"]["alloy"]["env"]["ALLOY_READ_TIMEOUT"] == "90"
    assert len(list(path.parent.glob("settings.json.bak-*"))) == 1


def test_install_with_no_secrets_writes_placeholders(remote, tmp_path):
    result = run_cli("config", "windsurf", "--install", "--no-secrets", env=alloy_env(remote), home=tmp_path)
    assert result.returncode == 0
    text = (tmp_path / ".codeium" / "windsurf" / "mcp_config.json").read_text()
    assert API_KEY not in text and "<ALLOY_API_KEY>" in text


def test_claude_code_is_installed_through_its_cli_with_the_secret_on_stdin_not_argv(remote, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "claude-calls.jsonl"
    fake = bin_dir / "claude"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\n"
                    f"open({str(log)!r}, 'a').write(json.dumps({{'argv': sys.argv[1:], 'stdin': sys.stdin.read()}})"
                    " + '\\n')\n")
    fake.chmod(0o755)
    env = {**alloy_env(remote), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = run_cli("config", "claude-code", "--install", env=env, home=tmp_path)
    assert result.returncode == 0, result.stderr
    (call,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert call["argv"] == ["mcp", "add-json", "-s", "user", "alloy", "-"]
    entry = json.loads(call["stdin"])
    assert entry["type"] == "stdio" and entry["env"]["ALLOY_API_KEY"] == API_KEY


def test_claude_code_without_its_cli_is_written_to_the_user_config(remote, tmp_path):
    env = {**alloy_env(remote), "PATH": os.path.dirname(sys.executable)}
    (tmp_path / ".claude.json").write_text(json.dumps({"userID": "x", "projects": {}}))
    assert run_cli("config", "claude-code", "--install", env=env, home=tmp_path).returncode == 0
    stored = json.loads((tmp_path / ".claude.json").read_text())
    assert stored["userID"] == "x" and stored["mcpServers"]["alloy"]["type"] == "stdio"


def test_config_for_an_unknown_client_is_one_line_and_exit_2(remote):
    result = run_cli("config", "notepad", env=alloy_env(remote))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "claude-desktop" in result.stderr


# --- check --json ---------------------------------------------------------------------------------


def test_check_json_reports_the_remote_in_one_document(remote):
    result = run_cli("check", "--json", env={**alloy_env(remote), "ALLOY_BLOCKED_TOOLS": "delete_*"})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["transport"] == "streamable-http"
    assert report["url"] == remote.url and report["protocolVersion"]
    assert report["server"]["name"]
    assert report["counts"]["tools"] > 0 and "resources" in report["counts"] and "prompts" in report["counts"]
    assert report["authHeaders"] == ["authorization", "x-alloy-userid"]
    assert report["toolPolicy"]["blocked"] == ["delete_*"] and report["toolPolicy"]["hiddenTools"] >= 1
    assert set(report["roundTripMs"]) >= {"initialize", "tools/list"}
    assert API_KEY not in result.stdout


def test_check_json_reports_a_configuration_error_as_a_document_too():
    result = run_cli("check", "--json", env={"ALLOY_MCP_URL": "ftp://nope"})
    report = json.loads(result.stdout)
    assert result.returncode == 2 and report["ok"] is False and "ALLOY_MCP_URL" in report["failure"]["cause"]


def test_a_dry_run_never_shows_a_secret_of_any_entry_and_previews_a_change_without_force(remote, tmp_path):
    path = tmp_path / ".cursor" / "mcp.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"mcpServers": {"other": {"command": "x", "env": {"GITHUB_TOKEN": "ghp_OTHERSECRET"}},
                                               "alloy": {"command": "old", "args": [], "env": {}}}}, indent=2))
    result = run_cli("config", "cursor", "--install", "--dry-run", env=alloy_env(remote), home=tmp_path)
    assert result.returncode == 0 and "+" in result.stdout
    assert "ghp_OTHERSECRET" not in result.stdout and API_KEY not in result.stdout
    assert '"ALLOY_API_KEY": "***"' in result.stdout and "--force would replace it" in result.stderr


def test_a_file_with_comments_is_refused_and_the_entry_to_paste_is_printed(remote, tmp_path):
    path = tmp_path / ".config" / "zed" / "settings.json"
    path.parent.mkdir(parents=True)
    path.write_text("// Zed settings\n{\n  \"theme\": \"One Dark\"\n}\n")
    result = run_cli("config", "zed", "--install", env=alloy_env(remote), home=tmp_path)
    assert result.returncode == 1 and "comments" in result.stderr
    assert json.loads(result.stdout)["context_servers"]["alloy"]["command"]
    assert path.read_text().startswith("// Zed settings")


def test_check_json_names_the_cause_and_the_fix_when_it_fails(remote):
    result = run_cli("check", "--json", env={**alloy_env(remote), "ALLOY_API_KEY": "ak_wrong_key_999"})
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["failure"]["code"] == -32053
    assert "401" in report["failure"]["cause"] and "ALLOY_API_KEY" in report["failure"]["fix"]


# --- the command line -----------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "named"), [
    (["--bogus"], "--bogus"), (["frobnicate"], "frobnicate"), (["--mcp-url"], "--mcp-url"),
    (["check", "--nope"], "--nope"), (["config"], "client"), (["--api-kee", "x", "check"], "--api-kee"),
    (["config", "cursor", "--ins"], "--ins"),
])
def test_a_command_line_mistake_is_one_line_naming_it_and_exit_2(args, named):
    result = run_cli(*args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert named in lines[0] and "--help" in lines[0]


@pytest.mark.parametrize("command", ["", "run", "check", "config", "demo"])
def test_every_command_has_help_with_an_example(command):
    result = run_cli(*([command] if command else []), "--help")
    assert result.returncode == 0 and "example:" in result.stdout
    if not command:
        for name in ("run", "check", "config", "demo"):
            assert f"  {name} " in result.stdout
