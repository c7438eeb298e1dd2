"""A worker that keeps allocating and releasing through a backend outage.

usage: outage_worker.py CONFIG LEDGER LOG ITERATIONS HOST_ID

Logs every grant and release (as alloc_worker does), every LedgerError ("outage", with
how long the call took), and stops with a "fenced" line when the ledger refuses because
it lost its state (the fencing counter went backwards), which is what a Redis restarted
without persistence must cause. Gives up after 90 s.
"""

from __future__ import annotations

import json
import os
import sys
import time

FENCED = ("lost its state", "went backwards", "started again from scratch")


def main() -> None:
    config, ledger, log, iterations, host = sys.argv[1:6]
    from netra_rm.core.engine import Engine
    from netra_rm.errors import LedgerError

    engine = Engine.from_options(config_path=config, ledger=ledger,
                                 env={"NETRA_RM_HOST_ID": host, "XDG_STATE_HOME": os.environ["XDG_STATE_HOME"]})
    owner = engine.current_process_owner()
    request = engine.resolve_request("tiny", "worker", memory_mb=100, cpu_percent=10)
    events: list[dict] = []
    granted = 0
    give_up = time.monotonic() + 90
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()

    def note(kind: str, **fields: object) -> None:
        events.append({"event": kind, "t": time.monotonic_ns(), **fields})

    def fenced(exc: LedgerError, began: float) -> bool:
        """Log an outage; True when the ledger fenced us off (stop), else pause and retry."""
        note("outage", message=exc.message, seconds=round(time.monotonic() - began, 3))
        if any(text in exc.message for text in FENCED):
            note("fenced", message=exc.message)
            return True
        time.sleep(0.05)  # the backend is down: try again shortly
        return False

    try:
        while granted < int(iterations) and time.monotonic() < give_up:
            began = time.monotonic()
            try:
                allocation, _ = engine.try_allocate(request, owner)
            except LedgerError as exc:
                if fenced(exc, began):
                    return
                continue
            if allocation is None:
                continue
            note("grant", id=allocation.id, token=allocation.fencing_token)
            granted += 1
            note("release", id=allocation.id)
            while True:
                began = time.monotonic()
                try:
                    engine.release([allocation.id])
                    break
                except LedgerError as exc:
                    if fenced(exc, began) or began > give_up:
                        return
    finally:
        with open(log, "w") as f:
            for event in events:
                f.write(json.dumps(event) + "\n")


if __name__ == "__main__":
    main()
