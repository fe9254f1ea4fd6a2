"""Least privilege, secrets from files and managers, logs worth reading, streams that cannot hang silently.

Each test drives the bridge as a subprocess against the test remote on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from tests.helpers import (
    ACCESS_TOKEN,
    API_KEY,
    ROOT,
    SERVER_ID,
    TOOL_BLOCKED,
    USER_ID,
    bridge_env,
    open_bridge,
    raw_bridge,
    running_remote,
    text_of,
    wait_for,
)
from tests.hostile_remote import HostileRemote, sse_reply

pytestmark = pytest.mark.anyio


def run_bridge(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ALLOY_")}
    return subprocess.run([sys.executable, "-m", "bridge", *args], env={**base, **env}, cwd=cwd or ROOT / "tests",
                          input="", capture_output=True, text=True, timeout=60)


# --- read-only mode ------------------------------------------------------------------------------


async def test_read_only_lists_and_calls_only_tools_annotated_read_only(remote, tmp_path):
    async with open_bridge(tmp_path, bridge_env(remote, ALLOY_READ_ONLY="true")) as (client, _):
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert names == {"echo", "add"}  # readOnlyHint: true; unannotated tools are hidden too
        assert text_of(await client.call_tool("echo", {"text": "reading"})) == "reading"
        with pytest.raises(MCPError) as refused:
            await client.call_tool("delete_everything", {})
        with pytest.raises(MCPError) as unannotated:
            await client.call_tool("slow", {"seconds": 0})
    assert refused.value.code == TOOL_BLOCKED and "ALLOY_READ_ONLY" in refused.value.message
    assert unannotated.value.code == TOOL_BLOCKED
    assert not remote.requests("tools/call") or all(
        r.get("tool") not in ("delete_everything", "slow") for r in remote.requests("tools/call"))


async def test_read_only_combines_with_the_allow_and_block_lists(remote, tmp_path):
    env = bridge_env(remote, ALLOY_READ_ONLY="true", ALLOY_BLOCKED_TOOLS="add")
    async with open_bridge(tmp_path, env) as (client, _):
        assert {tool.name for tool in (await client.list_tools()).tools} == {"echo"}


async def test_read_only_refuses_a_tool_no_listing_has_shown(remote, tmp_path):
    async with raw_bridge(tmp_path, bridge_env(remote, ALLOY_READ_ONLY="true")) as bridge:
        await bridge.initialize()
        answer = await bridge.request(2, "tools/call", {"name": "echo", "arguments": {"text": "x"}})
    assert answer["error"]["code"] == TOOL_BLOCKED  # when in doubt, hide: nothing has shown echo as read-only yet
    assert remote.requests("tools/call") == []


def test_check_reports_how_many_tools_each_rule_hid(remote):
    result = run_bridge({"ALLOY_MCP_URL": remote.url, "ALLOY_API_KEY": API_KEY, "ALLOY_USER_ID": USER_ID,
                         "ALLOY_READ_ONLY": "true", "ALLOY_BLOCKED_TOOLS": "delete_*"}, "check", "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["counts"]["tools"] == 2
    hidden = report["toolPolicy"]["hiddenByRule"]
    assert hidden["blocked"] == 1 and hidden["read_only"] >= 10 and hidden["allowed"] == 0
    lines = run_bridge({"ALLOY_MCP_URL": remote.url, "ALLOY_API_KEY": API_KEY, "ALLOY_USER_ID": USER_ID,
                        "ALLOY_READ_ONLY": "true"}, "check").stderr
    assert "by ALLOY_READ_ONLY" in lines


# --- secrets from files ------------------------------------------------------------------------


async def test_every_secret_can_come_from_a_file(remote, tmp_path):
    (tmp_path / "key").write_text(API_KEY + "\n")
    (tmp_path / "headers.json").write_text('{"X-Team": "blue-team-secret"}\n')
    env = bridge_env(remote, ALLOY_API_KEY=None, ALLOY_API_KEY_FILE=str(tmp_path / "key"),
                     ALLOY_MCP_HEADERS_FILE=str(tmp_path / "headers.json"))
    async with open_bridge(tmp_path, env) as (client, _):
        assert text_of(await client.call_tool("echo", {"text": "from files"})) == "from files"
    posted = remote.requests("tools/call")[-1]["headers"]
    assert posted["authorization"] == f"Bearer {API_KEY}" and posted["x-team"] == "blue-team-secret"


async def test_a_token_url_can_come_from_a_file(remote, tmp_path):
    (tmp_path / "url").write_text(remote.token_url + "\n")
    async with open_bridge(tmp_path, bridge_env(None, ALLOY_MCP_URL_FILE=str(tmp_path / "url"))) as (client, run):
        assert text_of(await client.call_tool("echo", {"text": "token url"})) == "token url"
    assert ACCESS_TOKEN not in run.stderr


async def test_an_access_token_can_come_from_a_file(remote, tmp_path):
    (tmp_path / "token").write_text(ACCESS_TOKEN + "\n")
    env = bridge_env(None, ALLOY_SERVER_ID=SERVER_ID, ALLOY_BASE_URL=remote.base,
                     ALLOY_ACCESS_TOKEN_FILE=str(tmp_path / "token"))
    async with open_bridge(tmp_path, env) as (client, _):
        assert text_of(await client.call_tool("echo", {"text": "token file"})) == "token file"


@pytest.mark.parametrize(("env", "named"), [
    ({"ALLOY_API_KEY": "k1", "ALLOY_API_KEY_FILE": "/etc/hostname"}, "ALLOY_API_KEY_FILE"),
    ({"ALLOY_API_KEY_FILE": "/etc/hostname", "ALLOY_API_KEY_COMMAND": "echo k"}, "ALLOY_API_KEY_COMMAND"),
    ({"ALLOY_API_KEY_FILE": "/no/such/file"}, "ALLOY_API_KEY_FILE"),
    ({"ALLOY_API_KEY_FILE": "/dev/null"}, "ALLOY_API_KEY_FILE"),
    ({"ALLOY_MCP_URL": "https://x.example/mcp", "ALLOY_MCP_URL_FILE": "/etc/hostname"}, "ALLOY_MCP_URL_FILE"),
    ({"ALLOY_ACCESS_TOKEN_FILE": "/dev/null", "ALLOY_SERVER_ID": "s"}, "ALLOY_ACCESS_TOKEN_FILE"),
    ({"ALLOY_MCP_HEADERS_FILE": "/no/such/file"}, "ALLOY_MCP_HEADERS_FILE"),
])
def test_a_bad_secret_file_setting_is_one_line_naming_it_and_exit_2(env, named, remote):
    result = run_bridge({"ALLOY_MCP_URL": remote.url, **env})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and named in lines[0], result.stderr
    assert remote.requests() == []


# --- secrets from a secret manager's command ----------------------------------------------------------


def _jwt(sub: str, exp: float) -> str:
    import base64

    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part({'sub': sub, 'exp': int(exp)})}.c2lnX1NFQ1JFVF9jbWQ"


def _token_command(tmp_path: Path, tokens: list[str], fail_after: int | None = None) -> str:
    """A command printing tokens[n] on its n-th run (the last one forever), or failing after `fail_after` runs."""
    (tmp_path / "tokens.json").write_text(json.dumps(tokens))
    script = tmp_path / "vault.py"
    script.write_text(
        "import json, pathlib, sys\n"
        f"here = pathlib.Path({str(tmp_path)!r})\n"
        "count = here / 'runs'\n"
        "n = int(count.read_text()) if count.exists() else 0\n"
        "count.write_text(str(n + 1))\n"
        f"limit = {fail_after!r}\n"
        "if limit is not None and n >= limit:\n"
        "    sys.stderr.write('vault: the session expired, sign in again\\nmore detail\\n'); sys.exit(3)\n"
        "tokens = json.loads((here / 'tokens.json').read_text())\n"
        "print(tokens[min(n, len(tokens) - 1)])\n")
    return f"{sys.executable} {script}"


def _runs(tmp_path: Path) -> int:
    path = tmp_path / "runs"
    return int(path.read_text()) if path.exists() else 0


async def test_a_user_token_command_runs_at_start_and_again_after_a_401(remote, tmp_path):
    first, second = _jwt("user-42", time.time() + 3600), _jwt("user-42", time.time() + 7200)
    remote.accept_user_tokens(first)
    env = bridge_env(remote, ALLOY_USER_TOKEN_COMMAND=_token_command(tmp_path, [first, second]))
    async with open_bridge(tmp_path, env) as (client, run):
        assert text_of(await client.call_tool("echo", {"text": "one"})) == "one"
        assert _runs(tmp_path) == 1
        remote.accept_user_tokens(second)  # the first one is revoked
        assert text_of(await client.call_tool("echo", {"text": "two"})) == "two"
    assert _runs(tmp_path) == 2
    assert first not in run.stderr and second not in run.stderr


async def test_a_user_token_command_runs_again_shortly_before_the_jwt_expires(remote, tmp_path):
    expiring, fresh = _jwt("user-42", time.time() + 30), _jwt("user-42", time.time() + 7200)
    env = bridge_env(remote, ALLOY_USER_TOKEN_COMMAND=_token_command(tmp_path, [expiring, fresh]))
    async with open_bridge(tmp_path, env) as (client, _):
        await client.call_tool("echo", {"text": "x"})
    sent = [r["headers"].get("x-alloy-user-token") for r in remote.requests("tools/call")]
    assert sent[-1] == fresh and _runs(tmp_path) == 2  # 30 s left is inside the 60 s margin: renewed first


def test_a_failing_secret_command_at_start_is_a_configuration_error_with_its_reason(remote, tmp_path):
    command = _token_command(tmp_path, ["never"], fail_after=0)
    result = run_bridge({"ALLOY_MCP_URL": remote.url, "ALLOY_API_KEY_COMMAND": command})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1
    assert "ALLOY_API_KEY_COMMAND" in lines[0] and "status 3" in lines[0] and "sign in again" in lines[0]
    assert "more detail" not in lines[0] and remote.requests() == []


def _with_command(remote, setting: str, command: str) -> dict[str, str]:
    """The remote's URL, a key unless the key itself comes from the command, and the command in `setting`."""
    env = {"ALLOY_MCP_URL": remote.url, setting: command}
    if setting != "ALLOY_API_KEY_COMMAND":
        env["ALLOY_API_KEY"] = API_KEY
    return env


