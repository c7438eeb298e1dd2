"""Waiting for one slot: how busy is the slot when 8 processes queue for it?

Each of N processes loops: take the one slot (waiting in line), hold it 50 ms, release
it, for a fixed window. The slot's utilisation is the summed hold time over the window:
a queue that hands the slot on at once keeps it near 100 %; one that wakes everyone, or
polls, leaves it idle between holders. The peers do the same with `flock` on a file (the
kernel's own queue), and, with `--ledger redis://...`, a Redis BLPOP token list; with
`--ledger postgresql://...`, a PostgreSQL advisory lock. All from the same run.

Every process starts a second before the measured window (WARMUP): the queue has formed
and each has had its first turns (a PostgreSQL session plans its functions' statements on
first use, for example), so the window sees the steady state, as bench_redis.py's and
bench_postgres.py's do.

Goal (issue 14): utilisation >= 90 % on every ledger.

usage: python bench/bench_waiting.py [--waiters N] [--hold S] [--seconds S] [--ledger URL]
"""

from __future__ import annotations

import argparse
import fcntl
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WARMUP = 1.0  # seconds each process waits and holds before the measured window

CONFIG = """
layers:
  one:
    services: []
    pool: {memory_mb: 100, cpu_percent: 10, instances: 1, scope: global}
services: {}
limits: {max_memory_mb: 100000, max_cpu_percent: 100, max_parallel_instances: 1000}
machine: {check_memory: false}
"""


def netra_worker(config: str, ledger: str, state: str, host: str, hold: float, start: float, until: float,  # type: ignore[no-untyped-def]
                 out) -> None:
    from netra_rm.config import load_config
    from netra_rm.core.engine import Engine
    from netra_rm.core.waiting import allocate_waiting
    from netra_rm.ledger import open_ledger

    env = {"NETRA_RM_HOST_ID": host, "XDG_STATE_HOME": state}
    engine = Engine(load_config(config, env={}), open_ledger(ledger, env=env), env=env)
    request = engine.resolve_request("one", "w", memory_mb=1, cpu_percent=1)
    owner = engine.current_process_owner()
    time.sleep(max(0.0, start - WARMUP - time.time()))  # everyone starts together, imports done
    held = 0.0
    grants = 0
    while time.time() < until:
        try:
            allocation = allocate_waiting(engine, request, owner, wait=True, timeout=max(0.1, until - time.time()))
        except Exception:  # noqa: BLE001 - the window closed while waiting
            break
        began = time.time()
        time.sleep(hold)
        end = time.time()
        engine.release([allocation.id])
        held += max(0.0, min(end, until) - max(began, start)) if began < until else 0.0
        grants += began >= start
    out.put((held, grants))


def flock_worker(path: str, hold: float, start: float, until: float, out) -> None:  # type: ignore[no-untyped-def]
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    time.sleep(max(0.0, start - WARMUP - time.time()))
    held = 0.0
    grants = 0
    while time.time() < until:
        fcntl.flock(fd, fcntl.LOCK_EX)
        began = time.time()
        time.sleep(hold)
        end = time.time()
        fcntl.flock(fd, fcntl.LOCK_UN)
        held += max(0.0, min(end, until) - max(began, start)) if began < until else 0.0
        grants += began >= start
    out.put((held, grants))


def blpop_worker(url: str, key: str, hold: float, start: float, until: float, out) -> None:  # type: ignore[no-untyped-def]
    import redis

    client = redis.Redis.from_url(url)
    time.sleep(max(0.0, start - WARMUP - time.time()))
    held = 0.0
    grants = 0
    while time.time() < until:
        got = client.blpop([key], timeout=max(0.01, until - time.time()))
        if got is None:
            break
        began = time.time()
        time.sleep(hold)
        end = time.time()
        client.rpush(key, "t")
        held += max(0.0, min(end, until) - max(began, start)) if began < until else 0.0
        grants += began >= start
    out.put((held, grants))


def advisory_worker(url: str, hold: float, start: float, until: float, out) -> None:  # type: ignore[no-untyped-def]
    import psycopg

    conn = psycopg.connect(url.split("?")[0], autocommit=True)
    time.sleep(max(0.0, start - WARMUP - time.time()))
    held = 0.0
    grants = 0
    while time.time() < until:
        conn.execute("SELECT pg_advisory_lock(4242)")
        began = time.time()
        time.sleep(hold)
        end = time.time()
        conn.execute("SELECT pg_advisory_unlock(4242)")
        held += max(0.0, min(end, until) - max(began, start)) if began < until else 0.0
        grants += began >= start
    out.put((held, grants))


def run(target, args_for, n: int, seconds: float) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    start = time.time() + 3.0 + WARMUP  # time enough for every worker to start, import and warm up
    until = start + seconds
    procs = [ctx.Process(target=target, args=(*args_for(i), start, until, out)) for i in range(n)]
    for p in procs:
        p.start()
    results = [out.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    held = sum(r[0] for r in results)
    grants = sum(r[1] for r in results)
    return min(1.0, held / seconds), grants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waiters", type=int, default=8)
    parser.add_argument("--hold", type=float, default=0.05)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--ledger", default=None, help="redis:// or postgresql:// (default: a file ledger)")
    parser.add_argument("--hosts", type=int, default=1, help="spread the waiters over this many host ids")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="netra-rm-bench-waiting-"))
    config = work / "netra-rm.yaml"
    config.write_text(CONFIG)
    ledger = args.ledger or str(work / "ledger" / "ledger.json")
    if args.ledger:
        ledger += ("&" if "?" in ledger else "?") + f"ledger=wait{os.getpid()}"
    rows = []
    ours, grants = run(netra_worker, lambda i: (str(config), ledger, str(work / f"state{i}"),
                                                f"host{i % args.hosts}", args.hold), args.waiters, args.seconds)
    rows.append((f"netra-rm ({'file' if not args.ledger else args.ledger.split(':')[0]})", ours, grants))
    lock = str(work / "flock.lock")
    util, n = run(flock_worker, lambda i: (lock, args.hold), args.waiters, args.seconds)
    rows.append(("flock", util, n))
    if args.ledger and args.ledger.startswith("redis"):
        import redis

        key = f"bench-token-{os.getpid()}"
        base = args.ledger.split("?")[0]
        redis.Redis.from_url(base).rpush(key, "t")
        util, n = run(blpop_worker, lambda i: (base, key, args.hold), args.waiters, args.seconds)
        rows.append(("BLPOP token", util, n))
    if args.ledger and args.ledger.startswith("postgres"):
        util, n = run(advisory_worker, lambda i: (args.ledger, args.hold), args.waiters, args.seconds)
        rows.append(("advisory lock", util, n))
    print(f"\n{args.waiters} waiters on one slot, {args.hold * 1000:.0f} ms holds, {args.seconds:g} s window "
          f"({args.hosts} host id(s))\n")
    print(f"{'who':24} {'utilisation':>12} {'grants':>8}   goal >= 90 %")
    for name, util, n in rows:
        print(f"{name:24} {util * 100:11.1f}% {n:8d}   {'met' if name.startswith('netra') and util >= 0.9 else ''}")


if __name__ == "__main__":
    main()
