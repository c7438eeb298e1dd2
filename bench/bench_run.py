"""`netra-rm run` and contended throughput, beside the usual tools.

Prints, from one run:
  * the median wall time of `netra-rm run --layer fast_feedback --category x -- true`
    beside `sem --fg --id x -j 4 true` (GNU parallel) and `flock FILE true`
    (goal: no slower than sem). Bytecode is cached (PYTHONPYCACHEPREFIX in a temp
    directory), as after `pip install`; two more rows show netra-rm compiled from source
    at every start (PYTHONDONTWRITEBYTECODE=1 with no .pyc files) and `run` through
    Typer instead of its fast path;
  * aggregate allocate+release pairs per second with 8 processes contending on one pool
    through the Python API (journal on, as shipped; and with NETRA_RM_JOURNAL_SYNC=1),
    beside 8 processes running the bare flock + JSON read + write + fsync + rename loop;
  * how long a queued waiter takes to be admitted after a release: woken through its
    FIFO (as shipped) and, for comparison, by polling alone.

usage: python bench/bench_run.py [--runs N] [--seconds S] [--processes P] [--rounds R] [--wake-rounds W]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import bare_cycle, entry_point

WIDTH = 66  # the label column of the printed tables

BENCH_CONFIG = """
layers:
  bench:
    services: []
    pool: {memory_mb: 1000000, cpu_percent: 100, instances: 64}
  single:
    services: []
    pool: {memory_mb: 100, cpu_percent: 100, instances: 1}
