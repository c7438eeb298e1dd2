"""PostgreSQL ledger benchmark: netra-rm beside the best-known designs on the same server,
in the same run (issue 14's goals), measured through the Python API.

Prints, medians of interleaved rounds:
  * allocate+release pairs per second, one process, at 0 and 10,000 active allocations,
    beside the relational peer (a row per allocation; ``SELECT ... FOR UPDATE`` of the
    pool row, ``INSERT``/``DELETE``); the bytes a transaction sends (counted at a proxy
    on loopback) and the WAL it writes (``pg_current_wal_lsn`` before and after).
    Goals: at 10,000 active >= 0.5x the same at 0, and >= 0.5x the peer; under 4 KB sent
    and under 4 KB of WAL per transaction;
  * 8 and 32 processes contending for one pool on an empty ledger, beside the peer.
    Goal: >= 0.7x the peer;
  * 8 waiters on one slot, each holding it 50 ms: how much of the time the slot is held,
    beside an advisory lock and ``flock``. Goal: >= 90 %. The allocations are owned by
    the waiting processes (as ``run``'s, the pytest plugin's and the other benches'), so
    a release hands the slot to the next waiter in its own commit; beside it the same
    with owners that are no process (``allocate --wait``'s), which a release does not
    hand off to (nobody could reclaim the grant if its waiter died meanwhile): the
    waiter woken takes its turn in a transaction of its own.

The server is a real one started here (tests/servers.py: fsync off, on loopback), like
the test suite's. A "transaction" is an allocate or a release (a pair is two).

usage: python bench/bench_postgres.py [--rounds N] [--seconds S]
"""

from __future__ import annotations

import argparse
import fcntl
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

BENCH_CONFIG = """
layers:
  bench:
    services: []
    pool: {memory_mb: 100000000, cpu_percent: 100, instances: 100000, scope: global}
  slot:
    services: []
    pool: {memory_mb: 1000, cpu_percent: 100, instances: 1, scope: global}
limits: {max_memory_mb: 1000000000, max_cpu_percent: 100, max_parallel_instances: 100000}
machine: {check_memory: false}
"""
ACTIVE = 10_000
HOLD = 0.05
PEER_SCHEMA = """
CREATE TABLE IF NOT EXISTS peer_pools (name text PRIMARY KEY, capacity integer NOT NULL, used integer NOT NULL);
CREATE TABLE IF NOT EXISTS peer_allocations (id text PRIMARY KEY, pool text NOT NULL, holder text NOT NULL,
    expires_at timestamptz NOT NULL);
CREATE INDEX IF NOT EXISTS peer_allocations_by_expiry ON peer_allocations (pool, expires_at);
"""


# -- the peer: a row per allocation, the pool row locked -------------------------------------------

class Peer:
    """The relational design: lock the pool's row, check its count, insert (delete) the
    allocation's row and move the count, commit."""

    def __init__(self, url: str, pool: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url)  # transactions begin implicitly, as most code writes them
        self.pool = pool

    def acquire(self, holder: str) -> str | None:
        cur = self.conn.cursor()
        capacity, used = cur.execute("SELECT capacity, used FROM peer_pools WHERE name = %s FOR UPDATE",
                                     (self.pool,)).fetchone()
        if used >= capacity:
            self.conn.rollback()
            return None
        ident = os.urandom(6).hex()
        cur.execute("INSERT INTO peer_allocations (id, pool, holder, expires_at) "
                    "VALUES (%s, %s, %s, now() + interval '30 minutes')", (ident, self.pool, holder))
        cur.execute("UPDATE peer_pools SET used = used + 1 WHERE name = %s", (self.pool,))
        self.conn.commit()
        return ident

    def release(self, ident: str) -> None:
        cur = self.conn.cursor()
        cur.execute("SELECT used FROM peer_pools WHERE name = %s FOR UPDATE", (self.pool,))
        if cur.execute("DELETE FROM peer_allocations WHERE id = %s", (ident,)).rowcount:
            cur.execute("UPDATE peer_pools SET used = used - 1 WHERE name = %s", (self.pool,))
        self.conn.commit()


# -- workers (each in a process of its own) -------------------------------------------------------