@pytest.mark.timeout(90)  # the bridge waits out its fixed 30 s limit (one setting only: both share that code)
def test_a_secret_command_that_never_finishes_is_a_configuration_error_after_30_seconds(remote, tmp_path):
    hang = f"{sys.executable} -c 'import time; time.sleep(120)'"
    started = time.monotonic()
    result = run_bridge(_with_command(remote, "ALLOY_API_KEY_COMMAND", hang))
    elapsed = time.monotonic() - started
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "ALLOY_API_KEY_COMMAND" in lines[0] and "did not finish within 30s" in lines[0]
    assert 29 < elapsed < 60, elapsed
    assert remote.requests() == []


@pytest.mark.parametrize("output", ["", "  \n\n"], ids=["no-output", "only-whitespace"])
@pytest.mark.parametrize("setting", ["ALLOY_API_KEY_COMMAND", "ALLOY_USER_TOKEN_COMMAND"])
def test_a_secret_command_that_prints_nothing_is_a_configuration_error(remote, tmp_path, setting, output):
    script = tmp_path / "silent.py"
    script.write_text(f"import sys\nsys.stdout.write({output!r})\n")
    result = run_bridge(_with_command(remote, setting, f"{sys.executable} {script}"))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert setting in lines[0] and "printed nothing" in lines[0]
    assert remote.requests() == []


