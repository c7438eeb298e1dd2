"""The ledger: where allocations live so that other processes can see them.

A backend offers one thing: an exclusive transaction over the whole state. The engine
does every read-modify-write inside one, so admission never races.
"""

from __future__ import annotations

import copy
import json
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from netra_rm.core.model import Allocation

SCHEMA_VERSION = 1


@dataclass
class LedgerState:
    """The whole ledger in memory. Mutate through the methods so ``changed`` is right."""

    allocations: list[Allocation] = field(default_factory=list)
    fencing_counter: int = 0
    waiters: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # journal lines to append on commit
    changed: bool = False
    #: The sequence number of the last journal line committed with this ledger: the commit
    #: marker that tells ``verify`` which journal lines belong to transactions that never
    #: reached the ledger (a process killed between the journal append and the replace).
    journal_seq: int = 0

    def add(self, allocation: Allocation) -> None:
        self.allocations.append(allocation)
        self.changed = True

    def remove(self, ids: set[str]) -> list[Allocation]:
        """Drop the allocations with these ids; return those that were there."""
        removed = [a for a in self.allocations if a.id in ids]
        if removed:
            self.allocations = [a for a in self.allocations if a.id not in ids]
            self.changed = True
        return removed

    def next_fencing_token(self) -> int:
        self.fencing_counter += 1
        self.changed = True
        return self.fencing_counter

    def find(self, allocation_id: str) -> Allocation | None:
        return next((a for a in self.allocations if a.id == allocation_id), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "fencing_counter": self.fencing_counter,
            "journal_seq": self.journal_seq,
            "allocations": [a.to_dict() for a in self.allocations],
            "waiters": self.waiters,
        }

    def to_json(self) -> bytes:
        """The ledger document, built from each allocation's cached JSON."""
        head = json.dumps({"schema_version": SCHEMA_VERSION, "fencing_counter": self.fencing_counter,
                           "journal_seq": self.journal_seq, "waiters": self.waiters}, separators=(",", ":"))
        return (head[:-1] + ',"allocations":[' + ",".join(a.json for a in self.allocations) + "]}").encode()

    def copy(self) -> LedgerState:
        """An independent copy (allocations are immutable and shared)."""
        return LedgerState(allocations=list(self.allocations), fencing_counter=self.fencing_counter,
                           waiters=copy.deepcopy(self.waiters) if self.waiters else [],
                           journal_seq=self.journal_seq)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LedgerState:
        return cls(
            allocations=[Allocation.from_dict(a) for a in data.get("allocations", [])],
            fencing_counter=int(data.get("fencing_counter", 0)),
            waiters=list(data.get("waiters", [])),
            journal_seq=int(data.get("journal_seq", 0)),
        )


class Ledger(Protocol):
    """What every ledger backend offers."""

    location: str

    def transaction(self) -> AbstractContextManager[LedgerState]:
        """Hold the ledger exclusively; commit the state on a clean exit if it changed."""
        ...

    def read(self) -> LedgerState:
        """A consistent snapshot, without holding the ledger afterwards."""
        ...

    # Optional, found with getattr by the engine and the commands (the file ledger has them):
    #   read_with_journal() -> (state, journal lines, journal files)   for verify and history
    #   waiter_channel(waiter_id) -> a wake-up channel, or None         for waiting
    #   notify(waiter_ids), forget_waiters(waiter_ids)                  wake, or clean up after, waiters
    # Server ledgers (netra_rm.ledger.remote) also have:
    #   shared = True                         other hosts use it: leases apply, host pools count this host
    #   transaction(reset=True)               accept (and start afresh) a ledger that lost its state
    #   release_now(ids, now=) -> (released, missing) | None   Redis: release without the lock