def _engine(config: str, location: str, host: str, state: str) -> Any:
    from netra_rm.config import load_config
    from netra_rm.core.engine import Engine

    return Engine.from_options(config=load_config(config, env={}), ledger=location,
                               env={"NETRA_RM_HOST_ID": host, "XDG_STATE_HOME": state})


def _pairs(kind: str, args: dict[str, Any]) -> Callable[[], None]:
    """One allocate+release pair of ``kind`` ("ours" or "peer")."""
    if kind == "ours":
        engine = _engine(args["config"], args["location"], args["host"], args["state"])
        request = engine.resolve_request("bench", "bench", memory_mb=1, cpu_percent=0.001)
        owner = engine.owner()

        def ours() -> None:
            engine.release([engine.allocate(request, owner).id])

        return ours
    peer = Peer(args["url"], args["pool"])

    def theirs() -> None:
        ident = peer.acquire(args["host"])
        assert ident is not None
        peer.release(ident)

    return theirs


def _wal(url: str) -> Callable[[], int]:
    import psycopg

    conn = psycopg.connect(url, autocommit=True)
    return lambda: int(conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()[0])


def throughput_worker(kind: str, args: dict[str, Any], start_at: float, seconds: float,
                      results: Any) -> None:
    pair = _pairs(kind, args)
    for _ in range(8):  # connected, statements prepared
        pair()
    wal = _wal(args["url"]) if args.get("wal") else None
    while time.time() < start_at:
        time.sleep(0.0005)
    before = wal() if wal else 0
    pairs, end = 0, start_at + seconds
    while time.time() < end:
        pair()
        pairs += 1
    results.put((pairs, (wal() - before) if wal else 0))


def bytes_worker(kind: str, args: dict[str, Any], pairs: int, results: Any) -> None:
    """Pairs through a counting proxy: the bytes sent per pair."""
    from servers import TcpProxy

    with TcpProxy(args["port"]) as proxy:
        args = {**args, "location": proxy.url_for(args.get("location", "")), "url": proxy.url_for(args["url"]),
                "host": "bench-host-0"}
        pair = _pairs(kind, args)
        for _ in range(8):
            pair()
        proxy.reset_counts()
        for _ in range(pairs):
            pair()
        results.put((proxy.sent / pairs, proxy.round_trips / pairs))


def waiting_worker(kind: str, args: dict[str, Any], start_at: float, seconds: float, results: Any) -> None:
    """Take the one slot, hold it 50 ms, let go, again: the intervals it was held."""
    if kind == "ours":
        from netra_rm.core.waiting import allocate_waiting

        engine = _engine(args["config"], args["location"], args["host"], args["state"])
        request = engine.resolve_request("slot", "bench", memory_mb=1, cpu_percent=0.001)
        owner = engine.current_process_owner() if args.get("owner") == "process" else engine.owner()

        def take() -> Callable[[], None]:
            allocation = allocate_waiting(engine, request, owner, wait=True, timeout=120)
            return lambda: engine.release([allocation.id])
    elif kind == "advisory":
        import psycopg

        conn = psycopg.connect(args["url"], autocommit=True)

        def take() -> Callable[[], None]:
            conn.execute("SELECT pg_advisory_lock(4242)")
            return lambda: conn.execute("SELECT pg_advisory_unlock(4242)")
    else:
        fd = os.open(args["path"], os.O_RDWR | os.O_CREAT, 0o600)

        def take() -> Callable[[], None]:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return lambda: fcntl.flock(fd, fcntl.LOCK_UN)

    take()()  # connected
    while time.time() < start_at:
        time.sleep(0.001)
    held: list[tuple[float, float]] = []
    end = start_at + seconds
    while time.time() < end:
        let_go = take()
        began = time.time()
        time.sleep(HOLD)
        held.append((began, time.time()))
        let_go()
    results.put(held)


def _run(target: Callable[..., None], jobs: list[tuple[Any, ...]]) -> list[Any]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    procs = [context.Process(target=target, args=(*job, results)) for job in jobs]
    for proc in procs:
        proc.start()
    out: list[Any] = []
    while len(out) < len(procs):
        try:
            out.append(results.get(timeout=1))
        except Exception:  # noqa: BLE001 - queue.Empty: see whether a worker died
            if any(proc.exitcode not in (None, 0) for proc in procs):
                for proc in procs:
                    proc.kill()
                raise SystemExit("a bench worker failed (see above)") from None
    for proc in procs:
        proc.join()
    return out


