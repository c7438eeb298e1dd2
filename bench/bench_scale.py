"""Human commands at scale: `verify`, `history --limit 20` and `status` with many allocations.

Goals (issue 14): `verify` at 10,000 active allocations in at most 2x the time it takes to
parse the journal (the peer: one ``json.loads`` per line, nothing checked); `history
--limit 20` on a 100,000-event journal under 50 ms (beside the old way: parse the whole
journal, keep the last 20); `status` at 10,000 active under 1 s, as a whole command (beside
`status --all`, which draws every row, and `status --json`, which lists every one).

The ledger is filled through the engine's own transactions (10,000 grants, then
grant+release pairs in batches to reach 100,000 journal events), so what is measured is
what a real ledger of that size holds. `--ledger URL` runs the same on a Redis or
PostgreSQL ledger (a fresh ``?ledger=NAME`` is used).

usage: python bench/bench_scale.py [--active N] [--events N] [--ledger URL] [--repeat K]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchlib import entry_point  # noqa: E402

CONFIG = """
layers:
  big:
    services: []
    pool: {memory_mb: 100000000, cpu_percent: 100, instances: 100000}
services: {}
limits: {max_memory_mb: 100000000, max_cpu_percent: 100, max_parallel_instances: 100000}
machine: {check_memory: false}
"""


def fill(engine, active: int, events: int) -> None:  # type: ignore[no-untyped-def]
    """``active`` allocations held, and grant+release pairs until the journal holds
    ``events`` events; through the engine's transactions, in batches."""
    from netra_rm.ledger import Scope

    request = engine.resolve_request("big", "bench", memory_mb=1, cpu_percent=0.001)
    owner = engine.owner()
    keys = frozenset(c.key for c in engine.charges(request))
    found = engine.charges(request)

    def grant_batch(n: int, *, release: bool) -> None:
        with engine.transaction(Scope(keys=keys)) as (txn, _):
            from netra_rm.core.admission import Decision

            for _ in range(n):
                taken = txn.taken(found[0].key)
                slot = len(taken)
                while slot in taken:
                    slot += 1
                a = engine._grant(txn, request, owner, found, Decision(admitted=True, slots={found[0].key: slot}))
                if release:
                    engine._drop(txn, a, "release")

    done = 0
    while done < active:
        n = min(1000, active - done)
        grant_batch(n, release=False)
        done += n
    pairs = max(0, (events - active) // 2)
    while pairs > 0:
        n = min(2000, pairs)
        grant_batch(n, release=True)
        pairs -= n


def timed(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def command(args: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    proc = subprocess.run([*entry_point(), *args], env=env, capture_output=True, text=True)
    took = time.perf_counter() - began
    if proc.returncode not in (0, 1):
        raise SystemExit(f"netra-rm {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--active", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--ledger", default=None, help="a redis:// or postgresql:// URL (default: a file)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from netra_rm.config import load_config
    from netra_rm.core.engine import Engine
    from netra_rm.core.verify import ledger_history, parse_lines, recent_events, verify_ledger

    work = Path(tempfile.mkdtemp(prefix="netra-rm-bench-scale-"))
    config = work / "netra-rm.yaml"
    config.write_text(CONFIG)
    location = args.ledger or str(work / "ledger" / "ledger.json")
    if args.ledger:
        sep = "&" if "?" in location else "?"
        location = f"{location}{sep}ledger=bench{os.getpid()}"
    env = {**os.environ, "NETRA_RM_CONFIG": str(config), "NETRA_RM_LEDGER": location,
           "XDG_STATE_HOME": str(work / "state"), "XDG_CACHE_HOME": str(work / "cache"),
           "NETRA_RM_JOURNAL_MAX_BYTES": str(1 << 30), "COLUMNS": "160"}
    engine = Engine(load_config(config, env={}), _open(location, env), env={"NETRA_RM_HOST_ID": "bench"})
    began = time.perf_counter()
    fill(engine, args.active, args.events)
    print(f"filled {args.active} active allocations and {args.events} journal events in "
          f"{time.perf_counter() - began:.1f}s ({engine.ledger.backend} ledger)")

    _, lines, _ = engine.ledger.journal_lines()
    parse = timed(lambda: [json.loads(line) for line in lines], args.repeat)
    verify = timed(lambda: verify_ledger(engine), args.repeat)
    report = verify_ledger(engine)
    assert report.clean, report.findings[:3]
    tail = timed(lambda: ledger_history(engine, limit=20), args.repeat)
    whole = timed(lambda: recent_events(lines, committed_seq=10**18, limit=20), args.repeat)
    parse_all = timed(lambda: parse_lines(lines), 1)
    version = statistics.median(command(["--version"], env) for _ in range(args.repeat))
    history_cmd = statistics.median(command(["history", "--limit", "20"], env) for _ in range(args.repeat))
    status_cmd = statistics.median(command(["status"], env) for _ in range(args.repeat))
    status_all = statistics.median(command(["status", "--all"], env) for _ in range(args.repeat))
    status_json = statistics.median(command(["status", "--json"], env) for _ in range(args.repeat))

    rows = [
        ("verify, 10,000 active (in-process)", f"{verify * 1000:.0f} ms",
         f"parse the journal: {parse * 1000:.0f} ms", f"{verify / parse:.2f}x", "<= 2x", verify <= 2 * parse),
        ("history --limit 20 (in-process)", f"{tail * 1000:.1f} ms",
         f"parse the whole journal: {whole * 1000:.0f} ms", f"{tail / whole:.3f}x", "< 50 ms", tail < 0.05),
        ("history --limit 20 (command)", f"{history_cmd * 1000:.0f} ms",
         f"netra-rm --version: {version * 1000:.0f} ms", f"+{(history_cmd - version) * 1000:.0f} ms", "", True),
        ("status (command, summary table)", f"{status_cmd * 1000:.0f} ms",
         f"status --all: {status_all * 1000:.0f} ms", "", "< 1 s", status_cmd < 1.0),
        ("status --json (command, every row)", f"{status_json * 1000:.0f} ms", "", "", "", True),
    ]
    print(f"\n{len(lines)} journal lines; parsing them with the checker's rules alone: {parse_all * 1000:.0f} ms\n")
    print(f"{'measure':38} {'netra-rm':>10}  {'beside':34} {'ratio':>8}  {'goal':8} met")
    for name, ours, peer, ratio, goal, met in rows:
        print(f"{name:38} {ours:>10}  {peer:34} {ratio:>8}  {goal:8} {'yes' if met else 'NO'}")


def _open(location: str, env: dict[str, str]):  # type: ignore[no-untyped-def]
    from netra_rm.ledger import open_ledger

    return open_ledger(location, env=env)


if __name__ == "__main__":
    main()
