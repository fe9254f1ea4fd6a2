"""`uv run python -m bench [--smoke] [--no-peers] [--out DIR]`: run the benchmark, print the table.

Writes `bench/results/latest.md` and `bench/results/latest.json` (or into --out).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import anyio

from bench import contenders, harness, report


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a few samples only: proves the benchmark runs")
    parser.add_argument("--no-peers", action="store_true", help="measure direct and ours only")
    parser.add_argument("--rounds", type=int, help="override the number of measurement rounds")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()

    plan = harness.Plan.smoke() if args.smoke else harness.Plan()
    if args.rounds:
        plan.rounds = args.rounds
    peers, notes = ([], ["peers skipped (--no-peers)"]) if args.no_peers else contenders.available_peers()
    everyone = [contenders.direct(), contenders.ours(), *peers]
    versions = {c.name: c.version for c in peers}

    def progress(text: str) -> None:
        print(f"[bench] {text}", file=sys.stderr, flush=True)

    progress("contenders: " + ", ".join(c.name for c in everyone) + (f" ({'; '.join(notes)})" if notes else ""))
    results = anyio.run(harness.run, everyone, plan, progress)
    head = report.header(versions, plan)
    table = report.markdown(results, [c.name for c in everyone], head, notes)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "smoke" if args.smoke else "latest"
    (args.out / f"{name}.md").write_text(table)
    (args.out / f"{name}.json").write_text(json.dumps(report.as_json(results, head), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
