"""Regressions from the second whole-change review: each reproduced a defect, now fixed.

End to end through the bridge process: the scriptable hostile remote (tests/hostile_remote.py) or the
SDK-built remote (tests/remote_server.py) on 127.0.0.1, the desktop writing raw lines.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tomllib

import pytest

from tests.helpers import API_KEY, bridge_env, running_remote
from tests.hostile_remote import HostileRemote, Received, Reply, sse_event
from tests.test_client_config import alloy_env, run_cli
from tests.test_hostile import _init_params, assert_error, desktop, echo_text, env_for, still_serving

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


@pytest.mark.parametrize("request_id", [[], {}, [1]])
async def test_a_cancellation_naming_an_unhashable_request_id_is_ignored_by_the_2026_adapter(tmp_path, request_id):
    with running_remote("--modern-only") as remote:
        async with desktop(tmp_path, bridge_env(remote)) as d:
            assert "result" in await d.request("init", "initialize", _init_params())
            await d.send_json({"jsonrpc": "2.0", "method": "notifications/initialized"})
            await d.send_json({"jsonrpc": "2.0", "method": "notifications/cancelled",
                               "params": {"requestId": request_id}})
            assert echo_text(await d.call(2, "echo", text="still here")) == "still here"
            assert await d.finish() == 0


async def test_a_cancellation_naming_true_does_not_cancel_the_request_with_id_1(tmp_path):
    async def slow_failure(request: Received) -> Reply:
        await asyncio.sleep(1.0)
        return Reply(500, [("Content-Type", "text/plain")], b"boom")

    async with HostileRemote() as remote, desktop(tmp_path, env_for(remote.url)) as d:
        await d.initialize()
        remote.on("POST", "tools/call", slow_failure, times=1)
        await d.send_json({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                           "params": {"name": "echo", "arguments": {"text": "x"}}})
        await d.send_json({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": True}})
        assert_error(await d.answer(1, timeout=8))  # `true` is not the id 1: the call is still answered
        assert await d.finish() == 0


async def test_legacy_progress_with_an_unhashable_token_does_not_drop_the_event_stream(tmp_path):
    async def answer_after_bad_progress(request: Received) -> Reply:
        progress = {"jsonrpc": "2.0", "method": "notifications/progress",
                    "params": {"progressToken": [], "progress": 1}}
        remote.push_stream(sse_event(json.dumps(progress).encode(), event="message"))
        await asyncio.sleep(0.2)
        return Reply(200, [("Content-Type", "application/json")], json.dumps({
            "jsonrpc": "2.0", "id": request.rpc_id,
            "result": {"content": [{"type": "text", "text": "done"}]}}).encode())

    async with HostileRemote(legacy_sse=True, sessions=False) as remote, \
            desktop(tmp_path, env_for(remote.url, ALLOY_TRANSPORT="sse")) as d:
        assert "result" in await d.initialize()
        remote.on("POST", "tools/call", answer_after_bad_progress, times=1)
        answer = await d.request(3, "tools/call", {"name": "echo", "arguments": {"text": "x"},
                                                   "_meta": {"progressToken": "p1"}})
        assert echo_text(answer) == "done"
        await still_serving(d)
        assert len(remote.received("GET")) == 1, "the event stream was dropped and re-opened"
        assert await d.finish() == 0
    assert API_KEY not in d.stderr


@pytest.mark.parametrize("where", ["message", "data"])
async def test_a_secret_written_with_json_escapes_in_a_remote_error_is_redacted(tmp_path, where):
    escaped = "".join(f"\\u{ord(char):04x}" for char in API_KEY[:3]) + API_KEY[3:]  # reads as the key

    def leak(request: Received) -> Reply:
        error = {"code": -32000, "message": "refused"}
        error[where] = f"bad key {escaped}" if where == "message" else {"key": f"{escaped}"}
        escaped_error = json.dumps(error).replace("\\\\u", "\\u")  # the escapes as the remote wrote them
        body = f'{{"jsonrpc": "2.0", "id": {json.dumps(request.rpc_id)}, "error": {escaped_error}}}'
        return Reply(200, [("Content-Type", "application/json")], body.encode())

    async with HostileRemote() as remote, desktop(tmp_path, env_for(remote.url)) as d:
        await d.initialize()
        remote.on("POST", "tools/call", leak, times=1)
        error = assert_error(await d.call(4, "echo", text="x", timeout=8), -32000)
        assert API_KEY not in json.dumps(error), "the key reached the desktop"
        assert "***" in json.dumps(error)
        await still_serving(d)
        assert await d.finish() == 0


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
async def test_proxy_variables_are_honoured_for_a_remote_endpoint(tmp_path, variable):
    # The "proxy" is the scriptable remote itself: it answers the absolute-form requests a proxy receives,
    # so a host that does not resolve is reached only if the bridge really goes through the proxy.
    async with HostileRemote() as proxy:
        env = env_for("http://mcp.bridge-test.invalid/mcp/srv_test", ALLOY_ALLOW_HTTP="true",
                      **{variable: f"http://127.0.0.1:{proxy.port}", "NO_PROXY": "", "no_proxy": ""})
        async with desktop(tmp_path, env) as d:
            assert "result" in await d.initialize()
            assert echo_text(await d.call(2, "echo", text="via proxy", timeout=5)) == "via proxy"
            assert await d.finish() == 0
    targets = {request.target for request in proxy.received("POST")}
    assert targets == {"http://mcp.bridge-test.invalid/mcp/srv_test"}, targets


async def test_a_remote_that_answers_401_without_asking_for_oauth_is_probed_once_not_on_every_call(tmp_path):
    async with HostileRemote() as remote, \
            desktop(tmp_path, env_for(remote.url, ALLOY_API_KEY=None, ALLOY_USER_ID=None,
                                      ALLOY_OAUTH_DIR=str(tmp_path / "tokens"))) as d:
        await d.initialize()
        remote.on("POST", "tools/call", Reply(401, [("Content-Type", "text/plain")], b"no"))
        for request_id in range(3):
            assert_error(await d.call(request_id, "echo", text="x", timeout=8))
        probes = [r for r in remote.requests if r.target.startswith("/.well-known/oauth-protected-resource")]
        assert 1 <= len(probes) <= 2, [r.target for r in probes]  # the path-aware and the root document, once
        assert await d.finish() == 0


# --- config: no secret on screen unless asked for ------------------------------------------------


@pytest.mark.parametrize("flags", [(), ("--dry-run",)])
def test_an_entry_printed_because_the_file_has_comments_shows_placeholders_not_the_key(remote, tmp_path, flags):
    path = tmp_path / ".config" / "zed" / "settings.json"
    path.parent.mkdir(parents=True)
    path.write_text("// Zed settings\n{\n  \"theme\": \"One Dark\"\n}\n")
    result = run_cli("config", "zed", "--install", *flags, env=alloy_env(remote), home=tmp_path)
    assert result.returncode == 1 and "comments" in result.stderr
    entry = json.loads(result.stdout)["context_servers"]["alloy"]
    assert entry["env"]["ALLOY_API_KEY"] == "<ALLOY_API_KEY>"
    assert API_KEY not in result.stdout + result.stderr


def test_an_invalid_file_is_refused_and_the_entry_to_paste_is_printed(remote, tmp_path):
    path = tmp_path / ".cursor" / "mcp.json"
    path.parent.mkdir()
    path.write_text("{ not json")
    result = run_cli("config", "cursor", "--install", env=alloy_env(remote), home=tmp_path)
    assert result.returncode == 1 and "not valid JSON" in result.stderr
    assert json.loads(result.stdout)["mcpServers"]["alloy"]["command"]
    assert path.read_text() == "{ not json"


def test_a_dry_run_masks_token_urls_and_token_shaped_arguments_of_other_entries(remote, tmp_path):
    path = tmp_path / ".cursor" / "mcp.json"
    path.parent.mkdir()
    others = {"zapier": {"url": "https://mcp.example.com/api/mcp/s/ZAPSECRET0123456789abcdef/mcp"},
              "github": {"command": "gh-mcp", "args": ["--pat", "ghp_ARGSECRET0123456789abcdef"]}}
    path.write_text(json.dumps({"mcpServers": others}))  # one line: the re-indent puts all of it in the diff
    result = run_cli("config", "cursor", "--install", "--dry-run", env=alloy_env(remote), home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ZAPSECRET" not in result.stdout and "ghp_ARGSECRET" not in result.stdout
    assert '"--pat"' in result.stdout and '"gh-mcp"' in result.stdout  # only the secrets are masked


@pytest.mark.parametrize("install", [False, True])
@pytest.mark.parametrize("proxy", ["http://alice:PROXYSECRET99@proxy.example:3128", "alice:PROXYSECRET99@proxy:3128"])
def test_a_proxy_password_copied_into_the_entry_is_a_placeholder(remote, tmp_path, install, proxy):
    args = ("--install", "--dry-run") if install else ()
    result = run_cli("config", "cursor", *args, env={**alloy_env(remote), "HTTPS_PROXY": proxy}, home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "PROXYSECRET99" not in result.stdout + result.stderr
    if not install:
        assert json.loads(result.stdout)["mcpServers"]["alloy"]["env"]["HTTPS_PROXY"] == "<HTTPS_PROXY>"


def test_a_failed_replace_through_the_claude_cli_puts_the_previous_entry_back(remote, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "claude-calls.jsonl"
    fake = bin_dir / "claude"  # fails the first add-json (the new entry), accepts the second (the old one)
    fake.write_text(f"#!{sys.executable}\nimport json, pathlib, sys\n"
                    f"log = pathlib.Path({str(log)!r})\n"
                    "calls = log.read_text().splitlines() if log.exists() else []\n"
                    "call = json.dumps({'argv': sys.argv[1:], 'stdin': sys.stdin.read()})\n"
                    "log.write_text('\\n'.join([*calls, call]))\n"
                    "adds = [c for c in calls if '\"add-json\"' in c]\n"
                    "sys.exit(1 if sys.argv[2] == 'add-json' and not adds else 0)\n")
    fake.chmod(0o755)
    previous = {"type": "stdio", "command": "old-bridge", "args": [], "env": {}}
    (tmp_path / ".claude.json").write_text(json.dumps({"mcpServers": {"alloy": previous}}))
    env = {**alloy_env(remote), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = run_cli("config", "claude-code", "--install", "--force", env=env, home=tmp_path)
    assert result.returncode == 1 and "previous entry was put back" in result.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c["argv"][1] for c in calls] == ["remove", "add-json", "add-json"]
    assert json.loads(calls[-1]["stdin"]) == previous


@pytest.mark.parametrize("action", [("list",), ("connect", "srv_1", "cursor")])
def test_servers_with_an_unwritable_log_file_is_one_line_naming_the_setting(tmp_path, action):
    env = {"ALLOY_API_KEY": API_KEY, "ALLOY_BASE_URL": "http://127.0.0.1:9", "ALLOY_LOG_FILE": "/proc/nope/x.log"}
    result = run_cli("servers", *action, env=env, home=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "ALLOY_LOG_FILE" in result.stderr
    assert "Traceback" not in result.stderr and API_KEY not in result.stderr


async def test_a_tools_call_without_a_string_name_is_refused_with_a_reason_by_the_tool_policy(tmp_path):
    async with HostileRemote() as remote, \
            desktop(tmp_path, env_for(remote.url, ALLOY_BLOCKED_TOOLS="delete_*")) as d:
        await d.initialize()
        error = assert_error(await d.request(6, "tools/call", {"name": 5, "arguments": {}}), -32060)
        assert "params.name" in error["message"] and not error["message"].endswith(": .")
        assert not remote.received("POST", "tools/call"), "the call reached the remote"
        assert await d.finish() == 0


async def test_a_token_in_the_path_of_a_non_alloy_url_is_masked_in_logs_and_errors(tmp_path):
    secret = "ZAPSECRET0123456789abcdef"
    async with HostileRemote(path=f"/api/mcp/s/{secret}/mcp") as remote, \
            desktop(tmp_path, env_for(remote.url, ALLOY_API_KEY=None, ALLOY_USER_ID=None, ALLOY_OAUTH="off",
                                      ALLOY_LOG_LEVEL="debug")) as d:
        remote.on("POST", "initialize", Reply(404, [("Content-Type", "text/plain")], b"gone"))
        error = assert_error(await d.initialize(), -32055)
        assert "/api/mcp/s/***/mcp" in error["message"]
        assert await d.finish() == 0
    assert secret not in d.stderr and secret not in bytes(d.stdout).decode()


def test_a_codex_entry_is_valid_toml_whatever_the_name(remote):
    result = run_cli("config", "codex", "--name", 'crm "prod" ✓', env=alloy_env(remote))
    assert result.returncode == 0, result.stderr
    entry = tomllib.loads(result.stdout)["mcp_servers"]['crm "prod" ✓']
    assert entry["command"] and entry["env"]["ALLOY_API_KEY"] == "<ALLOY_API_KEY>"



def test_a_proxy_placeholder_left_in_an_installed_entry_stops_the_bridge_naming_the_variable(remote):
    result = run_cli("check", env={**alloy_env(remote), "HTTPS_PROXY": "<HTTPS_PROXY>"})
    assert result.returncode == 2 and "HTTPS_PROXY" in result.stderr and "placeholder" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_long_alloy_server_id_is_shown_not_mistaken_for_a_token():
    url = "https://mcp.runalloy.com/mcp/srv3f9a2b7c1d8e4f60"
    result = run_cli("config", "cursor", env={"ALLOY_MCP_URL": url, "ALLOY_API_KEY": API_KEY, "ALLOY_USER_ID": "u"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["mcpServers"]["alloy"]["env"]["ALLOY_MCP_URL"] == url
