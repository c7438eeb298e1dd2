"""A worker for the kill-storm test: allocate and release in a loop until SIGKILLed.

usage: storm_worker.py CONFIG LEDGER MODE
  loop  allocate (never waiting) and release as fast as possible
  wait  queue for room with a short timeout, then release
  hold  allocate once, print the id, then wait for stdin to close
  orphan allocate once and exit at once (leaves an allocation whose owner is dead)

Prints "started" once its first transaction is done, so the test knows it is running.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    config, ledger, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    from netra_rm.core.engine import Engine
    from netra_rm.core.waiting import allocate_waiting
    from netra_rm.errors import NoCapacityError

    # the test's environment carries NETRA_RM_JOURNAL_MAX_BYTES
    if ledger.startswith("redis"):
        # a short lock expiry: a worker killed while it holds the lock stalls the others briefly
        from netra_rm.config import load_config
        from netra_rm.config.env import state_dir
        from netra_rm.ledger.redis import RedisLedger
        from netra_rm.ledger.server import ServerOptions

        options = ServerOptions(lock_ttl=0.5, journal_max_lines=300)
        env = dict(os.environ)
        engine = Engine(load_config(config, env=env), RedisLedger(ledger, state_dir=state_dir(env), options=options),
                        env=env)
    else:
        engine = Engine.from_options(config_path=config, ledger=ledger, env=dict(os.environ))
    owner = engine.current_process_owner()
    request = engine.resolve_request("storm", mode, memory_mb=100, cpu_percent=10)
    if mode in ("hold", "orphan"):
        allocation = engine.allocate(request, owner)
        sys.stdout.write(f"{allocation.id}\n")
        sys.stdout.flush()
        if mode == "hold":
            sys.stdin.read()
        return
    announced = False
    while True:
        try:
            if mode == "wait":
                allocation = allocate_waiting(engine, request, owner, wait=True, timeout=0.2)
            else:
                allocation, _ = engine.try_allocate(request, owner)
        except NoCapacityError:
            allocation = None
        if allocation is not None:
            engine.release([allocation.id])
        if not announced:
            sys.stdout.write("started\n")
            sys.stdout.flush()
            announced = True


if __name__ == "__main__":
    main()
