"""Soak: many calls, mixed sizes, 32 in flight, with 429s and session expiries injected along the way.

CI runs the short version (2,000 calls). The long version is documented in
docs/reliability.md:  BRIDGE_SOAK_CALLS=10000 uv run pytest -m soak -s
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter

import anyio
import psutil
import pytest

from tests.helpers import bridge_env, open_bridge, running_remote, text_of

pytestmark = [pytest.mark.anyio, pytest.mark.soak]

CALLS = int(os.environ.get("BRIDGE_SOAK_CALLS", "2000"))
IN_FLIGHT = 32
FAULT_EVERY = 300  # a 429 and a session expiry every this many calls
SIZES_KB = (0, 0, 0, 1, 16, 128)  # mostly small echoes, some larger results


def bridge_process() -> psutil.Process:
    candidates = [p for p in psutil.Process().children(recursive=True)
                  if "bridge" in " ".join(p.cmdline()) and "tests.remote_server" not in " ".join(p.cmdline())]
    assert len(candidates) == 1, candidates
    return candidates[0]


async def test_soak_every_call_answered_once_with_its_result(tmp_path):
    exec_log = tmp_path / "executions.txt"
    answers: dict[int, str] = {}
    expected: dict[int, str] = {}
    samples: dict[str, tuple[float, int]] = {}
    window = max(CALLS // 10, min(1000, CALLS // 5))
    started = time.monotonic()
    with running_remote("--exec-log", str(exec_log)) as server:
        env = bridge_env(server, ALLOY_LOG_LEVEL="info", ALLOY_RETRY_BUDGET="10")
        async with open_bridge(tmp_path, env) as (client, run):
            await client.list_tools()
            process = bridge_process()
            next_call = 0
            done = 0
            lock = anyio.Lock()

            async def worker() -> None:
                nonlocal next_call, done
                while True:
                    async with lock:
                        if next_call >= CALLS:
                            return
                        i = next_call
                        next_call += 1
                    size = SIZES_KB[i % len(SIZES_KB)]
                    if size:
                        expected[i] = "x" * (size * 1024)
                        result = await client.call_tool("big", {"n_kb": size, "tag": f"c{i}"})
                    else:
                        expected[i] = f"call {i}"
                        result = await client.call_tool("echo", {"text": f"call {i}", "tag": f"c{i}"})
                    assert i not in answers
                    answers[i] = text_of(result)
                    done += 1
                    if done % FAULT_EVERY == 0:
                        server.add_rule({"status": 429, "headers": {"retry-after": "0"}}, rpc="tools/call")
                        server.expire_sessions()
                    if done == window:
                        samples["first"] = (process.memory_info().rss / 2**20, process.num_fds())
                    if done == CALLS - window // 2:
                        samples["last"] = (process.memory_info().rss / 2**20, process.num_fds())

            async with anyio.create_task_group() as tg:
                for _ in range(IN_FLIGHT):
                    tg.start_soon(worker)
            samples["end"] = (process.memory_info().rss / 2**20, process.num_fds())
        initializes = len(server.requests("initialize"))
    elapsed = time.monotonic() - started
    executions = Counter(exec_log.read_text().split())

    assert len(answers) == CALLS
    assert all(answers[i] == expected[i] for i in range(CALLS))
    assert len(executions) == CALLS and max(executions.values()) == 1, "a call ran twice"
    assert initializes >= 1 + CALLS // FAULT_EVERY - 1, "the expiries were not exercised"
    rss_growth = samples["last"][0] - samples["first"][0]
    fd_growth = samples["end"][1] - samples["first"][1]
    report = {"calls": CALLS, "in_flight": IN_FLIGHT, "seconds": round(elapsed, 1),
              "duplicates": sum(n - 1 for n in executions.values()), "sessions": initializes,
              "rss_first_mib": round(samples["first"][0], 1), "rss_last_mib": round(samples["last"][0], 1),
              "rss_growth_mib": round(rss_growth, 1), "fds_first": samples["first"][1], "fds_end": samples["end"][1]}
    print("SOAK " + json.dumps(report))
    (tmp_path / "soak.json").write_text(json.dumps(report))
    assert rss_growth < 10, report
    assert fd_growth <= 4, report