async def test_a_secret_command_is_split_like_a_shell_and_run_without_one(remote, tmp_path):
    """`;` inside quotes and outside them are arguments like any other: no shell ever sees the line."""
    script = tmp_path / "vault.py"
    script.write_text("import json, pathlib, sys\n"
                      f"pathlib.Path({str(tmp_path / 'argv.json')!r}).write_text(json.dumps(sys.argv[1:]))\n"
                      f"print({API_KEY!r})\n")
    marker = tmp_path / "a-shell-ran-this"
    command = f"{sys.executable} {script} 'read; touch {marker}' ;touch {marker} a;b"
    env = bridge_env(remote, ALLOY_API_KEY=None, ALLOY_API_KEY_COMMAND=command)
    async with open_bridge(tmp_path, env) as (client, _):
        assert text_of(await client.call_tool("echo", {"text": "managed"})) == "managed"
    assert json.loads((tmp_path / "argv.json").read_text()) == [f"read; touch {marker}", ";touch", str(marker),
                                                                 "a;b"]
    assert not marker.exists()


async def test_a_secret_command_failing_after_a_401_is_the_401_error_with_the_reason_in_the_hint(remote, tmp_path):
    token = _jwt("user-42", time.time() + 3600)
    remote.accept_user_tokens(token)
    env = bridge_env(remote, ALLOY_USER_TOKEN_COMMAND=_token_command(tmp_path, [token], fail_after=1))
    async with raw_bridge(tmp_path, env) as bridge:
        await bridge.initialize()
        remote.accept_user_tokens("something-else")
        answer = await bridge.request(2, "tools/call", {"name": "echo", "arguments": {"text": "x"}})
    assert answer["error"]["code"] == -32053
    assert "status 3" in answer["error"]["data"]["hint"] and "sign in again" in answer["error"]["data"]["hint"]
    assert token not in json.dumps(answer)


async def test_an_api_key_command_supplies_the_bearer_key(remote, tmp_path):
    env = bridge_env(remote, ALLOY_API_KEY=None, ALLOY_API_KEY_COMMAND=_token_command(tmp_path, [API_KEY]))
    async with open_bridge(tmp_path, env) as (client, _):
        assert text_of(await client.call_tool("echo", {"text": "managed"})) == "managed"


