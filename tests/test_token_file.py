"""ALLOY_USER_TOKEN_FILE: the user JWT comes from a file and can be rotated while the desktop stays connected."""

from __future__ import annotations

import os

import pytest
from mcp.shared.exceptions import MCPError

from tests.helpers import AUTH_REJECTED, ROTATED_TOKENS, bridge_env, open_bridge, running_remote, text_of

pytestmark = pytest.mark.anyio
TOKEN_A, TOKEN_B = ROTATED_TOKENS


@pytest.fixture
def token_file(tmp_path):
    """The user-token file, holding TOKEN_A to begin with."""
    path = tmp_path / "user.jwt"
    path.write_text(TOKEN_A)
    return path


def token_env(server, token_file, **extra: str) -> dict[str, str]:
    """A bridge authenticating with the API key and the user token from `token_file` (no user id)."""
    return bridge_env(server, ALLOY_USER_ID=None, ALLOY_USER_TOKEN_FILE=str(token_file), **extra)


def tokens_seen(server) -> list[str]:
    return [r["headers"].get("x-alloy-user-token") for r in server.requests() if r["http"] == "POST"]


async def test_a_rewritten_token_file_is_used_from_the_next_request(tmp_path, token_file):
    with running_remote() as server:
        async with open_bridge(tmp_path, token_env(server, token_file, ALLOY_LOG_LEVEL="debug")) as (client, run):
            await client.call_tool("echo", {"text": "first"})
            token_file.write_text(TOKEN_B + "\n")
            server.accept_user_tokens(TOKEN_B)  # the old token is revoked at the same moment
            second = await client.call_tool("echo", {"text": "second"})
        seen = tokens_seen(server)
    assert text_of(second) == "second"
    assert seen[0] == TOKEN_A and seen[-1] == TOKEN_B
    assert "using the new token" in run.stderr


async def test_a_401_rereads_the_token_file_and_retries_once(tmp_path, token_file):
    with running_remote() as server:
        async with open_bridge(tmp_path, token_env(server, token_file)) as (client, _):
            await client.call_tool("echo", {"text": "first"})
            # Rewrite the file without changing its size or modification time: only the 401 reveals it.
            stamp = os.stat(token_file)
            token_file.write_text(TOKEN_B)
            os.utime(token_file, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
            server.accept_user_tokens(TOKEN_B)
            result = await client.call_tool("echo", {"text": "after 401", "tag": "t"})
        seen = tokens_seen(server)
        executions = server.executions()
    assert text_of(result) == "after 401" and executions["t"] == 1
    assert seen[-2:] == [TOKEN_A, TOKEN_B]


async def test_a_revoked_token_without_a_new_one_is_a_clear_401(tmp_path, token_file):
    with running_remote() as server:
        async with open_bridge(tmp_path, token_env(server, token_file)) as (client, _):
            await client.list_tools()
            server.accept_user_tokens(TOKEN_B)
            with pytest.raises(MCPError) as caught:
                await client.call_tool("echo", {"text": "x"})
    assert caught.value.code == AUTH_REJECTED


async def test_a_rotated_token_is_redacted_from_errors_too(tmp_path, token_file):
    with running_remote() as server:
        async with open_bridge(tmp_path, token_env(server, token_file)) as (client, _):
            await client.list_tools()
            token_file.write_text(TOKEN_B + "\n")
            server.add_rule({"status": 401, "body": {"error": f"token {TOKEN_B} expired"}}, rpc="tools/call",
                            times=2)
            with pytest.raises(MCPError) as caught:
                await client.call_tool("echo", {"text": "x"})
    assert caught.value.code == AUTH_REJECTED
    assert TOKEN_B not in caught.value.message and "token *** expired" in caught.value.message
