"""Secrets never leak: not in stderr, log files, error messages or repr — whoever wrote them."""

from __future__ import annotations

import io
import logging

import pytest
from mcp.shared.exceptions import MCPError

from bridge.logs import RedactingFormatter, redact
from tests.helpers import ACCESS_TOKEN, API_KEY, USER_TOKEN, bridge_env, open_bridge

pytestmark = pytest.mark.anyio


def test_redaction_covers_every_logger_and_tracebacks():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter([API_KEY, ACCESS_TOKEN]))
    for name in ("httpx2", "mcp.client.streamable_http", "bridge.http", "some.other.library"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.propagate = False
        try:
            logger.warning("GET https://mcp.runalloy.com/mcp/srv/%s key=%s", ACCESS_TOKEN, API_KEY)
            try:
                raise RuntimeError(f"failed with Authorization: Bearer {API_KEY}")
            except RuntimeError:
                logger.exception("boom")
        finally:
            logger.removeHandler(handler)
            logger.propagate = True
    text = stream.getvalue()
    assert API_KEY not in text and ACCESS_TOKEN not in text
    assert text.count("***") >= 12


def test_redact_replaces_longest_secret_first():
    formatter = RedactingFormatter(["abc", "abcdef"])
    assert redact("xx abcdef yy", formatter.secrets) == "xx *** yy"
    assert formatter.secrets == ("abcdef", "abc")


async def test_token_url_is_masked_in_debug_logs_and_log_file(remote, tmp_path):
    log_file = tmp_path / "logs" / "bridge.log"
    env = bridge_env(remote, ALLOY_MCP_URL=remote.token_url, ALLOY_API_KEY=None, ALLOY_USER_ID=None,
                     ALLOY_LOG_LEVEL="debug", ALLOY_LOG_FILE=str(log_file))
    async with open_bridge(tmp_path, env) as (client, run):
        await client.call_tool("echo", {"text": "x"})
    for text in (run.stderr, log_file.read_text()):
        assert "/mcp/srv_test/***" in text
        assert ACCESS_TOKEN not in text


async def test_secrets_echoed_by_the_remote_are_redacted_from_errors(remote, tmp_path):
    remote.add_rule({"status": 401, "body": {"error": f"key {API_KEY} and jwt {USER_TOKEN} are revoked"}},
                    rpc="tools/call")
    env = bridge_env(remote, ALLOY_USER_TOKEN=USER_TOKEN)
    async with open_bridge(tmp_path, env) as (client, run):
        with pytest.raises(MCPError) as caught:
            await client.call_tool("echo", {"text": "x"})
    assert API_KEY not in caught.value.message and USER_TOKEN not in caught.value.message
    assert "***" in caught.value.message
    assert API_KEY not in str(caught.value.data)


async def test_secrets_in_a_json_rpc_error_body_are_redacted_before_the_desktop_sees_them(remote, tmp_path):
    body = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": f"bad key {API_KEY}"}}
    remote.add_rule({"status": 400, "body": body}, rpc="tools/call")
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, _):
        with pytest.raises(MCPError) as caught:
            await client.call_tool("echo", {"text": "x"})
    assert caught.value.code == -32602  # the remote's own answer, passed through
    assert API_KEY not in caught.value.message and "***" in caught.value.message


def test_check_never_prints_a_secret_the_remote_echoes(remote):
    from tests.test_commands import run_cli

    body = {"jsonrpc": "2.0", "id": "x", "error": {"code": -32600, "message": f"key {API_KEY} revoked"}}
    remote.add_rule({"status": 400, "body": body}, rpc="initialize")
    result = run_cli("check", env={"ALLOY_MCP_URL": remote.url, "ALLOY_API_KEY": API_KEY, "ALLOY_USER_ID": "u"})
    assert result.returncode == 1 and "revoked" in result.stderr
    assert API_KEY not in result.stderr
