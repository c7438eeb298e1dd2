"""Leases: liveness of allocation holders that other hosts cannot see.

On one host, an owner process is checked by pid and start time. A host sharing a server
ledger (Redis, PostgreSQL) cannot check a process on another host, so an allocation
owned by a process carries ``lease_expires_at``, and its holder renews it: a heartbeat
every third of ``allocations.lease_seconds`` (30 s by default). An allocation whose lease
lapsed is reclaimed by any transaction on another host; on its own host it lives as long
as its owner process does (that host can see it run). Fencing tokens are monotonic
across the fleet, so a holder that lost its allocation this way can still be told apart.

Who beats:

* ``netra-rm run``: the wrapper, in a thread, while CMD runs (:class:`LeaseKeeper`),
  which also pushes the allocation's expiry ahead, on every ledger, so that it is held
  exactly as long as CMD runs;
* the Python agent (``create_resource_manager``), in a thread, for the allocations it
  made;
* ``netra-rm allocate --owner-pid PID``: a small detached process started by
  :func:`keep_for_owner` (the command itself returns at once), which renews the lease
  while PID lives and releases the allocation when PID ends.

Run this module as ``python -m netra_rm.core.lease --id ID --pid PID --start TOKEN``
(the ledger comes from ``NETRA_RM_LEDGER``) to be that detached keeper.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from netra_rm.errors import LedgerLostError, NetraRMError

if TYPE_CHECKING:
    from netra_rm.core.engine import Engine
    from netra_rm.core.model import Allocation


def heartbeat_interval(lease_seconds: float) -> float:
    """How often a holder renews: three beats per lease, so one lost beat is harmless."""
    return max(0.05, lease_seconds / 3)


class LeaseKeeper:
    """A daemon thread that renews the leases of some allocations until stopped.

    A beat that fails (the backend is down) is retried at the next one; an allocation
    the ledger no longer holds (released, or reclaimed after its lease lapsed) is dropped
    and reported through ``on_lost``.
    """

    def __init__(self, engine: Engine, ids: Iterable[str] = (), *, interval: float | None = None,
                 hold_seconds: float | None = None,
                 on_lost: Callable[[list[str]], None] | None = None) -> None:
        self.engine = engine
        self.interval = interval if interval is not None else heartbeat_interval(engine.config.lease_seconds)
        self.hold_seconds = hold_seconds  # each beat also keeps them from expiring for this long
        self.on_lost = on_lost
        self.lost: list[str] = []
        self.failures = 0
        self._ids: set[str] = set(ids)
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, allocation_id: str) -> None:
        with self._guard:
            self._ids.add(allocation_id)
        self.start()

    def discard(self, allocation_id: str) -> None:
        with self._guard:
            self._ids.discard(allocation_id)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="netra-rm-lease", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop beating (and wait for a beat in progress to finish)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.engine_timeout())

    def engine_timeout(self) -> float:
        options = getattr(self.engine.ledger, "options", None)
        return 10.0 if options is None else options.connect_timeout + options.io_timeout + options.lock_wait

    def beat(self) -> list[str]:
        """Renew every lease now; the ids the ledger no longer holds."""
        with self._guard:
            ids = sorted(self._ids)
        if not ids:
            return []
        missing = self.engine.renew(ids, hold_seconds=self.hold_seconds)
        if missing:
            with self._guard:
                self._ids.difference_update(missing)
            self.lost.extend(missing)
            if self.on_lost is not None:
                self.on_lost(missing)
        return missing

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
                self.failures = 0
            except NetraRMError:
                self.failures += 1  # the backend is down: the next beat tries again
            except Exception:  # noqa: BLE001 - a heartbeat thread must not die silently mid-run
                self.failures += 1

    def __enter__(self) -> LeaseKeeper:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def keep_for_owner(engine: Engine, allocation: Allocation, *, on_lost: str | None = None) -> int | None:
    """For ``allocate --owner-pid`` on a shared ledger: start a detached process that
    renews the allocation's lease while its owner lives and releases it when the owner
    ends. Its pid, or None when no keeper is needed (no lease, or the file ledger, and
    no ``on_lost``).

    With ``on_lost`` ("term" or "warn") a keeper is started on any ledger: it also looks
    for the allocation every :func:`netra_rm.core.holding.check_interval` seconds and,
    once it is gone, journals the loss and ("term") sends the owner SIGTERM.

    The ledger's URL (with its password) reaches the keeper through its environment,
    never its command line, which other users can read.
    """
    owner = allocation.owner
    url = getattr(engine.ledger, "url", None) or (engine.ledger.location if on_lost else None)
    if (allocation.lease_expires_at is None and on_lost is None) or owner.pid is None or url is None:
        return None
    import subprocess

    from netra_rm.config import env as envmod

    interval = heartbeat_interval(engine.config.lease_seconds)
    if on_lost is not None:
        from netra_rm.core.holding import check_interval

        interval = min(interval, check_interval(engine.config.lease_seconds))
    argv = [sys.executable, "-m", "netra_rm.core.lease", "--id", allocation.id, "--pid", str(owner.pid),
            "--start", owner.start or "", "--interval", f"{interval:g}"]
    if on_lost is not None:
        argv += ["--on-lost", on_lost]
    if not engine.config.source.startswith("<"):
        argv += ["--config", engine.config.source]
    env = envmod.child_environment({"NETRA_RM_LEDGER": url, "NETRA_RM_HOST_ID": engine.host})
    process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    return process.pid


def keep_alive_while(engine: Engine, allocation_id: str, pid: int, start: str | None, *, interval: float,
                     wait: Callable[[float], bool] | None = None, on_lost: str | None = None) -> str:
    """The detached keeper's loop: renew while process ``pid`` lives; release when it
    ends. Returns why it stopped: "owner ended", "released" (the allocation is gone).

    With ``on_lost``, a lost allocation is journaled and, with "term", the owner is sent
    SIGTERM (see :func:`signal_owner_on_loss`)."""
    from netra_rm.core import liveness

    stop = threading.Event()
    wait = wait or stop.wait
    while True:
        if not liveness.is_alive(pid, start):
            try:
                engine.release([allocation_id])
            except NetraRMError:
                pass  # the lease lapses and anyone reclaims it
            return "owner ended"
        try:
            if engine.renew([allocation_id]):
                if on_lost is not None:
                    signal_owner_on_loss(engine, allocation_id, pid, start, on_lost=on_lost,
                                         cause=engine.why_gone(allocation_id))
                return "released"
        except LedgerLostError:
            if on_lost is not None:
                signal_owner_on_loss(engine, allocation_id, pid, start, on_lost=on_lost, cause="ledger lost")
            return "released"
        except NetraRMError:
            pass  # the backend is down: try again at the next beat
        wait(interval)


def signal_owner_on_loss(engine: Engine, allocation_id: str, pid: int, start: str | None, *, on_lost: str,
                         cause: str) -> None:
    """The owner's allocation is gone: journal it and, with ``on_lost`` "term", send the
    owner (if it is still the same process) SIGTERM."""
    import os
    import signal

    from netra_rm.core import liveness
    from netra_rm.core.model import Allocation, Owner

    record = Allocation(id=allocation_id, layer="", category="", memory_mb=0, cpu_units=0, dedicated=False,
                        requires=(), created_at=0.0, expires_at=0.0,
                        owner=Owner(host=engine.host, user=engine.user, pid=pid, start=start))
    engine.record_lost(record, cause, action=on_lost)
    if on_lost == "term" and liveness.is_alive(pid, start):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m netra_rm.core.lease``: the detached keeper of one allocation."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m netra_rm.core.lease",
                                     description="Renew one allocation's lease while its owner process lives.")
    parser.add_argument("--id", required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--start", default="")
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--config", default=None)
    parser.add_argument("--on-lost", choices=("term", "warn"), default=None)
    args = parser.parse_args(argv)
    from netra_rm.core.engine import Engine

    try:
        engine = Engine.from_options(config_path=args.config)
    except NetraRMError:
        return 5
    keep_alive_while(engine, args.id, args.pid, args.start or None, interval=args.interval, on_lost=args.on_lost)
    return 0


if __name__ == "__main__":
    sys.exit(main())
