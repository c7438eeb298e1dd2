"""Holding an allocation while a command runs, and noticing at once when it is taken away.

:class:`HoldingWatch` is a daemon thread beside ``netra-rm run`` (and the pytest
plugin's session). It renews the allocation as :mod:`netra_rm.core.lease` describes (its
expiry pushed ahead, its lease renewed on a shared ledger) and, between renewals, looks
at the ledger every :func:`check_interval` seconds, without its lock, to see the
allocation still there with its own fencing token. On the file ledger whoever takes an
allocation away also writes a byte into its holder's wake-up channel (see
:func:`netra_rm.core.engine.holder_channel`), so the holder hears of it within
milliseconds. When the allocation is gone, :attr:`HoldingWatch.cause` says why, from
the journal (:meth:`Engine.why_gone <netra_rm.core.engine.Engine.why_gone>`), and
``on_lost`` is called once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from netra_rm.core.engine import Engine, holder_channel
from netra_rm.core.model import Allocation
from netra_rm.errors import LedgerLostError, NetraRMError
from netra_rm.ledger import EVERYTHING, Scope

#: Why an allocation was lost, as one clause for the sentence that ``run`` prints.
CAUSES = {
    "released": "it was released by another process (netra-rm release, or the Python API)",
    "forced": "it was reclaimed by netra-rm cleanup --force",
    "expired": "it expired: its hold time ran out while it went unrenewed (was netra-rm stopped, or the ledger out "
               "of reach?)",
    "owner gone": "it was reclaimed because its owner process was seen gone",
    "lease lapsed": "its lease lapsed without renewal and another host reclaimed it",
    "fenced": "it was fenced: the ledger holds it under a newer fencing token",
    "unknown": "the ledger no longer holds it and has no record of its release: the ledger was reset or lost",
    "ledger lost": "the ledger lost its state (emptied, restored from an older copy, or started again)",
}


def check_interval(lease_seconds: float) -> float:
    """How often a holder looks at the ledger: twice within max(2 s, a tenth of the lease),
    the longest a lost allocation may go unnoticed."""
    return max(2.0, lease_seconds / 10) / 2


def describe(cause: str, allocation: Allocation, successor: Allocation | None = None, *,
             holder: str = "the command") -> str:
    """One sentence: allocation X was lost while ``holder`` ran, and why."""
    why = CAUSES.get(cause, cause)
    text = (f"allocation {allocation.id} ({allocation.layer}/{allocation.category}) was lost while {holder} "
            f"ran: {why}")
    if successor is not None:
        text += (f"; slot {successor.slot} now belongs to allocation {successor.id} (fencing token "
                 f"{successor.fencing_token}, newer than this holder's {allocation.fencing_token})")
    return text + "."


class HoldingWatch:
    """Renews ``allocation`` and watches for its loss until stopped (a daemon thread).

    ``hold_seconds``: each renewal keeps it from expiring for at least this long (None:
    its expiry stays; only a shared ledger's lease is renewed).
    ``on_lost`` is called (in the watch's thread) once the allocation is found gone.
    """

    def __init__(self, engine: Engine, allocation: Allocation, *, hold_seconds: float | None,
                 renew_interval: float, check_every: float | None = None,
                 on_lost: Callable[[], None] | None = None, holder: str = "the command",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.allocation = allocation
        self.hold_seconds = hold_seconds
        self.renew_interval = renew_interval
        self.check_every = check_every if check_every is not None else check_interval(engine.config.lease_seconds)
        self.on_lost = on_lost
        self.holder = holder
        self.clock = clock
        self.cause: str | None = None
        self.sentence: str | None = None
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._channel: Any = None
        if not engine.shared:
            opener = getattr(engine.ledger, "waiter_channel", None)
            self._channel = opener(holder_channel(allocation.id)) if opener is not None else None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="netra-rm-holding", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (a check in progress is not waited for long: its answer is dropped)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        channel, self._channel = self._channel, None
        if channel is not None and thread is not None:
            from netra_rm.ledger.wake import notify

            notify(channel.path.parent, [channel.path.name])  # wake the thread from its sleep
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)
        if channel is not None:
            channel.close()

    def _sleep(self, seconds: float) -> None:
        channel = self._channel
        if channel is not None:
            try:
                channel.wait(seconds)
            except (OSError, ValueError):  # closed under us by stop()
                self._stop.wait(seconds)
        else:
            self._stop.wait(seconds)

    def _run(self) -> None:
        next_renew = self.clock() + self.renew_interval
        while not self._stop.is_set():
            now = self.clock()
            self._sleep(max(0.0, min(self.check_every, next_renew - now)))
            if self._stop.is_set():
                return
            try:
                if self.clock() >= next_renew:
                    next_renew = self.clock() + self.renew_interval
                    gone = self._renew()
                else:
                    gone = self._look()
                self.failures = 0
            except LedgerLostError:
                gone = ("ledger lost", None)
            except NetraRMError:
                self.failures += 1  # the backend is down: the next look tries again
                continue
            except Exception:  # noqa: BLE001 - a watch thread must not die silently mid-run
                self.failures += 1
                continue
            if gone is not None:
                self._lost(*gone)
                return

    def _renew(self) -> tuple[str, Allocation | None] | None:
        if self.engine.renew([self.allocation.id], hold_seconds=self.hold_seconds):
            return self._why()
        return None

    def _look(self) -> tuple[str, Allocation | None] | None:
        """Is it still there, with our fencing token? A read without the lock; an
        allocation already past its time is renewed at once (which reclaims it if it must)."""
        state = self.engine.ledger.read(Scope(ids=(self.allocation.id,)))
        found = state.known.get(self.allocation.id)
        if found is None:
            return self._why()
        if found.fencing_token != self.allocation.fencing_token:
            return ("fenced", None)
        lease = found.lease_expires_at
        if found.expires_at <= state.now or (lease is not None and lease <= state.now):
            return self._renew()
        return None

    def _why(self, allocations: list[Allocation] | None = None) -> tuple[str, Allocation | None]:
        cause = self.engine.why_gone(self.allocation.id)
        if allocations is None:
            try:
                allocations = self.engine.ledger.read(EVERYTHING).allocations
            except NetraRMError:
                allocations = []
        mine = self.allocation
        successor = next((a for a in allocations if a.layer == mine.layer and a.slot == mine.slot
                          and a.fencing_token > mine.fencing_token), None)
        return cause, successor

    def _lost(self, cause: str, successor: Allocation | None) -> None:
        if self._stop.is_set():
            return
        self.cause = cause
        self.sentence = describe(cause, self.allocation, successor, holder=self.holder)
        if self.on_lost is not None:
            self.on_lost()