def test_config_keeps_file_and_command_settings_as_they_are(remote, tmp_path):
    command = _token_command(tmp_path, ["k"])
    result = run_bridge({"ALLOY_MCP_URL": remote.url, "ALLOY_API_KEY_COMMAND": command, "ALLOY_USER_ID": USER_ID},
                        "config", "cursor")
    env = json.loads(result.stdout)["mcpServers"]["alloy"]["env"]
    assert env["ALLOY_API_KEY_COMMAND"] == command and "ALLOY_API_KEY" not in env
    assert _runs(tmp_path) == 0  # printing a config never runs the secret manager


# --- logs -------------------------------------------------------------------------------------------


async def test_the_log_file_rotates_and_each_file_is_private(remote, tmp_path):
    log = tmp_path / "logs" / "bridge.log"
    env = bridge_env(remote, ALLOY_LOG_FILE=str(log), ALLOY_LOG_MAX_BYTES="1024", ALLOY_LOG_BACKUPS="2")
    async with open_bridge(tmp_path, env) as (client, _):
        for i in range(40):
            await client.call_tool("echo", {"text": f"call {i}"})
    files = sorted(log.parent.iterdir())
    assert [f.name for f in files] == ["bridge.log", "bridge.log.1", "bridge.log.2"]
    assert all(stat.S_IMODE(os.stat(f).st_mode) == 0o600 for f in files)
    assert all(f.stat().st_size <= 1024 + 1024 for f in files)


async def test_trace_logs_each_message_without_its_payload(remote, tmp_path):
    env = bridge_env(remote, ALLOY_TRACE="true", ALLOY_LOG_LEVEL="info")
    async with open_bridge(tmp_path, env) as (client, run):
        await client.call_tool("echo", {"text": "PAYLOAD-NEVER-LOGGED"})
    trace = [line for line in run.stderr.splitlines() if "bridge.trace" in line]
    assert any("desktop → remote request tools/call" in line for line in trace)
    answers = [line for line in trace if "remote → desktop response tools/call" in line]
    assert answers and " ms" in answers[0] and " B" in answers[0]
    assert "PAYLOAD-NEVER-LOGGED" not in run.stderr


async def test_a_session_summary_is_logged_at_exit(remote, tmp_path):
    remote.add_rule({"status": 503, "headers": {"retry-after": "0"}}, rpc="tools/list")
    async with open_bridge(tmp_path, bridge_env(remote, ALLOY_LOG_LEVEL="info")) as (client, run):
        await client.list_tools()
        await client.call_tool("echo", {"text": "x"})
        with pytest.raises(MCPError):
            await client.call_tool("delete_everything", {})
    summary = next(line for line in run.stderr.splitlines() if "session summary" in line)
    calls = int(summary.split("session summary: ")[1].split(" call(s)")[0])
    assert calls >= 4  # initialize, tools/list and two calls (a 2026-era SDK also probes server/discover)
    assert "-32054×1" in summary and "1 retry" in summary and " in, " in summary and "up " in summary


# --- connections that cannot hang silently ------------------------------------------------------


async def test_a_silent_server_to_client_stream_is_taken_for_dead_and_reopened(tmp_path):
    async def silent_forever(request):
        await anyio.sleep(3600)
        yield b""

    async with HostileRemote() as remote:
        remote.on("GET", None, lambda r: sse_reply(then=silent_forever(r)))
        env = bridge_env(None, ALLOY_MCP_URL=remote.url, ALLOY_API_KEY=API_KEY, ALLOY_USER_ID=USER_ID,
                         ALLOY_STREAM_IDLE_TIMEOUT="1.5")
        async with raw_bridge(tmp_path, env) as bridge:
            await bridge.initialize()
            started = time.monotonic()
            await wait_for(lambda: len([r for r in remote.requests if r.method == "GET"]) >= 2, timeout=10)
    assert time.monotonic() - started < 8


async def test_every_connection_to_the_remote_has_tcp_keepalive():
    """The client built as the bridge builds it (`remote_http`), the socket read off the live connection."""
    import socket

    from bridge.endpoint import resolve_endpoint
    from bridge.http import remote_http
    from bridge.logs import SecretList
    from bridge.settings import BridgeSettings

    def assert_keepalive(response) -> None:
        core = getattr(response, "_core", response)  # the hot path wraps httpcore2's response
        sock = core.extensions["network_stream"].get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30

    initialize = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}).encode()
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    with running_remote() as remote:
        settings = BridgeSettings(_env_file=None, mcp_url=remote.url, api_key=API_KEY, user_id=USER_ID,
                                  connect_timeout=3, read_timeout=10)
        endpoint = resolve_endpoint(settings)
        async with remote_http(settings, endpoint, SecretList(endpoint.secrets)) as http:
            for url in (None, remote.url):  # None: the endpoint's hot path; a URL: through the client
                async with http.open("POST", url=url, body=initialize, headers=headers,
                                     rpc_method="initialize") as response:
                    assert response.status_code == 200
                    assert_keepalive(response)
        assert len(remote.requests("initialize")) == 2
