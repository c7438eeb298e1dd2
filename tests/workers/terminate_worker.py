"""A worker for the connection-kill storms: allocate and release in a loop while someone
keeps ending its server connections, retrying every call that failed.

usage: terminate_worker.py CONFIG LEDGER LOG ITERATIONS HOST_ID

Logs every grant and release (as alloc_worker does) and every error. A release that finds
its allocation already gone ("lie") means an earlier call was told its change was not
written although it was: the test fails on it. Gives up after 120 s.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    config, ledger, log, iterations, host = sys.argv[1:6]
    from netra_rm.core.engine import Engine
    from netra_rm.errors import LedgerError

    engine = Engine.from_options(config_path=config, ledger=ledger,
                                 env={"NETRA_RM_HOST_ID": host, "XDG_STATE_HOME": os.environ["XDG_STATE_HOME"]})
    owner = engine.current_process_owner()
    request = engine.resolve_request("tiny", "worker", memory_mb=100, cpu_percent=10)
    events: list[dict[str, object]] = []
    give_up = time.monotonic() + 120

    def note(kind: str, **fields: object) -> None:
        events.append({"event": kind, "t": time.monotonic_ns(), **fields})

    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()
    granted = 0
    try:
        while granted < int(iterations) and time.monotonic() < give_up:
            try:
                allocation, _ = engine.try_allocate(request, owner)
            except LedgerError as exc:
                note("error", message=exc.message)
                time.sleep(0.01)
                continue
            if allocation is None:
                continue
            note("grant", id=allocation.id, token=allocation.fencing_token)
            granted += 1
            note("release", id=allocation.id)
            while time.monotonic() < give_up:
                try:
                    result = engine.release([allocation.id])
                except LedgerError as exc:
                    note("error", message=exc.message)
                    time.sleep(0.01)
                    continue
                if result.missing:
                    note("lie", id=allocation.id)
                break
    finally:
        with open(log, "w") as f:
            for event in events:
                f.write(json.dumps(event) + "\n")


if __name__ == "__main__":
    main()
