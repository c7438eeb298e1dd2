"""A worker process for the concurrency tests: allocate and release in a loop, logging
every grant (just after it) and every release (just before it) with the system-wide
monotonic clock, so the logged intervals lie inside the real ones.

usage: alloc_worker.py CONFIG LEDGER LOG ITERATIONS [--no-lock] [--host-id ID]

LEDGER is a file path or a redis:// / postgresql:// URL. ``--host-id`` makes the worker
pretend to run on another host (NETRA_RM_HOST_ID). ``--no-lock`` removes the ledger's
exclusion, the fault the test must catch: for the file ledger the flock, for Redis the
lock and the version check of the commit, for PostgreSQL the pool rows' locks.
"""

from __future__ import annotations

import json
import os
import sys
import time


def remove_the_lock(ledger: str) -> None:
    if ledger.startswith("redis"):
        from netra_rm.ledger import redis as backend
        from netra_rm.ledger import redis_scripts as scripts

        # transactions only (the one-call paths are atomic by nature), which neither take
        # the lock nor check at commit that the ledger is as they read it
        scripts.BEGIN = scripts._script("begin", scripts._BEGIN.replace("if mode == 'lock' then", "if false then"))
        checked = "if (h and h ~= holder) or v ~= ARGV[3] then return {0, v} end"
        assert checked in scripts._COMMIT
        scripts.COMMIT = scripts._script("commit", scripts._COMMIT.replace(checked, ""))
        scripts.ALL = (scripts.BEGIN, scripts.COMMIT, *scripts.ALL[2:])
        backend.RedisLedger.fast_grant = lambda self, plan: None  # type: ignore[method-assign]
        backend.RedisLedger.fast_release = lambda self, ids, events=None: None  # type: ignore[method-assign]
        commit = backend.RedisLedger._commit

        def slow_commit(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            time.sleep(0.005)  # widen the read-modify-write window (a busy machine serialises the workers)
            commit(self, *args, **kwargs)

        backend.RedisLedger._commit = slow_commit  # type: ignore[method-assign]
    elif ledger.startswith("postgres"):
        import psycopg

        from netra_rm.ledger import Scope
        from netra_rm.ledger.postgres import ledger as backend
        from netra_rm.ledger.server import split_location

        backend.PostgresLedger(ledger).read(Scope())  # the tables exist
        with psycopg.connect(split_location(ledger)[0], autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(77)")  # the workers do this together
            source = conn.execute("SELECT pg_get_functiondef('netra_rm_begin(jsonb)'::regprocedure)").fetchone()[0]
            # the same begin, without the row locks
            conn.execute(source.replace("FOR UPDATE", "").replace("netra_rm_begin(", "netra_rm_begin_unlocked("))
        backend._BEGIN = "SELECT netra_rm_begin_unlocked(%s::jsonb)"
        commit = backend.PostgresLedger._commit

        def slow_commit(self, *args):  # type: ignore[no-untyped-def]
            # usage moves by deltas, so nothing is lost: the damage is over-subscription,
            # which needs decisions that overlap; give them the time to
            time.sleep(0.02)
            return commit(self, *args)

        backend.PostgresLedger._commit = slow_commit  # type: ignore[method-assign]
    else:
        import fcntl

        fcntl.flock = lambda fd, op: None

        # widen the read-modify-write window a little, so the missing lock shows even on
        # a busy machine where the workers would otherwise rarely overlap
        from netra_rm.ledger.file import FileLedger

        write = FileLedger._write

        def slow_write(self, doc):  # type: ignore[no-untyped-def]
            time.sleep(0.002)
            write(self, doc)

        FileLedger._write = slow_write  # type: ignore[method-assign]


def main() -> None:
    config, ledger, log, iterations = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    no_lock = "--no-lock" in sys.argv
    env = {"XDG_STATE_HOME": os.environ.get("XDG_STATE_HOME", "")}
    if "--host-id" in sys.argv:
        env["NETRA_RM_HOST_ID"] = sys.argv[sys.argv.index("--host-id") + 1]
    if no_lock:
        remove_the_lock(ledger)

    from netra_rm.core.engine import Engine
    from netra_rm.errors import LedgerError

    engine = Engine.from_options(config_path=config, ledger=ledger, env=env)
    owner = engine.current_process_owner()
    request = engine.resolve_request("tiny", "worker", memory_mb=100, cpu_percent=10)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()  # wait for the go signal, so all workers start together
    events = []
    granted = refused = 0
    # without the lock, ghost allocations can fill the pool for good: give up eventually
    patience = (3000 if "://" not in ledger else 300) if no_lock else None
    while granted < iterations:
        try:
            allocation, _ = engine.try_allocate(request, owner)
        except LedgerError:
            if not no_lock:
                raise
            events.append(("stuck", "-", time.monotonic_ns(), 0))
            break
        if allocation is None:
            refused += 1
            if patience is not None and refused > patience:
                events.append(("stuck", "-", time.monotonic_ns(), 0))
                break
            continue
        events.append(("grant", allocation.id, time.monotonic_ns(), allocation.fencing_token))
        granted += 1
        events.append(("release", allocation.id, time.monotonic_ns(), 0))
        result = engine.release([allocation.id])
        if result.missing:
            events.append(("lost", allocation.id, time.monotonic_ns(), 0))
    with open(log, "w") as f:
        for kind, ident, t, token in events:
            f.write(json.dumps({"event": kind, "id": ident, "t": t, "token": token}) + "\n")


if __name__ == "__main__":
    main()