limits: {max_memory_mb: 10000000, max_cpu_percent: 100, max_parallel_instances: 100000}
machine: {check_memory: false}
"""


def median_ms(argv: list[str], runs: int, env: dict[str, str]) -> float:
    subprocess.run(argv, env=env, check=True, capture_output=True)  # warm the page cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def start_up(workdir: Path, runs: int) -> list[tuple[str, float | None]]:
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    # sem keeps its semaphores under $HOME/.parallel; bytecode is cached, as after `pip install`
    env = {**base, "NETRA_RM_LEDGER": str(workdir / "run-ledger.json"), "NETRA_RM_CONFIG": "",
           "HOME": str(workdir), "PYTHONPYCACHEPREFIX": str(workdir / "pycache")}
    run = [*entry_point(), "run", "--layer", "fast_feedback", "--category", "x", "--", "true"]
    rows: list[tuple[str, float | None]] = [("netra-rm run --layer fast_feedback --category x -- true",
                                             median_ms(run, runs, env))]
    sem = shutil.which("sem")
    rows.append(("sem --will-cite --fg --id x -j 4 true",
                 median_ms([sem, "--will-cite", "--fg", "--id", "x", "-j", "4", "true"], runs, env) if sem else None))
    flock = shutil.which("flock")
    rows.append(("flock FILE true", median_ms([flock, str(workdir / "flock-file"), "true"], runs, env)
                 if flock else None))
    uncached = {k: v for k, v in env.items() if k != "PYTHONPYCACHEPREFIX"} | {"PYTHONDONTWRITEBYTECODE": "1"}
    rows.append(("netra-rm run, netra_rm compiled at each start (no .pyc)", median_ms(run, runs, uncached)))
    rows.append(("netra-rm run, through Typer (global --json skips the fast path)",
                 median_ms([*entry_point(), "--json", *run[1:]], runs, env)))
    return rows


# -- contended throughput -------------------------------------------------------------------

def _api_worker(config: str, ledger: str, sync: bool, seconds: float, go: Any, results: Any) -> None:
    from netra_rm.core.engine import Engine

    engine = Engine.from_options(config_path=config, ledger=ledger,
                                 env={"NETRA_RM_JOURNAL_SYNC": "1"} if sync else {})
    owner = engine.current_process_owner()
    request = engine.resolve_request("bench", "bench", memory_mb=1, cpu_percent=0)
    go.wait()
    pairs, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        allocation, _ = engine.try_allocate(request, owner)
        if allocation is not None:
            engine.release([allocation.id])
            pairs += 1
    results.put(pairs)


def _bare_worker(path: str, seconds: float, go: Any, results: Any) -> None:
    """Two locked read-modify-write cycles per pair: the physical limit of this design."""
    target = Path(path)
    lock = target.with_name(target.name + ".lock")
    me = str(os.getpid())

    tmp = target.with_name(f".{target.name}.{me}.tmp")

    def cycle(change: Any) -> None:
        bare_cycle(target, lock, tmp, change)

    record = {"id": me, "layer": "bench", "memory_mb": 1}
    go.wait()
    pairs, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        cycle(lambda d: d["allocations"].append(record))
        cycle(lambda d: d["allocations"].remove(record))
        pairs += 1
    results.put(pairs)


def contended(target: Any, args_for: Any, processes: int, seconds: float) -> float:
    ctx = multiprocessing.get_context("fork")
    go, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args_for(i), seconds, go, results)) for i in range(processes)]
    for p in procs:
        p.start()
    time.sleep(0.5)  # let every worker import and open the ledger before the clock starts
    go.set()
    total = sum(results.get(timeout=seconds + 120) for _ in procs)
    for p in procs:
        p.join()
    return total / seconds


def throughput(workdir: Path, processes: int, seconds: float, rounds: int) -> list[tuple[str, float]]:
    """Each loop in ``rounds`` alternating slices of ``seconds``, so that the disk's moods hit
    them alike; the median of the slices."""
    config = workdir / "bench.yaml"
    config.write_text(BENCH_CONFIG)
    bare = workdir / "bare.json"
    bare.write_text(json.dumps({"schema_version": 1, "allocations": []}))
    loops = [
        ("Python API, journal (default)", _api_worker, (str(config), str(workdir / "api-0" / "ledger.json"), False)),
        ("Python API, NETRA_RM_JOURNAL_SYNC=1", _api_worker,
         (str(config), str(workdir / "api-1" / "ledger.json"), True)),
        ("bare flock + JSON + fsync + rename", _bare_worker, (str(bare),)),
    ]
    slices: dict[str, list[float]] = {label: [] for label, _, _ in loops}
    for _ in range(rounds):
        for label, target, args in loops:
            slices[label].append(contended(target, lambda i, args=args: args, processes, seconds / rounds))
    return [(label, statistics.median(values)) for label, values in slices.items()]


# -- wake-up latency ------------------------------------------------------------------------

def _waiter(config: str, ledger: str, poll_only: bool, ready: Any, results: Any) -> None:
    from netra_rm.core.engine import Engine
    from netra_rm.core.waiting import allocate_waiting

    engine = Engine.from_options(config_path=config, ledger=ledger, env={})
    if poll_only:
        engine.ledger.waiter_channel = lambda waiter_id: None  # type: ignore[method-assign]
    request = engine.resolve_request("single", "waiter", memory_mb=100, cpu_percent=0)
    ready.set()
    allocation = allocate_waiting(engine, request, engine.owner(None), wait=True, timeout=60)
    results.put(time.time())
    engine.release([allocation.id])


def wake_latency(workdir: Path, rounds: int, poll_only: bool) -> float:
    from netra_rm.core.engine import Engine

    config = workdir / "bench.yaml"
    ledger = workdir / f"wake-{int(poll_only)}" / "ledger.json"
    engine = Engine.from_options(config_path=str(config), ledger=str(ledger), env={})
    request = engine.resolve_request("single", "holder", memory_mb=100, cpu_percent=0)
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(rounds)
    latencies = []
    for _ in range(rounds):
        holder = engine.allocate(request, engine.owner(None))
        ready, results = ctx.Event(), ctx.Queue()
        proc = ctx.Process(target=_waiter, args=(str(config), str(ledger), poll_only, ready, results))
        proc.start()
        ready.wait()
        while not engine.queue():  # until it is really queued
            time.sleep(0.005)
        time.sleep(rng.uniform(0.05, 0.6))  # release at a random point of its backoff schedule
        released = time.time()
        engine.release([holder.id])
        latencies.append(results.get(timeout=60) - released)
        proc.join()
    return statistics.median(latencies) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=21, help="runs per command (median)")
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds per throughput loop")
    parser.add_argument("--processes", type=int, default=8, help="contending processes")
    parser.add_argument("--rounds", type=int, default=3, help="alternating slices per throughput loop (median)")
    parser.add_argument("--wake-rounds", type=int, default=12, help="releases per wake-up measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="netra-rm-bench-") as tmp:
        workdir = Path(tmp)
        starts = start_up(workdir, args.runs)
        rates = throughput(workdir, args.processes, args.seconds, args.rounds)
        woken = wake_latency(workdir, args.wake_rounds, poll_only=False)
        polled = wake_latency(workdir, args.wake_rounds, poll_only=True)

    print(f"Start-up: median wall time of {args.runs} runs")
    sem_ms = dict(starts).get("sem --will-cite --fg --id x -j 4 true")
    print(f"{'command':<{WIDTH}}{'ms':>9}{'vs sem':>9}")
    for label, ms in starts:
        if ms is None:
            print(f"{label:<{WIDTH}}{'n/a':>9}")
            continue
        ratio = f"{ms / sem_ms:.2f}x" if sem_ms else "-"
        print(f"{label:<{WIDTH}}{ms:>9.1f}{ratio:>9}")
    run_ms = starts[0][1]
    if sem_ms and run_ms is not None:
        print(f"goal: netra-rm run no slower than sem: {'ok' if run_ms <= sem_ms else 'MISSED'}")
    print()
    print(f"Allocate+release pairs per second, {args.processes} processes contending on one pool, "
          f"{args.seconds:g}s")
    bare = rates[-1][1]
    print(f"{'loop':<{WIDTH}}{'pairs/s':>9}{'vs bare':>9}")
    for label, rate in rates:
        print(f"{label:<{WIDTH}}{rate:>9.0f}{rate / bare:>9.0%}")
    print()
    print(f"Wake-up: a queued waiter admitted after a release, median of {args.wake_rounds}")
    print(f"{'mechanism':<{WIDTH}}{'ms':>9}")
    print(f"{'FIFO wake-up (default)':<{WIDTH}}{woken:>9.1f}")
    print(f"{'polling alone (backoff 50 ms -> 200 ms)':<{WIDTH}}{polled:>9.1f}")


if __name__ == "__main__":
    main()
