"""`alloy-mcp-bridge servers …` end to end, against a stand-in for Alloy's Server Management API on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import API_KEY, ROOT, USER_ID

OTHER_KEY = "ak_live_OTHERUSER_77aa"


class ManagementServer:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.management_server", "--key", f"{API_KEY}={USER_ID}",
             "--key", f"{OTHER_KEY}=user-other"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("PORT "), line
        self.base = f"http://127.0.0.1:{int(line.split()[1])}"

    def control(self, command: str, **payload: Any) -> dict[str, Any]:
        request = urllib.request.Request(f"{self.base}/_control/{command}", data=json.dumps(payload).encode(),
                                         method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback test server
            return json.loads(response.read())

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def platform_server() -> Iterator[ManagementServer]:
    server = ManagementServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def platform(platform_server: ManagementServer) -> ManagementServer:
    platform_server.control("reset")
    return platform_server


def servers(platform: ManagementServer, *args: str, key: str = API_KEY, env: dict[str, str] | None = None,
            stdin: str = "") -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("ALLOY_", "SSL_CERT_")) and not k.upper().endswith("_PROXY")}
    full = {**base, "ALLOY_BASE_URL": platform.base, "ALLOY_API_KEY": key, "ALLOY_RETRY_BUDGET": "5", **(env or {})}
    result = subprocess.run([sys.executable, "-m", "bridge", "servers", *args], env=full, capture_output=True,
                            text=True, timeout=60, input=stdin, cwd=ROOT / "tests")
    assert API_KEY not in result.stdout + result.stderr and OTHER_KEY not in result.stdout + result.stderr
    return result


def create(platform: ManagementServer, name: str, *flags: str) -> dict[str, Any]:
    result = servers(platform, "create", name, *flags, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_create_shows_the_access_token_once_and_no_other_command_shows_it(platform):
    result = servers(platform, "create", "crm", "--description", "CRM tools", "--token-days", "30")
    assert result.returncode == 0, result.stderr
    (created,) = platform.control("state")["servers"].values()
    assert "access token: mcp_tok_" in result.stdout and "access URL: http" in result.stdout
    assert "shown only this once" in result.stderr
    stored_token = result.stdout.split("access token: ", 1)[1].split()[0]
    assert stored_token == created["accessToken"]
    assert f"access URL: {created['url']}/{stored_token}" in result.stdout
    for args in (["list"], ["list", "--json"], ["get", created["serverId"]], ["get", created["serverId"], "--json"],
                 ["update", created["serverId"], "--description", "new", "--json"]):
        other = servers(platform, *args)
        assert other.returncode == 0, other.stderr
        assert stored_token not in other.stdout + other.stderr, args


def test_list_is_an_aligned_table_and_json_keeps_fields_the_docs_do_not_list(platform):
    create(platform, "alpha")
    create(platform, "beta-with-a-longer-name", "--allow-connector", "hubspot")
    table = servers(platform, "list")
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "MODE", "RESTRICTED", "UPDATED"]
    assert len(lines) == 3
    for title in ("NAME", "MODE", "RESTRICTED", "UPDATED"):
        column = lines[0].index(title)
        for row in lines[1:]:
            assert row[column - 1] == " " and row[column] != " ", (title, row)
    assert "beta-with-a-longer-name" in table.stdout and "2 server(s)" in table.stderr
    listed = json.loads(servers(platform, "list", "--json").stdout)
    assert listed["count"] == 2 and "nextCursor" in listed
    assert all("tokenExpiresAt" in server and "accessToken" not in server for server in listed["servers"])


def test_a_taken_name_is_one_line_saying_so(platform):
    create(platform, "dup")
    result = servers(platform, "create", "dup")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "name is taken" in result.stderr


def test_allow_and_block_flags_build_the_restrictions(platform):
    created = create(platform, "least", "--allow-connector", "hubspot", "--allow-connector", "gmail",
                     "--block-action", "gmail_send_email", "--allow-user", "u1")
    assert created["restrictions"] == {
        "connectors": {"mode": "allowlist", "allowedIds": ["hubspot", "gmail"]},
        "actions": {"mode": "blocklist", "blockedActions": ["gmail_send_email"]},
        "users": {"mode": "allowlist", "allowedIds": ["u1"]},
    }


def test_allowing_and_blocking_one_category_is_an_error_before_any_request(platform):
    result = servers(platform, "create", "x", "--allow-action", "a", "--block-action", "b")
    assert result.returncode == 2 and "--allow-action and --block-action" in result.stderr
    assert platform.control("state")["requests"] == []


def test_a_restrictions_file_gives_the_base_and_flags_override_its_categories(platform, tmp_path):
    path = tmp_path / "restrictions.json"
    path.write_text(json.dumps({"connectors": {"mode": "blocklist", "blockedIds": ["slack"]},
                                "users": {"mode": "allowlist", "allowedIds": ["u9"]}}))
    created = create(platform, "from-file", "--restrictions-file", str(path), "--allow-connector", "hubspot")
    assert created["restrictions"]["connectors"] == {"mode": "allowlist", "allowedIds": ["hubspot"]}
    assert created["restrictions"]["users"] == {"mode": "allowlist", "allowedIds": ["u9"]}


def test_update_replaces_restrictions_whole_and_says_so(platform):
    server = create(platform, "r", "--allow-connector", "hubspot", "--block-user", "u2")
    result = servers(platform, "update", server["serverId"], "--allow-action", "hubspot_get_contact", "--json")
    assert result.returncode == 0 and "replace the server's current ones whole" in result.stderr
    assert json.loads(result.stdout)["restrictions"] == {
        "actions": {"mode": "allowlist", "allowedActions": ["hubspot_get_contact"]}}


def test_update_merges_restrictions_when_asked(platform):
    server = create(platform, "m", "--allow-connector", "hubspot", "--block-user", "u2")
    result = servers(platform, "update", server["serverId"], "--allow-connector", "gmail", "--allow-user", "u3",
                     "--merge-restrictions", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["restrictions"] == {
        "connectors": {"mode": "allowlist", "allowedIds": ["hubspot", "gmail"]},
        "users": {"mode": "allowlist", "allowedIds": ["u3"]},
    }
    assert "users: was a blocklist, now a allowlist (replaced)" in result.stderr


def test_update_of_name_and_visibility(platform):
    server = create(platform, "old")
    result = servers(platform, "update", server["serverId"], "--name", "new", "--public", "--json")
    assert json.loads(result.stdout)["name"] == "new" and json.loads(result.stdout)["mode"] == "public"
    assert json.loads(servers(platform, "update", server["serverId"], "--private", "--json").stdout)["mode"] \
        == "private"


def test_another_users_server_is_forbidden_with_a_clear_line(platform):
    server = create(platform, "mine")
    result = servers(platform, "get", server["serverId"], key=OTHER_KEY)
    assert result.returncode == 1 and "belongs to another user" in result.stderr


def test_a_missing_server_is_not_found(platform):
    result = servers(platform, "get", "srv_nope")
    assert result.returncode == 1 and "No such server" in result.stderr and "servers list" in result.stderr


def test_a_wrong_key_says_to_check_it(platform):
    result = servers(platform, "list", key="ak_wrong_000")
    assert result.returncode == 1 and "ALLOY_API_KEY" in result.stderr and "401" in result.stderr


def test_429_is_retried_after_retry_after(platform):
    platform.control("rate_limit", times=1, retry_after="1")
    result = servers(platform, "list", "--json")
    assert result.returncode == 0, result.stderr
    assert [r["method"] for r in platform.control("state")["requests"]] == ["GET", "GET"]


def test_429_past_the_budget_says_when_to_come_back(platform):
    platform.control("rate_limit", times=10, retry_after="30")
    result = servers(platform, "list")
    assert result.returncode == 1 and "Rate limited" in result.stderr and "30 s" in result.stderr


def test_delete_asks_and_refuses_to_ask_without_a_terminal(platform):
    server = create(platform, "gone")
    refused = servers(platform, "delete", server["serverId"])
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert server["serverId"] in platform.control("state")["servers"]
    deleted = servers(platform, "delete", server["serverId"], "--yes")
    assert deleted.returncode == 0 and "deleted" in deleted.stdout.lower()
    assert platform.control("state")["servers"] == {}


def test_the_user_token_header_is_sent_when_configured(platform):
    servers(platform, "list", env={"ALLOY_USER_TOKEN": "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1c2VyLTQyIn0.sig"})
    servers(platform, "list", env={"ALLOY_USER_ID": USER_ID})
    first, second = platform.control("state")["requests"]
    assert first["user_token"] and second["userid"] == USER_ID


def test_the_servers_commands_need_the_api_key_but_not_a_server_id(platform):
    result = servers(platform, "list", key="", env={"ALLOY_API_KEY": ""})
    assert result.returncode == 2 and "ALLOY_API_KEY" in result.stderr
    result = servers(platform, "list", env={"ALLOY_SERVER_ID": "ignored", "ALLOY_MCP_URL": "https://x.example/mcp"})
    assert result.returncode == 0


def test_connect_prints_the_config_entry_for_that_server(platform):
    server = create(platform, "to-connect")
    result = servers(platform, "connect", server["serverId"], "claude-desktop",
                     env={"ALLOY_USER_ID": USER_ID, "ALLOY_MCP_URL": "https://elsewhere.example/mcp/srv_old"})
    assert result.returncode == 0, result.stderr
    env = json.loads(result.stdout)["mcpServers"]["alloy-to-connect"]["env"]
    assert env == {"ALLOY_SERVER_ID": server["serverId"], "ALLOY_BASE_URL": platform.base,
                   "ALLOY_API_KEY": "<ALLOY_API_KEY>", "ALLOY_USER_ID": USER_ID, "ALLOY_RETRY_BUDGET": "5"}
    assert "ALLOY_MCP_URL" not in env


def test_connect_refuses_a_server_that_does_not_exist(platform, tmp_path):
    result = servers(platform, "connect", "srv_nope", "cursor", "--install", env={"HOME": str(tmp_path)})
    assert result.returncode == 1 and "No such server" in result.stderr
    assert not (tmp_path / ".cursor").exists()


def test_connect_installs_with_the_config_flags(platform, tmp_path):
    server = create(platform, "installed")
    result = servers(platform, "connect", server["serverId"], "cursor", "--install", "--name", "alloy-installed",
                     env={"HOME": str(tmp_path), "ALLOY_USER_ID": USER_ID})
    assert result.returncode == 0, result.stderr
    entry = json.loads((tmp_path / ".cursor" / "mcp.json").read_text())["mcpServers"]["alloy-installed"]
    assert entry["env"]["ALLOY_SERVER_ID"] == server["serverId"] and entry["env"]["ALLOY_API_KEY"] == API_KEY


def test_every_servers_action_has_help_with_an_example():
    for action in ("list", "get", "create", "update", "delete", "connect"):
        result = subprocess.run([sys.executable, "-m", "bridge", "servers", action, "--help"], capture_output=True,
                                text=True, timeout=30, cwd=ROOT)
        assert result.returncode == 0 and "example:" in result.stdout, action


def test_a_503_with_retry_after_is_retried_like_a_429(platform):
    platform.control("rate_limit", times=1, status=503, retry_after="1")
    result = servers(platform, "list")
    assert result.returncode == 0, result.stderr
    assert len([r for r in platform.control("state")["requests"] if r["path"] == "/api/servers"]) == 2


def test_a_delete_whose_answer_was_lost_and_then_404s_when_resent_counts_as_deleted(platform):
    server = create(platform, "flaky-gateway")
    platform.control("lose_answers", times=1)
    result = servers(platform, "delete", server["serverId"], "--yes")
    assert result.returncode == 0, result.stderr
    assert "deleted" in result.stdout.lower() and platform.control("state")["servers"] == {}


def test_a_404_to_a_delete_resent_after_a_429_is_still_no_such_server(platform):
    platform.control("rate_limit", times=1, retry_after="0")
    result = servers(platform, "delete", "srv_missing", "--yes")
    assert result.returncode == 1 and "No such server" in result.stderr