def throughput(kind: str, args: dict[str, Any], processes: int, seconds: float, *,
               wal: bool = False) -> tuple[float, float]:
    """Pairs per second of ``processes`` together, and WAL bytes per pair (one process)."""
    start_at = time.time() + 3.0 + processes * 0.25
    jobs = [(kind, {**args, "host": f"bench-host-{i % 4}", "wal": wal and i == 0}, start_at, seconds)
            for i in range(processes)]
    out = _run(throughput_worker, jobs)
    pairs = sum(p for p, _ in out)
    return pairs / seconds, (out[0][1] / max(1, pairs)) if wal else 0.0


def utilisation(kind: str, args: dict[str, Any], waiters: int, seconds: float) -> float:
    start_at = time.time() + 3.0 + waiters * 0.3
    jobs = [(kind, {**args, "host": f"waiter-{i}"}, start_at, seconds) for i in range(waiters)]
    held = [interval for out in _run(waiting_worker, jobs) for interval in out]
    end = start_at + seconds
    busy = sum(max(0.0, min(b, end) - max(a, start_at)) for a, b in held)
    return busy / seconds


# -- setting up ------------------------------------------------------------------------------------

def fill_ours(location: str, config: str, state: str, active: int) -> None:
    """``active`` allocations of 100 other hosts in the bench pool, written in one
    ledger transaction (as ``ledger migrate`` writes them)."""
    from netra_rm.ledger import Scope
    from netra_rm.ledger.journal import event_record
    from netra_rm.records import Allocation, Owner

    engine = _engine(config, location, "filler", state)
    hosts = [f"filler-{i}" for i in range(100)]
    keys = frozenset({"layer:bench", *(f"caps@{h}" for h in hosts)})
    with engine.ledger.transaction(Scope(keys=keys)) as txn:
        for i in range(active):
            allocation = Allocation(
                id=os.urandom(6).hex(), layer="bench", category="filler", memory_mb=1, cpu_units=1, dedicated=False,
                requires=(), created_at=round(txn.now, 3), expires_at=round(txn.now + 86400, 3),
                owner=Owner(hosts[i % 100], "bench"), fencing_token=txn.next_token(),
                charges=("layer:bench", f"caps@{hosts[i % 100]}"), slots={"layer:bench": i}, slot_key="layer:bench")
            txn.grant(allocation, event_record("grant", allocation, txn.now))
    engine.ledger.close()


