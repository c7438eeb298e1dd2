"""A worker process for the concurrency tests: allocate and release in a loop, logging
every grant (just after it) and every release (just before it) with the system-wide
monotonic clock, so the logged intervals lie inside the real ones.

usage: alloc_worker.py CONFIG LEDGER LOG ITERATIONS [--no-lock]
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    config, ledger, log, iterations = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if "--no-lock" in sys.argv:
        import fcntl

        fcntl.flock = lambda fd, op: None  # the fault the test must catch

        # widen the read-modify-write window a little, so the missing lock shows even on
        # a busy machine where the workers would otherwise rarely overlap
        from netra_rm.ledger.file import FileLedger

        write = FileLedger._write_unlocked

        def slow_write(self, state):  # type: ignore[no-untyped-def]
            time.sleep(0.002)
            write(self, state)

        FileLedger._write_unlocked = slow_write  # type: ignore[method-assign]

    from netra_rm.core.engine import Engine

    engine = Engine.from_options(config_path=config, ledger=ledger, env={})
    owner = engine.current_process_owner()
    request = engine.resolve_request("tiny", "worker", memory_mb=100, cpu_percent=10)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()  # wait for the go signal, so all workers start together
    events = []
    granted = refused = 0
    # without the lock, ghost allocations can fill the pool for good: give up eventually
    patience = 3000 if "--no-lock" in sys.argv else None
    while granted < iterations:
        allocation, _ = engine.try_allocate(request, owner)
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
