"""The Redis ledger at scale, each figure beside its peer on the same server in the same run.

Prints one table (issue 14's goals in the last column):

* allocate+release pairs per second through the Python API, one process, with 0, 1,000
  and 10,000 other allocations active, beside a counting semaphore (one Lua call per
  acquire and per release, holders in a sorted set, as Redis semaphores are usually
  written) on the same hand-written client as the ledger, and the bytes each sends per
  transaction (one allocate or one release); the semaphore through redis-py too, when it
  is installed (how it is usually deployed);
* 8 and 32 processes contending on an empty ledger, beside the semaphore;
* 8 waiters on one slot, each holding it 50 ms: how much of the time the slot is held,
  beside a BLPOP token list;
* 30 host ids on a 3-slot global pool, 50 ms holds: the slots' utilisation and the
  server calls per grant (every command every process sent, waiting and releasing
  included), beside the token list.

The throughput rows are medians of ``--rounds`` interleaved rounds. The server is a real
redis-server on loopback (tests/servers.py, no persistence). The figures depend on the
machine: the table says how many CPUs it had.

usage: python bench/bench_redis.py [--seconds S] [--rounds N]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

CONFIG = """
layers:
  bench:
    services: []
    pool: {memory_mb: 100000000, cpu_percent: 100, instances: 100000, scope: global}
  one:
    services: []
    pool: {memory_mb: 1000, cpu_percent: 10, instances: 1, scope: global}
  three:
    services: []
    pool: {memory_mb: 3000, cpu_percent: 30, instances: 3, scope: global}
