"""Hostile input on stdin (property-based): nothing crashes the bridge, stdout stays JSON-RPC.

One bridge process serves every example of a test. After each example the
test sends a ping and waits for its answer, proving the bridge is still
serving; every line it ever writes to stdout must be a JSON-RPC message.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import ROOT, SECRETS, bridge_env

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
METHODS = ["ping", "tools/list", "tools/call", "resources/read", "prompts/get", "initialize", "server/discover",
            "notifications/cancelled", "notifications/initialized", "logging/setLevel", "completion/complete",
            "x/unknown", ""]
ids = st.none() | st.integers(-2**70, 2**70) | st.text(max_size=12) | st.booleans() | st.floats(allow_nan=False)
rpc_like = st.fixed_dictionaries(
    {"jsonrpc": st.sampled_from(["2.0", "2.0", "1.0", 2])},
    optional={"id": ids, "method": st.sampled_from(METHODS) | st.text(max_size=10), "params": json_values,
              "result": json_values, "error": json_values},
)


class SyncBridge:
    """A bridge subprocess driven synchronously (hypothesis tests are synchronous)."""

    def __init__(self, env: dict[str, str], stderr_path: Path) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith("ALLOY_")}
        self.stderr_file = stderr_path.open("wb")
        self.process = subprocess.Popen([sys.executable, "-m", "bridge"], cwd=stderr_path.parent,
                                        env={**base, **env}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.stderr_file)
        self.buffer = b""
        self.seen: list[Any] = []
        self.pings = 0

    def send(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def _read_line(self, deadline: float) -> Any:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("the bridge stopped answering")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise AssertionError(f"the bridge exited (code {self.process.poll()})")
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        message = json.loads(line)
        assert_json_rpc(message)
        self.seen.append(message)
        return message

    def still_serving(self, timeout: float = 15.0) -> None:
        self.pings += 1
        ping_id = f"alive-{self.pings}"
        self.send(json.dumps({"jsonrpc": "2.0", "id": ping_id, "method": "ping"}).encode() + b"\n")
        deadline = time.monotonic() + timeout
        while True:
            message = self._read_line(deadline)
            if message.get("id") == ping_id and "method" not in message:
                assert message.get("result") == {} or "error" in message
                return

    def close(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.close()
        deadline = time.monotonic() + 10
        try:
            while True:
                self._read_line(deadline)
        except AssertionError:
            pass
        code = self.process.wait(timeout=10)
        self.stderr_file.close()
        return code


def assert_json_rpc(message: Any) -> None:
    assert isinstance(message, dict) and message.get("jsonrpc") == "2.0", message
    if "method" in message:
        assert isinstance(message["method"], str)
    else:
        assert "id" in message and (("result" in message) != ("error" in message)), message
        if "error" in message:
            assert isinstance(message["error"]["code"], int) and isinstance(message["error"]["message"], str)


@pytest.fixture(scope="module")
def fuzz_bridge(shared_remote, tmp_path_factory) -> Iterator[SyncBridge]:
    folder = tmp_path_factory.mktemp("fuzz")
    bridge = SyncBridge(bridge_env(shared_remote, ALLOY_LOG_LEVEL="info"), folder / "bridge-stderr.log")
    init = {"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "1"}}}
    bridge.send(json.dumps(init).encode() + b"\n")
    bridge.still_serving()
    yield bridge
    assert bridge.close() == 0
    stderr = (folder / "bridge-stderr.log").read_text(errors="replace")
    assert "Traceback" not in stderr and "uncaught" not in stderr
    for secret in SECRETS:
        assert secret not in stderr


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(value=json_values)
def test_arbitrary_json_values(fuzz_bridge, value):
    fuzz_bridge.send(json.dumps(value).encode() + b"\n")
    fuzz_bridge.still_serving()


@FUZZ
@given(message=rpc_like)
def test_json_rpc_shaped_messages(fuzz_bridge, message):
    fuzz_bridge.send(json.dumps(message).encode() + b"\n")
    fuzz_bridge.still_serving()


@FUZZ
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes(fuzz_bridge, data):
    fuzz_bridge.send(data + b"\n")
    fuzz_bridge.still_serving()


@FUZZ
@given(batch=st.lists(rpc_like, max_size=5))
def test_batches(fuzz_bridge, batch):
    fuzz_bridge.send(json.dumps(batch).encode() + b"\n")
    fuzz_bridge.still_serving()


def test_fuzz_corpus_is_real(fuzz_bridge):
    """The fuzzing above really reached the bridge: it answered errors, not just pings."""
    codes = {m["error"]["code"] for m in fuzz_bridge.seen if isinstance(m.get("error"), dict)}
    assert {-32700, -32600} <= codes


_ = ROOT
