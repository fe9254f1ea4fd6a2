"""The `check` and `demo` commands, and the tool policy, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import API_KEY, ROOT, USER_ID, bridge_env, open_bridge

pytestmark = pytest.mark.anyio


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ALLOY_")}
    return subprocess.run([sys.executable, "-m", "bridge", *args], env={**base, **(env or {})},
                          cwd=ROOT / "tests", capture_output=True, text=True, timeout=timeout, input="")


def test_check_reports_the_server_and_its_tools(remote):
    result = run_cli("check", env={"ALLOY_MCP_URL": remote.url, "ALLOY_API_KEY": API_KEY, "ALLOY_USER_ID": USER_ID})
    assert result.returncode == 0, result.stderr
    assert "initialize: test-remote" in result.stderr
    assert "tools/list:" in result.stderr and "echo" in result.stderr
    assert result.stdout == ""
    assert API_KEY not in result.stderr
    assert remote.requests()[-1]["http"] == "DELETE"


def test_check_explains_rejected_credentials(remote):
    result = run_cli("check", env={"ALLOY_MCP_URL": remote.url, "ALLOY_API_KEY": "ak_wrong_0000",
                                   "ALLOY_USER_ID": USER_ID})
    assert result.returncode == 1
    assert "FAIL" in result.stderr and "401" in result.stderr and "ALLOY_API_KEY" in result.stderr


def test_demo_prints_a_successful_round_trip():
    result = run_cli("demo", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tools/list -> add, shout" in result.stdout
    assert "Round trip OK" in result.stdout


async def test_blocked_tools_are_hidden_and_refused(remote, tmp_path):
    from mcp.shared.exceptions import MCPError

    env = bridge_env(remote, ALLOY_BLOCKED_TOOLS="delete_*, filler_*")
    async with open_bridge(tmp_path, env) as (client, _):
        names = []
        cursor = None
        while True:
            page = await client.list_tools(cursor=cursor)
            names += [t.name for t in page.tools]
            cursor = page.next_cursor
            if not cursor:
                break
        with pytest.raises(MCPError) as caught:
            await client.call_tool("delete_everything", {})
    assert "echo" in names and "delete_everything" not in names
    assert not any(n.startswith("filler_") for n in names)
    assert caught.value.code == -32060
    assert not [r for r in remote.requests("tools/call") if r["tool"] == "delete_everything"]


async def test_allowed_tools_limit_what_the_desktop_sees(remote, tmp_path):
    env = bridge_env(remote, ALLOY_ALLOWED_TOOLS="echo,add")
    async with open_bridge(tmp_path, env) as (client, _):
        page = await client.list_tools()
        result = await client.call_tool("echo", {"text": "allowed"})
    assert {t.name for t in page.tools} <= {"echo", "add"}
    assert result.content[0].text == "allowed"


@pytest.mark.parametrize("flavour", ["--sse", "--modern-only"])
def test_check_works_with_legacy_sse_and_2026_only_remotes(flavour):
    from tests.helpers import running_remote

    with running_remote(flavour) as server:
        result = run_cli("check", env={"ALLOY_MCP_URL": server.url, "ALLOY_API_KEY": API_KEY,
                                       "ALLOY_USER_ID": USER_ID})
    assert result.returncode == 0, result.stderr
    assert "initialize: test-remote" in result.stderr and "echo" in result.stderr