limits: {max_memory_mb: 100000000, max_cpu_percent: 100, max_parallel_instances: 100000}
machine: {check_memory: false}
"""
HOLD = 0.05

# The peer: a counting semaphore, one Lua call to acquire and one to release.
SEM_ACQUIRE = """
local now = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[4]))
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  return 1
end
return 0
"""
SEM_RELEASE = "return redis.call('ZREM', KEYS[1], ARGV[1])"


def _engine(location: str, config: str, state: str, host: str) -> Any:
    from netra_rm.config import load_config
    from netra_rm.core.engine import Engine
    from netra_rm.ledger.redis import RedisLedger

    ledger = RedisLedger(location, state_dir=Path(state))
    return Engine(load_config(config, env={}), ledger, env={"NETRA_RM_HOST_ID": host, "XDG_STATE_HOME": state})


def _wire(url: str) -> Any:
    from netra_rm.ledger.redis_wire import Wire
    from netra_rm.ledger.server import ServerOptions

    return Wire(url, ServerOptions())


class Semaphore:
    """The peer, on the same hand-written client as the ledger (so the data model is
    what is compared, not the client)."""

    def __init__(self, url: str, key: str, limit: int) -> None:
        import hashlib

        self.wire = _wire(url)
        self.key = key
        self.limit = limit
        self.acquire_sha = hashlib.sha1(SEM_ACQUIRE.encode()).hexdigest()
        self.release_sha = hashlib.sha1(SEM_RELEASE.encode()).hexdigest()
        self.wire.call("SCRIPT", "LOAD", SEM_ACQUIRE)
        self.wire.call("SCRIPT", "LOAD", SEM_RELEASE)

    def acquire(self) -> str | None:
        ident = os.urandom(6).hex()
        got = self.wire.call("EVALSHA", self.acquire_sha, 1, self.key, self.limit, repr(time.time()), ident, 3600)
        return ident if got else None

    def release(self, ident: str) -> None:
        self.wire.call("EVALSHA", self.release_sha, 1, self.key, ident)

    def fill(self, count: int) -> None:
        now = time.time() + 10 ** 6
        for start in range(0, count, 1000):
            members: list[Any] = []
            for i in range(start, min(count, start + 1000)):
                members += [now, f"held-{i}"]
            self.wire.call("ZADD", self.key, *members)


# -- throughput, one process ----------------------------------------------------------------------

def ours_pairs(location: str, config: str, state: str, seconds: float) -> tuple[float, float]:
    engine = _engine(location, config, state, "bench")
    request = engine.resolve_request("bench", "bench", memory_mb=1, cpu_percent=0.001)
    owner = engine.owner()
    for _ in range(20):
        engine.release([engine.allocate(request, owner).id])
    wire = engine.ledger._wire
    sent, pairs = wire.sent, 0
    end = time.perf_counter() + seconds
    began = time.perf_counter()
    while time.perf_counter() < end:
        engine.release([engine.allocate(request, owner).id])
        pairs += 1
    elapsed = time.perf_counter() - began
    return pairs / elapsed, (wire.sent - sent) / (2 * pairs)


def peer_pairs(url: str, key: str, seconds: float) -> tuple[float, float]:
    sem = Semaphore(url, key, 1_000_000)
    sent, pairs = sem.wire.sent, 0
    end = time.perf_counter() + seconds
    began = time.perf_counter()
    while time.perf_counter() < end:
        ident = sem.acquire()
        assert ident is not None
        sem.release(ident)
        pairs += 1
    return pairs / (time.perf_counter() - began), (sem.wire.sent - sent) / (2 * pairs)


def redis_py_pairs(url: str, key: str, seconds: float) -> tuple[float, float]:
    """The same semaphore through redis-py, as it is usually deployed (and as the issue's
    own peer figures were measured); bytes are not counted there."""
    import redis

    client = redis.Redis.from_url(url)
    acquire, release = client.register_script(SEM_ACQUIRE), client.register_script(SEM_RELEASE)
    pairs = 0
    end = time.perf_counter() + seconds
    began = time.perf_counter()
    while time.perf_counter() < end:
        ident = os.urandom(6).hex()
        assert acquire(keys=[key], args=[1_000_000, time.time(), ident, 3600])
        release(keys=[key], args=[ident])
        pairs += 1
    client.close()
    return pairs / (time.perf_counter() - began), 0.0


def fill(location: str, config: str, state: str, count: int) -> None:
    """``count`` allocations held by another host, each for a day."""
    from netra_rm.ledger import GrantPlan

    engine = _engine(location, config, state, "background")
    request = engine.resolve_request("bench", "background", memory_mb=1, cpu_percent=0.001, duration_minutes=1440)
    found = tuple(engine.charges(request))
    engine.release([engine.allocate(request, engine.owner()).id])  # the pool registered
    owner = engine.owner()
    for _ in range(count):
        plan = GrantPlan(request=request, charges=found, owner=owner, host="background", lease_seconds=None,
                         machine_free_mb=None, allocation_id=os.urandom(6).hex(), request_id=os.urandom(8).hex())
        assert engine.ledger.fast_grant(plan) is not None


# -- contention ------------------------------------------------------------------------------------

def _contender(kind: str, location: str, config: str, state: str, host: str, start_at: float, seconds: float,
               results: Any) -> None:
    if kind == "ours":
        engine = _engine(location, config, state, host)
        request = engine.resolve_request("bench", "bench", memory_mb=1, cpu_percent=0.001)
        owner = engine.owner()
        engine.release([engine.allocate(request, owner).id])

        def pair() -> None:
            engine.release([engine.allocate(request, owner).id])
    else:
        sem = Semaphore(location, "bench:sem:contention", 1_000_000)

        def pair() -> None:
            ident = sem.acquire()
            assert ident is not None
            sem.release(ident)
    while time.time() < start_at:
        time.sleep(0.001)
    pairs, end = 0, start_at + seconds
    while time.time() < end:
        pair()
        pairs += 1
    results.put(pairs)


def contention(kind: str, location: str, config: str, state: str, processes: int, seconds: float) -> float:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_at = time.time() + 2.0 + processes * 0.2
    procs = [context.Process(target=_contender, args=(kind, location, config, state, f"host-{i % 4}", start_at,
                                                      seconds, results)) for i in range(processes)]
    for p in procs:
        p.start()
    total = sum(results.get(timeout=seconds + 300) for _ in procs)
    for p in procs:
        p.join()
    return total / seconds


# -- waiting -------------------------------------------------------------------------------------

def _waiter(kind: str, location: str, config: str, state: str, host: str, layer: str, start_at: float,
            seconds: float, results: Any) -> None:
    from netra_rm.ledger.redis_wire import Wire

    holds: list[tuple[float, float]] = []
    if kind == "ours":
        from netra_rm.core.waiting import allocate_waiting

        engine = _engine(location, config, state, host)
        request = engine.resolve_request(layer, "wait")
        owner = engine.current_process_owner()

        def cycle() -> None:
            allocation = allocate_waiting(engine, request, owner, wait=True, timeout=60)
            began = time.time()
            time.sleep(HOLD)
            ended = time.time()
            engine.release([allocation.id])
            holds.append((began, ended))
    else:
        wire = _wire(location)

        def cycle() -> None:
            wire.many([("BLPOP", f"bench:tokens:{layer}", 60)], extra_timeout=60)
            began = time.time()
            time.sleep(HOLD)
            ended = time.time()
            wire.call("RPUSH", f"bench:tokens:{layer}", "t")
            holds.append((began, ended))
    while time.time() < start_at - 1.0:  # a second of waiting before the window: a queue has formed
        time.sleep(0.005)
    end = start_at + seconds
    before: dict[str, int] | None = None
    first = start_at
    while True:
        cycle()
        now = time.time()
        if before is None and now >= start_at:
            before, first = dict(Wire.totals), now
        if now >= end:
            break
    after, last = dict(Wire.totals), time.time()
    before = before or after
    inside = [(max(b, start_at), min(e, end)) for b, e in holds if e > start_at and b < end]
    grants = sum(1 for b, _ in holds if first <= b < last)
    results.put((sum(e - b for b, e in inside), grants, after["commands"] - before["commands"],
                 after["calls"] - before["calls"]))


def waiting(kind: str, location: str, config: str, state: str, processes: int, hosts: int, layer: str, slots: int,
            seconds: float) -> tuple[float, float, float]:
    """Slot utilisation, commands and round trips per grant."""
    if kind == "peer":
        wire = _wire(location)
        wire.call("DEL", f"bench:tokens:{layer}")
        wire.call("RPUSH", f"bench:tokens:{layer}", *(["t"] * slots))
        wire.close()
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_at = time.time() + 3.0 + processes * 0.25
    procs = [context.Process(target=_waiter, args=(kind, location, config, state, f"host-{i % hosts}", layer,
                                                   start_at, seconds, results)) for i in range(processes)]
    for p in procs:
        p.start()
    found = [results.get(timeout=seconds + 300) for _ in procs]
    for p in procs:
        p.join()
    held = sum(f[0] for f in found)
    grants = sum(f[1] for f in found) or 1
    return held / (slots * seconds), sum(f[2] for f in found) / grants, sum(f[3] for f in found) / grants


# -- the table ---------------------------------------------------------------------------------------

def median_of(rounds: int, measure: Callable[[], tuple[float, float]]) -> tuple[float, float]:
    found = [measure() for _ in range(rounds)]
    return statistics.median(f[0] for f in found), statistics.median(f[1] for f in found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="the measured window of each figure")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the throughput rows")
    args = parser.parse_args()

    from servers import RedisServer

    server = RedisServer()
    server.start()
    rows: list[tuple[str, str, str, str, str]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="netra-rm-bench-") as tmp:
            config = str(Path(tmp) / "bench.yaml")
            Path(config).write_text(CONFIG)
            state = str(Path(tmp) / "state")
            levels = (0, 1_000, 10_000)
            try:
                import redis  # noqa: F401 - only to compare with the peer as it is usually deployed

                redis_py = True
            except ImportError:
                redis_py = False
            for active in levels:
                fill(f"{server.url}?ledger=active{active}", config, state, active)
                Semaphore(server.url, f"bench:sem:{active}", 1).fill(active)
            found: dict[tuple[str, int], list[tuple[float, float]]] = {}
            for _ in range(args.rounds):
                for active in levels:
                    found.setdefault(("ours", active), []).append(
                        ours_pairs(f"{server.url}?ledger=active{active}", config, state, args.seconds))
                    found.setdefault(("peer", active), []).append(
                        peer_pairs(server.url, f"bench:sem:{active}", args.seconds))
                    if redis_py:
                        found.setdefault(("redis-py", active), []).append(
                            redis_py_pairs(server.url, f"bench:sem:{active}", args.seconds))
            med = {k: (statistics.median(v[0] for v in vals), statistics.median(v[1] for v in vals))
                   for k, vals in found.items()}
            base = med[("ours", 0)][0]
            for active in levels:
                ours, peer = med[("ours", active)], med[("peer", active)]
                goal = ""
                if active == 10_000:
                    ok = ours[0] >= 0.5 * base and ours[0] >= 0.25 * peer[0] and ours[1] < 4096
                    goal = (f">= 0.5x of 0 active ({ours[0] / base:.2f}x), >= 0.25x peer, < 4 KB: "
                            f"{'ok' if ok else 'MISSED'}")
                rows.append((f"API pairs/s, {active:,} active", f"{ours[0]:,.0f}", f"{peer[0]:,.0f}",
                             f"{ours[0] / peer[0]:.2f}x", goal))
                rows.append((f"  bytes sent per transaction, {active:,} active", f"{ours[1]:,.0f} B",
                             f"{peer[1]:,.0f} B", "", ""))
                if ("redis-py", active) in med:
                    slow = med[("redis-py", active)][0]
                    rows.append((f"  the peer through redis-py, {active:,} active", "", f"{slow:,.0f}",
                                 f"{ours[0] / slow:.2f}x", ""))
            for processes in (8, 32):
                ours_rate = contention("ours", f"{server.url}?ledger=contention{processes}", config, state, processes,
                                       args.seconds)
                peer_rate = contention("peer", server.url, config, state, processes, args.seconds)
                ratio = ours_rate / peer_rate
                rows.append((f"{processes} processes contending, pairs/s", f"{ours_rate:,.0f}", f"{peer_rate:,.0f}",
                             f"{ratio:.2f}x", f">= 0.3x: {'ok' if ratio >= 0.3 else 'MISSED'}"))
            seconds = max(args.seconds, 4.0)
            ours_w = waiting("ours", f"{server.url}?ledger=wait1", config, state, 8, 8, "one", 1, seconds)
            peer_w = waiting("peer", server.url, config, state, 8, 8, "one", 1, seconds)
            rows.append(("8 waiters, 1 slot, 50 ms holds: utilisation", f"{ours_w[0]:.0%}", f"{peer_w[0]:.0%}",
                         "", f">= 90%: {'ok' if ours_w[0] >= 0.9 else 'MISSED'}"))
            rows.append(("  server calls per grant (round trips)", f"{ours_w[1]:.1f} ({ours_w[2]:.1f})",
                         f"{peer_w[1]:.1f} ({peer_w[2]:.1f})", "", ""))
            ours_h = waiting("ours", f"{server.url}?ledger=hosts30", config, state, 30, 30, "three", 3, seconds)
            peer_h = waiting("peer", server.url, config, state, 30, 30, "three", 3, seconds)
            rows.append(("30 hosts, 3-slot global pool, 50 ms holds: utilisation", f"{ours_h[0]:.0%}",
                         f"{peer_h[0]:.0%}", "", f">= 90%: {'ok' if ours_h[0] >= 0.9 else 'MISSED'}"))
            rows.append(("  server calls per grant (round trips)", f"{ours_h[1]:.1f} ({ours_h[2]:.1f})",
                         f"{peer_h[1]:.1f} ({peer_h[2]:.1f})", "",
                         f"<= 5: {'ok' if ours_h[1] <= 5 else 'MISSED'}"))
    finally:
        server.close()

    print(f"Redis ledger beside its peers (counting semaphore, BLPOP token list), same redis-server, "
          f"{os.cpu_count()} CPUs, {args.seconds:g} s windows, medians of {args.rounds} rounds")
    widths = [max(len(r[i]) for r in rows + [("measure", "netra-rm", "peer", "ratio", "goal")]) for i in range(5)]
    header = ("measure", "netra-rm", "peer", "ratio", "goal")
    print("  ".join(h.ljust(w) if i in (0, 4) else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))))
    for row in rows:
        print("  ".join(c.ljust(w) if i in (0, 4) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))


if __name__ == "__main__":
    main()
