"""Ledger backends benchmark: aggregate allocate+release pairs per second with 16
processes on the file ledger, Redis and PostgreSQL, from one run.

Each process holds an engine on the ledger and loops allocate + release through the
Python API for the same wall-clock window; the figure is the sum of their pairs divided
by the window. The servers are real ones started here (tests/servers.py: redis-server
without persistence, PostgreSQL with fsync off, both on loopback), like the test suite's.
Goal: Redis at least 2,000 pairs/s on this machine.

usage: python bench/bench_backends.py [--processes N] [--seconds S] [--machine-check]

--machine-check keeps the default configuration's machine memory check (a read of
/proc/meminfo and of each owner's RSS per decision); the default leaves it out, to
measure the ledgers rather than /proc.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

BENCH_CONFIG = """
layers:
  bench:
    services: []
    pool: {{memory_mb: 1000000, cpu_percent: 100, instances: 100000, scope: global}}
limits: {{max_memory_mb: 10000000, max_cpu_percent: 100, max_parallel_instances: 100000}}
machine: {{check_memory: {check}}}
"""
GOAL = {"redis": 2000.0}


def worker(config: str, ledger: str, state: str, host: str, start_at: float, seconds: float,
           results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    from netra_rm.core.engine import Engine

    engine = Engine.from_options(config_path=config, ledger=ledger,
                                 env={"NETRA_RM_HOST_ID": host, "XDG_STATE_HOME": state})
    request = engine.resolve_request("bench", "bench", memory_mb=1, cpu_percent=0.001)
    owner = engine.current_process_owner()
    for _ in range(3):  # connect, load the scripts, warm up
        engine.release([engine.allocate(request, owner).id])
    while time.time() < start_at:
        time.sleep(0.001)
    pairs, end = 0, start_at + seconds
    while time.time() < end:
        engine.release([engine.allocate(request, owner).id])
        pairs += 1
    results.put(pairs)


def measure(config: Path, ledger: str, state: Path, processes: int, seconds: float) -> float:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_at = time.time() + 2.0 + processes * 0.15  # every worker connected and warm by then
    procs = [context.Process(target=worker, args=(str(config), ledger, str(state), f"bench-host-{i % 4}",
                                                  start_at, seconds, results)) for i in range(processes)]
    for proc in procs:
        proc.start()
    total = sum(results.get(timeout=seconds + 120) for _ in procs)
    for proc in procs:
        proc.join()
    return total / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0, help="the measured window per backend")
    parser.add_argument("--machine-check", action="store_true", help="keep the machine memory check")
    args = parser.parse_args()

    from servers import PostgresServer, RedisServer, ServerUnavailable

    rows: list[tuple[str, float | None, str]] = []
    with tempfile.TemporaryDirectory(prefix="netra-rm-bench-") as tmp:
        workdir = Path(tmp)
        config = workdir / "bench.yaml"
        config.write_text(BENCH_CONFIG.format(check="true" if args.machine_check else "false"))
        servers = {"redis": RedisServer(), "postgresql": PostgresServer()}
        try:
            locations = {"file": str(workdir / "ledger.json")}
            for name, server in servers.items():
                try:
                    server.start()
                    locations[name] = f"{server.url}?ledger=bench"
                except ServerUnavailable as exc:
                    rows.append((name, None, f"not measured: {exc}"))
            for name in ("file", "redis", "postgresql"):
                if name in locations:
                    rate = measure(config, locations[name], workdir / f"state-{name}", args.processes, args.seconds)
                    rows.append((name, rate, ""))
        finally:
            for server in servers.values():
                server.close()

    print(f"Allocate+release pairs per second, {args.processes} processes, {args.seconds:g} s each, "
          f"{os.cpu_count()} CPUs, machine check {'on' if args.machine_check else 'off'}")
    print(f"{'backend':<12}{'pairs/s':>10}{'vs file':>10}  goal")
    base = next((rate for name, rate, _ in rows if name == "file" and rate), None)
    for name, rate, note in sorted(rows, key=lambda r: ("file", "redis", "postgresql").index(r[0])):
        if rate is None:
            print(f"{name:<12}{'-':>10}{'-':>10}  {note}")
            continue
        ratio = f"{rate / base:.2f}x" if base else "-"
        goal = GOAL.get(name)
        verdict = f">= {goal:,.0f} {'ok' if rate >= goal else 'MISSED'}" if goal else ""
        print(f"{name:<12}{rate:>10,.0f}{ratio:>10}  {verdict}")


if __name__ == "__main__":
    main()