def fill_peer(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(PEER_SCHEMA)
        conn.execute("INSERT INTO peer_pools VALUES ('p0', 1000000, 0), ('p10k', 1000000, %s)", (ACTIVE,))
        conn.execute("INSERT INTO peer_allocations SELECT md5(i::text), 'p10k', 'filler-' || (i %% 100), "
                     "now() + interval '1 day' FROM generate_series(1, %s) AS i", (ACTIVE,))
        conn.execute("VACUUM ANALYZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="each measured window")
    args = parser.parse_args()
    from servers import PostgresServer

    server = PostgresServer()
    server.start()
    try:
        with tempfile.TemporaryDirectory(prefix="netra-rm-bench-") as tmp:
            work = Path(tmp)
            config = work / "bench.yaml"
            config.write_text(BENCH_CONFIG)
            common = {"config": str(config), "url": server.url, "port": server.port, "state": str(work / "state")}
            ours = {0: {**common, "location": f"{server.url}?ledger=bench0"},
                    ACTIVE: {**common, "location": f"{server.url}?ledger=bench10k"}}
            peer = {0: {**common, "pool": "p0"}, ACTIVE: {**common, "pool": "p10k"}}
            fill_ours(ours[ACTIVE]["location"], str(config), str(work / "state"), ACTIVE)
            fill_peer(server.url)
            figures: dict[str, list[float]] = {}

            def note(name: str, value: float) -> None:
                figures.setdefault(name, []).append(value)
                print(f"  {name}: {value:,.2f}", file=sys.stderr, flush=True)

            for _ in range(args.rounds):
                for active in (0, ACTIVE):
                    rate, wal = throughput("ours", ours[active], 1, args.seconds, wal=True)
                    note(f"ours {active}", rate)
                    note(f"ours wal {active}", wal / 2)
                    rate, wal = throughput("peer", peer[active], 1, args.seconds, wal=True)
                    note(f"peer {active}", rate)
                    note(f"peer wal {active}", wal / 2)
                for processes in (8, 32):
                    note(f"ours x{processes}", throughput("ours", ours[0], processes, args.seconds)[0])
                    note(f"peer x{processes}", throughput("peer", peer[0], processes, args.seconds)[0])
                slot = {**common, "location": f"{server.url}?ledger=slot", "path": str(work / "slot.lock")}
                for kind in ("ours", "advisory", "flock"):
                    note(f"wait {kind}", utilisation(kind, {**slot, "owner": "process"}, 8, args.seconds + 2))
                note("wait ours, no process", utilisation("ours", {**slot, "location": f"{server.url}?ledger=slot2"},
                                                          8, args.seconds + 2))
            for active in (0, ACTIVE):
                for kind, target in (("ours", ours), ("peer", peer)):
                    sent, trips = _run(bytes_worker, [(kind, target[active], 200)])[0]
                    note(f"{kind} sent {active}", sent / 2)
                    note(f"{kind} trips {active}", trips / 2)
    finally:
        server.close()

    m = {name: statistics.median(values) for name, values in figures.items()}

    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    print(f"PostgreSQL ledger vs the relational peer, same server, same run ({os.cpu_count()} CPUs; medians of "
          f"{args.rounds} interleaved rounds of {args.seconds:g} s)")
    print()
    print("One process, allocate+release pairs per second")
    print(f"{'active':>8}{'netra-rm':>10}{'peer':>9}{'ratio':>8}  {'KB sent/txn':>12}{'KB WAL/txn':>12}"
          f"{'round trips/txn':>17}")
    for active in (0, ACTIVE):
        ratio = m[f"ours {active}"] / m[f"peer {active}"]
        print(f"{active:>8,}{m[f'ours {active}']:>10,.0f}{m[f'peer {active}']:>9,.0f}{ratio:>7.2f}x  "
              f"{m[f'ours sent {active}'] / 1024:>5.2f} / {m[f'peer sent {active}'] / 1024:<4.2f}"
              f"{m[f'ours wal {active}'] / 1024:>6.2f} / {m[f'peer wal {active}'] / 1024:<4.2f}"
              f"{m[f'ours trips {active}']:>9.1f} / {m[f'peer trips {active}']:<4.1f}")
    scale = m[f"ours {ACTIVE}"] / m["ours 0"]
    versus = m[f"ours {ACTIVE}"] / m[f"peer {ACTIVE}"]
    print(f"  goal: at {ACTIVE:,} active >= 0.5x the same at 0: {scale:.2f}x {verdict(scale >= 0.5)}; "
          f">= 0.5x the peer: {versus:.2f}x {verdict(versus >= 0.5)}")
    worst_sent = max(m["ours sent 0"], m[f"ours sent {ACTIVE}"])
    worst_wal = max(m["ours wal 0"], m[f"ours wal {ACTIVE}"])
    print(f"  goal: < 4 KB sent per transaction: {worst_sent / 1024:.2f} KB {verdict(worst_sent < 4096)}; "
          f"< 4 KB of WAL: {worst_wal / 1024:.2f} KB {verdict(worst_wal < 4096)}")
    print()
    print("Contention on an empty ledger, allocate+release pairs per second")
    print(f"{'processes':>10}{'netra-rm':>10}{'peer':>9}{'ratio':>8}  goal")
    for processes in (8, 32):
        ratio = m[f"ours x{processes}"] / m[f"peer x{processes}"]
        print(f"{processes:>10}{m[f'ours x{processes}']:>10,.0f}{m[f'peer x{processes}']:>9,.0f}{ratio:>7.2f}x  "
              f">= 0.70x {verdict(ratio >= 0.7)}")
    print()
    print(f"8 waiters on one slot, {HOLD * 1000:.0f} ms holds: share of the time the slot is held")
    print(f"{'netra-rm':>10}{'advisory lock':>15}{'flock':>8}  goal")
    print(f"{m['wait ours']:>10.0%}{m['wait advisory']:>15.0%}{m['wait flock']:>8.0%}  >= 90% "
          f"{verdict(m['wait ours'] >= 0.9)}")
    print(f"{m['wait ours, no process']:>10.0%}  with owners that are no process (allocate --wait): no hand-off")


if __name__ == "__main__":
    main()
