"""The desktop side: what the bridge does with its stdin and stdout.

These tests write raw bytes to the bridge's stdin (no SDK client in between),
so they can send what a well-behaved client never would.
"""

from __future__ import annotations

import json
import time

import anyio
import pytest

from tests.helpers import bridge_env, raw_bridge, wait_for

pytestmark = pytest.mark.anyio


async def test_malformed_line_gets_a_parse_error_and_the_bridge_keeps_serving(remote, tmp_path):
    async with raw_bridge(tmp_path, bridge_env(remote)) as bridge:
        await bridge.initialize()
        await bridge.send(b'{"jsonrpc": "2.0", "id": 5, "method": \n')
        error = await bridge.read_message()
        assert error == {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": error["error"]["message"]}}
        answer = await bridge.request(6, "tools/list", {})
    assert answer["result"]["tools"]


async def test_invalid_utf8_gets_a_parse_error(remote, tmp_path):
    async with raw_bridge(tmp_path, bridge_env(remote)) as bridge:
        await bridge.initialize()
        await bridge.send(b'{"jsonrpc":"2.0","id":1,"method":"\xff\xfe"}\n')
        error = await bridge.read_message()
        answer = await bridge.request(2, "ping")
    assert error["id"] is None and error["error"]["code"] == -32700
    assert answer["result"] == {}


async def test_valid_json_that_is_not_json_rpc_gets_invalid_request(remote, tmp_path):
    async with raw_bridge(tmp_path, bridge_env(remote)) as bridge:
        await bridge.send(b'"just a string"\n')
        first = await bridge.read_message()
        await bridge.send(b'{"id": 9, "method": "ping"}\n')
        second = await bridge.read_message()
    assert first["error"]["code"] == -32600 and first["id"] is None
    assert second["error"]["code"] == -32600 and second["id"] == 9


async def test_batch_array_is_relayed_message_by_message(remote, tmp_path):
    async with raw_bridge(tmp_path, bridge_env(remote)) as bridge:
        await bridge.initialize()
        await bridge.send_json([{"jsonrpc": "2.0", "id": "b1", "method": "ping"},
                                {"jsonrpc": "2.0", "id": "b2", "method": "tools/list"}])
        answers = [await bridge.read_message(), await bridge.read_message()]
    assert sorted(a["id"] for a in answers) == ["b1", "b2"]
    assert all("result" in a for a in answers)


async def test_answer_to_an_unknown_id_from_the_desktop_is_forwarded_harmlessly(remote, tmp_path):
    async with raw_bridge(tmp_path, bridge_env(remote)) as bridge:
        await bridge.initialize()
        await bridge.send_json({"jsonrpc": "2.0", "id": "never-asked", "result": {}})
        answer = await bridge.request(3, "ping")
    assert answer["result"] == {}


async def test_duplicate_in_flight_request_id_is_refused_without_reaching_the_remote(remote, tmp_path):
    async with raw_bridge(tmp_path, bridge_env(remote)) as bridge:
        await bridge.initialize()
        call = {"jsonrpc": "2.0", "id": 40, "method": "tools/call",
                "params": {"name": "slow", "arguments": {"seconds": 0.5, "tag": "dup"}}}
        await bridge.send_json(call)
        await bridge.send_json(call)
        first = await bridge.read_message()
        second = await bridge.read_message()
    assert first["error"]["code"] == -32600 and "already used" in first["error"]["message"]
    assert second["result"]["content"][0]["text"] == "slept 0.5"
    assert remote.executions() == {"dup": 1}


async def test_stdin_eof_ends_the_session_and_exits_quickly_with_calls_in_flight(remote, tmp_path):
    async with raw_bridge(tmp_path, bridge_env(remote)) as bridge:
        await bridge.initialize()
        for i in range(20):
            await bridge.send_json({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                                    "params": {"name": "slow", "arguments": {"seconds": 30, "tag": f"s{i}"}}})
        await wait_for(lambda: len(remote.executions()) == 20)
        started = time.monotonic()
        assert bridge.process.stdin is not None
        await bridge.process.stdin.aclose()
        with anyio.fail_after(5):
            code = await bridge.process.wait()
        elapsed = time.monotonic() - started
    assert code == 0
    assert elapsed < 2.0
    assert remote.requests()[-1]["http"] == "DELETE"


async def test_answers_already_on_their_way_are_written_before_exit(remote, tmp_path):
    async with raw_bridge(tmp_path, bridge_env(remote)) as bridge:
        await bridge.initialize()
        await bridge.send_json({"jsonrpc": "2.0", "id": "last", "method": "tools/call",
                                "params": {"name": "slow", "arguments": {"seconds": 0.2}}})
        assert bridge.process.stdin is not None
        await bridge.process.stdin.aclose()
        answer = await bridge.read_message()
    assert answer["id"] == "last" and answer["result"]["content"][0]["text"] == "slept 0.2"


async def test_stdout_carries_only_json_rpc_even_at_debug_log_level(remote, tmp_path):
    async with raw_bridge(tmp_path, bridge_env(remote, ALLOY_LOG_LEVEL="debug")) as bridge:
        await bridge.initialize()
        await bridge.request(2, "tools/list")
        await bridge.request(3, "tools/call", {"name": "log", "arguments": {}})
        assert bridge.process.stdin is not None
        await bridge.process.stdin.aclose()
        assert bridge.process.stdout is not None
        rest = bridge.buffer
        with anyio.fail_after(5):
            async for chunk in bridge.process.stdout:
                rest += chunk
    for line in rest.splitlines():
        message = json.loads(line)
        assert message["jsonrpc"] == "2.0"
    assert "alloy-mcp-bridge" in bridge.stderr


async def test_oversized_message_is_refused_with_its_request_id(remote, tmp_path):
    env = bridge_env(remote, ALLOY_MAX_MESSAGE_BYTES=str(10 * 1024 * 1024))
    async with raw_bridge(tmp_path, env) as bridge:
        await bridge.initialize()
        huge = json.dumps({"jsonrpc": "2.0", "id": 77, "method": "tools/call",
                           "params": {"name": "echo", "arguments": {"text": "y" * (20 * 1024 * 1024)}}})
        await bridge.send(huge.encode() + b"\n")
        error = await bridge.read_message(timeout=30)
        answer = await bridge.request(78, "ping")
    assert error["id"] == 77 and error["error"]["code"] == -32062
    assert answer["result"] == {}
    assert not remote.requests("tools/call")


async def test_twenty_megabyte_line_within_the_limit_reaches_the_remote_which_refuses_it(remote, tmp_path):
    async with raw_bridge(tmp_path, bridge_env(remote)) as bridge:
        await bridge.initialize()
        huge = json.dumps({"jsonrpc": "2.0", "id": 91, "method": "tools/call",
                           "params": {"name": "echo", "arguments": {"text": "z" * (20 * 1024 * 1024)}}})
        await bridge.send(huge.encode() + b"\n")
        error = await bridge.read_message(timeout=30)
        answer = await bridge.request(92, "ping")
    assert error["id"] == 91 and error["error"]["data"]["httpStatus"] == 413
    assert answer["result"] == {}


async def test_sigterm_ends_the_session_and_exits_cleanly(remote, tmp_path):
    import signal

    async with raw_bridge(tmp_path, bridge_env(remote)) as bridge:
        await bridge.initialize()
        await bridge.request(2, "tools/list")
        bridge.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(5):
            code = await bridge.process.wait()
    assert code == 0
    assert remote.requests()[-1]["http"] == "DELETE"
    assert "received SIGTERM" in bridge.stderr


async def test_a_second_initialize_opens_a_new_session_and_ends_the_old_one(remote, tmp_path):
    async with raw_bridge(tmp_path, bridge_env(remote)) as bridge:
        await bridge.initialize()
        first = remote.requests("initialize")[0]
        await bridge.request("again", "initialize", {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "2"}})
        answer = await bridge.request(3, "tools/list")
        await wait_for(lambda: any(r["http"] == "DELETE" for r in remote.requests()))
    assert "result" in answer
    assert len(remote.requests("initialize")) == 2 and first["status"] == 200


def test_files_as_stdin_and_stdout_work_through_the_thread_fallback(remote, tmp_path):
    """Regular files cannot be polled by asyncio; the bridge reads and writes them through threads."""
    import os
    import subprocess
    import sys

    requests = tmp_path / "requests.jsonl"
    requests.write_text(
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "file", "version": "1"}}})
        + "\n" + json.dumps({"jsonrpc": "2.0", "id": 2, "method": "ping"}) + "\n")
    output = tmp_path / "answers.jsonl"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ALLOY_")}, **bridge_env(remote)}
    with requests.open("rb") as stdin, output.open("wb") as stdout:
        result = subprocess.run([sys.executable, "-m", "bridge"], stdin=stdin, stdout=stdout,
                                stderr=subprocess.PIPE, env=env, cwd=tmp_path, timeout=30)
    answers = [json.loads(line) for line in output.read_text().splitlines()]
    assert result.returncode == 0
    assert {a["id"] for a in answers} == {1, 2}
    assert all("result" in a for a in answers)
    written = output.read_bytes()
    assert written.endswith(b"}\n") and b"\r" not in written  # `\n` alone, whatever the platform
