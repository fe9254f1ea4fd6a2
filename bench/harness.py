"""The measurements, each run for every contender in turn (A B C A B C …) so drift hits all alike."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from bench.contenders import ROOT, Contender


@dataclass
class Plan:
    """How much to measure; `smoke()` is the CI mode (proves it works, measures nothing reliably)."""

    rounds: int = 5
    starts: int = 12
    latency_calls: int = 120
    warmup_calls: int = 30
    throughput_calls: int = 400
    big_repeats: int = 3
    slow_rounds: int = 2
    slow_calls: int = 40

    @classmethod
    def smoke(cls) -> Plan:
        return cls(rounds=1, starts=2, latency_calls=10, warmup_calls=3, throughput_calls=40, big_repeats=1,
                   slow_rounds=1, slow_calls=5)


@dataclass
class Results:
    """Raw samples per figure per contender."""

    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    requests: dict[str, dict[str, int]] = field(default_factory=dict)
    # Figures reported as a total over all rounds divided by a total count: [sum of amounts, sum of counts].
    totals: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def add(self, figure: str, contender: str, value: float | None) -> None:
        if value is not None:
            self.samples.setdefault(figure, {}).setdefault(contender, []).append(value)

    def add_rate(self, figure: str, contender: str, amount: float, count: int) -> None:
        """One round of a per-unit figure: kept as a sample (amount / count) and added to the pooled total."""
        self.add(figure, contender, amount / count)
        total = self.totals.setdefault(figure, {}).setdefault(contender, [0.0, 0])
        total[0] += amount
        total[1] += count

    def median(self, figure: str, contender: str) -> float | None:
        values = self.samples.get(figure, {}).get(contender)
        return statistics.median(values) if values else None

    def value(self, figure: str, contender: str) -> float | None:
        """The reported figure: the pooled rate for per-unit figures, else the median over rounds."""
        total = self.totals.get(figure, {}).get(contender)
        if total and total[1]:
            return total[0] / total[1]
        return self.median(figure, contender)


class RemoteProcess:
    """The benchmark server in a subprocess."""

    def __init__(self, latency_ms: float = 0.0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.server", "--latency-ms", str(latency_ms)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError("benchmark server failed to start")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}/mcp"

    def counts(self, reset: bool = False) -> dict[str, int]:
        path = "reset" if reset else "count"
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_bench/{path}", timeout=10) as r:  # noqa: S310
            return json.loads(r.read())

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def measure_start(contender: Contender, remote: RemoteProcess, results: Results, *, count_requests: bool) -> None:
    """Spawn → first tools/list answered; optionally count the HTTP requests of start+list+close."""
    if count_requests:
        remote.counts(reset=True)
    started = time.perf_counter()
    async with contender.connect(remote.url) as session:
        listed = await session.client.list_tools()
        elapsed = (time.perf_counter() - started) * 1000
        assert len(listed.tools) >= 60
    results.add("cold_start_ms", contender.name, elapsed)
    if count_requests:
        await anyio.sleep(0.3)  # let a DELETE sent at shutdown land
        results.requests[contender.name] = remote.counts()


async def measure_session(contender: Contender, remote: RemoteProcess, plan: Plan, results: Results,
                          prefix: str = "") -> None:
    """One session: echo latency and the bridge's CPU per call, throughput at 8 and 32 in flight, big results,
    peak RSS."""
    async with contender.connect(remote.url) as session:
        client = session.client
        for _ in range(plan.warmup_calls):
            await client.call_tool("echo", {"text": "warm"})
        latencies = []
        cpu_before = session.cpu_seconds()
        for i in range(plan.latency_calls):
            started = time.perf_counter()
            await client.call_tool("echo", {"text": f"ping {i}"})
            latencies.append((time.perf_counter() - started) * 1000)
        cpu_after = session.cpu_seconds()
        results.add(prefix + "echo_p50_ms", contender.name, statistics.median(latencies))
        results.add(prefix + "echo_p99_ms", contender.name, percentile(latencies, 99))
        if not prefix and cpu_before is not None and cpu_after is not None:
            results.add_rate("cpu_per_call_ms", contender.name, (cpu_after - cpu_before) * 1000, plan.latency_calls)
        for in_flight in (8, 32):
            rate = await _throughput(client.call_tool, in_flight, plan.throughput_calls)
            results.add(f"{prefix}throughput_{in_flight}_per_s", contender.name, rate)
        if not prefix:
            for size_kb, figure in ((1024, "big_1mib_ms"), (5 * 1024, "big_5mib_ms")):
                times = []
                for _ in range(plan.big_repeats):
                    started = time.perf_counter()
                    result = await client.call_tool("big", {"n_kb": size_kb})
                    times.append((time.perf_counter() - started) * 1000)
                    assert len(result.content[0].text) == size_kb * 1024
                results.add(figure, contender.name, statistics.median(times))
            results.add("peak_rss_mib", contender.name, session.peak_rss_mib())


async def _throughput(call: Callable[..., Any], in_flight: int, total: int) -> float:
    remaining = total
    lock = anyio.Lock()

    async def worker() -> None:
        nonlocal remaining
        while True:
            async with lock:
                if remaining <= 0:
                    return
                remaining -= 1
            await call("echo", {"text": "load"})

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(in_flight):
            tg.start_soon(worker)
    return total / (time.perf_counter() - started)


async def _guarded(session: Awaitable[None], contender: Contender, progress: Callable[[str], None]) -> None:
    """A peer that fails one session is reported and skipped for that session; ours failing fails the run."""
    try:
        await session
    except Exception as exc:  # noqa: BLE001 - peers are other people's software
        if contender.name == "ours":
            raise
        progress(f"{contender.name} failed a session ({type(exc).__name__}: {_first_line(exc)}); its figures miss "
                 "that session")


def _first_line(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__


async def run(contenders: list[Contender], plan: Plan, progress: Callable[[str], None]) -> Results:
    results = Results()
    remote = RemoteProcess()
    slow_remote = RemoteProcess(latency_ms=20)
    try:
        progress(f"cold start: {plan.starts} starts each")
        for i in range(plan.starts):
            for contender in contenders:
                await _guarded(measure_start(contender, remote, results, count_requests=(i == 0)), contender,
                               progress)
        for r in range(plan.rounds):
            progress(f"round {r + 1}/{plan.rounds}: latency, throughput, big results, memory")
            for contender in contenders:
                await _guarded(measure_session(contender, remote, plan, results), contender, progress)
        slow_plan = Plan(latency_calls=plan.slow_calls, warmup_calls=3, throughput_calls=plan.slow_calls * 4)
        for r in range(plan.slow_rounds):
            progress(f"20 ms remote, round {r + 1}/{plan.slow_rounds}")
            for contender in contenders:
                await _guarded(measure_session(contender, slow_remote, slow_plan, results, prefix="slow_"),
                               contender, progress)
    finally:
        remote.stop()
        slow_remote.stop()
    return results
