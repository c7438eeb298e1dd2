"""The ledger: where allocations live so that other processes (and hosts) can see them.

Every backend (the JSON file, Redis, PostgreSQL) offers the same thing: a transaction
over the part of the ledger a decision needs. The engine opens one with a
:class:`Scope` (the pool keys it will look at, the allocations it names), reads the
:class:`Snapshot` the backend gathered (usage per pool key, the instances taken, the
registered pools, the queue, what is due to be reclaimed, the ledger's clock), records
its changes through the :class:`Txn` and, on a clean exit, the backend applies them all
at once, or none of them.

What a transaction reads and writes does not grow with the number of active allocations:
usage per key is kept current with every grant and release (see
:mod:`netra_rm.core.accounting` for what the keys are), expiries are indexed, and the
file ledger, which holds everything in one document, simply has it all at hand.

Backends only read and store; every decision (admission, the queue, reclaiming) is made
by the engine, in Python, once.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any

from netra_rm.records import Allocation, PoolRecord, RecordError, Usage, Waiter

#: The ledger's schema: 1 was one document (allocations, waiters, counters); 2 adds each
#: allocation's pool keys, usage per key, registered pools, priorities and named instances.
SCHEMA_VERSION = 2


@dataclass(frozen=True)
class Scope:
    """What a transaction needs to see.

    ``keys``: the pool keys it will decide over (their usage, instances taken and
    registered capacity; PostgreSQL locks exactly these rows). ``ids``: allocations it
    names (to release or renew). ``everything``: every allocation (status, cleanup
    --force, migrate). ``sweep_host``: this host's allocations too, to reclaim those whose
    owner process is gone.
    """

    keys: frozenset[str] = frozenset()
    ids: tuple[str, ...] = ()
    everything: bool = False
    sweep_host: str | None = None
    #: the waiting request this transaction acts for, if any (its queue entry is read)
    waiter_id: str | None = None
    #: also the pool keys of the allocations named in ``ids`` and of the waiters sharing one
    #: of them (a release that may hand its room on): a backend whose ``widens`` is true
    #: finds them as it locks; for the others the engine reads them first
    widen: bool = False

    def with_keys(self, keys: Iterable[str]) -> Scope:
        return replace(self, keys=self.keys | frozenset(keys))


EVERYTHING = Scope(everything=True)


class SlotsBelow:
    """The instances taken in a pool, as a backend reports them when it knows only the
    lowest free index (``free``): every index below it is taken, the rest unknown. Enough
    for one grant per pool per transaction, which is all a transaction makes; changes made
    in the transaction are kept exactly. Costs nothing however many are taken."""

    def __init__(self, free: int) -> None:
        self.free = free
        self._added: set[int] = set()
        self._removed: set[int] = set()

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, int):
            return False
        return index in self._added or (index < self.free and index not in self._removed)

    def add(self, index: int) -> None:
        self._added.add(index)
        self._removed.discard(index)

    def discard(self, index: int) -> None:
        self._removed.add(index)
        self._added.discard(index)

    def lowest_free(self, limit: int) -> int | None:
        below = [i for i in self._removed if i < self.free]
        candidate = min(below) if below else self.free
        while candidate in self._added:
            candidate += 1
        return candidate if candidate < limit else None

    def __iter__(self) -> Iterator[int]:
        yield from (i for i in range(self.free) if i not in self._removed)
        yield from (i for i in sorted(self._added) if i >= self.free)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class SlotBitmap:
    """The instances taken in a pool as a bitmap (bit ``i`` of byte ``i // 8``), tested and
    searched where it lies, without building a set."""

    def __init__(self, bits: bytes) -> None:
        self.bits = bytearray(bits)

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, int) or index < 0 or index // 8 >= len(self.bits):
            return False
        return bool(self.bits[index // 8] >> (index % 8) & 1)

    def add(self, index: int) -> None:
        while index // 8 >= len(self.bits):
            self.bits.append(0)
        self.bits[index // 8] |= 1 << (index % 8)

    def discard(self, index: int) -> None:
        if 0 <= index // 8 < len(self.bits):
            self.bits[index // 8] &= ~(1 << (index % 8)) & 0xFF

    def lowest_free(self, limit: int) -> int | None:
        full = len(self.bits) - len(self.bits.lstrip(b"\xff"))  # whole bytes of taken instances
        for index in range(full * 8, limit):
            if index not in self:
                return index
        return None

    def __iter__(self) -> Iterator[int]:
        for number, byte in enumerate(self.bits):
            if byte:
                yield from (number * 8 + bit for bit in range(8) if byte >> bit & 1)

    def __len__(self) -> int:
        return sum(bin(b).count("1") for b in self.bits)


@dataclass
class Snapshot:
    """What a backend read at the start of a transaction (or for a plain read).

    ``now`` is the ledger's clock (the server's for Redis and PostgreSQL). ``known`` holds
    the allocations read: all of them when ``complete``, else those named, those due and
    (with ``sweep_host``) the host's. ``due`` are the allocations whose time or lease ran
    out by ``now``.
    """

    now: float
    counter: int = 0
    usage: dict[str, Usage] = field(default_factory=dict)
    #: per pool key, the instance indices taken: a set, or a :class:`SlotsBelow` or
    #: :class:`SlotBitmap` where the backend keeps them more compactly
    taken: dict[str, Any] = field(default_factory=dict)
    pools: dict[str, PoolRecord] = field(default_factory=dict)
    waiters: list[Waiter] = field(default_factory=list)
    known: dict[str, Allocation] = field(default_factory=dict)
    due: list[Allocation] = field(default_factory=list)
    host_allocations: list[Allocation] | None = None
    complete: bool = False
    ledger_id: str | None = None
    origin: str | None = None
    journal_seq: int = 0
    #: things a reader should know about the backend (e.g. Redis without persistence)
    warnings: tuple[str, ...] = ()
    #: the pool keys read (their usage, instances and records are known); None: every one
    keys: frozenset[str] | None = None

    @property
    def allocations(self) -> list[Allocation]:
        """Every allocation read (all of them when ``complete``)."""
        return list(self.known.values())


@dataclass
class Changes:
    """What a transaction changes, as the backend applies it: all at once, or none."""

    grants: list[Allocation] = field(default_factory=list)
    removals: list[Allocation] = field(default_factory=list)
    updates: list[Allocation] = field(default_factory=list)
    pools: list[PoolRecord] = field(default_factory=list)
    waiters_put: dict[str, Waiter] = field(default_factory=dict)
    waiters_gone: set[str] = field(default_factory=set)
    events: list[dict[str, Any]] = field(default_factory=list)
    deltas: dict[str, Usage] = field(default_factory=dict)
    slots_taken: dict[str, set[int]] = field(default_factory=dict)
    slots_freed: dict[str, set[int]] = field(default_factory=dict)
    counter: int | None = None
    #: an id of the request this transaction carries out, recorded with the change so a
    #: client whose reply was lost can ask whether it happened (see ``outcome``)
    request_id: str | None = None
    outcome: Any = None
    reset: bool = False
    #: waiters to wake once this commits: a backend whose ``wakes_at_commit`` is true sends
    #: the wake with the commit (the engine wakes them itself otherwise), carrying the
    #: allocation handed to the waiter, if any (see :func:`wake_payloads`)
    wake: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.grants or self.removals or self.updates or self.pools or self.waiters_put
                    or self.waiters_gone or self.events or self.counter is not None or self.reset)


def wake_payloads(changes: Changes, *, limit: int) -> list[str]:
    """What each wake of ``changes`` carries: the record of the allocation this commit
    hands to that waiter (its id is the waiter's), so the waiter need not read it, or the
    waiter's id (also when the record is longer than ``limit``)."""
    if not changes.wake:
        return []  # most commits wake nobody: no record is encoded for them
    handed = {a.id: a.json for a in changes.grants if a.id in changes.wake}
    return [handed[w] if w in handed and len(handed[w]) <= limit else w for w in changes.wake]


def handed_in(payload: str | bytes | None, waiter_id: str) -> Allocation | None:
    """The allocation a wake-up's payload carries for ``waiter_id`` (see
    :func:`wake_payloads`), or None (a bare wake, or one that does not check out: the
    waiter then reads the ledger)."""
    if not payload or payload[:1] not in ("{", b"{"):
        return None
    try:
        allocation = Allocation.from_dict(json.loads(payload))
    except (ValueError, RecordError):
        return None
    return allocation if allocation.id == waiter_id else None


#: the fields of an allocation's record a one-step grant leaves to the server: when it was
#: granted and until when, its instances and its fencing token
SERVER_FILLED = frozenset({"created_at", "expires_at", "slot", "fencing_token", "slots", "instances",
                           "lease_expires_at"})
#: and with the ids the client draws afresh for each grant: what differs from one grant of
#: a request to the next
GRANT_FILLED = SERVER_FILLED | frozenset({"id", "request_id"})


def whole_amounts(*values: Any) -> bool:
    """Are these amounts whole numbers, not below zero (what a one-step grant's server
    side counts in)?"""
    return all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)


def grant_template(request: Any, owner: Any, charges: Sequence[Any], *, ident: str,
                   request_id: str | None = None) -> Allocation:
    """The allocation a one-step grant of ``request`` would make, but for what the server
    fills in (:data:`SERVER_FILLED`): what the backend sends it, kept from one grant to
    the next of the same request."""
    layer_key = next((c.key for c in charges if c.kind == "layer"), None)
    return Allocation(id=ident, layer=request.layer, category=request.category, memory_mb=request.memory_mb,
                      cpu_units=request.cpu_units, dedicated=request.dedicated, requires=request.requires,
                      created_at=0.0, expires_at=0.0, owner=owner, charges=tuple(c.key for c in charges),
                      pools=request.pools, priority=request.priority, request_id=request_id, slot_key=layer_key)


@dataclass(frozen=True)
class GrantPlan:
    """Everything a backend needs to grant in one step when nobody waits (see
    :meth:`Ledger.fast_grant`): the request, its charges (with this host's configured
    capacities), the owner, the lease, the machine's free memory, and fresh ids; and,
    to join the queue in the same step when there is no room, the queue entry."""

    request: Any
    charges: tuple[Any, ...]
    owner: Any
    host: str
    lease_seconds: float | None
    machine_free_mb: float | None
    allocation_id: str
    request_id: str
    #: the queue entry to file when there is no room (its ``since``, ``fence`` and lease
    #: are the server's to fill in; ``allocation_id`` is then its id); None: grant or nothing
    waiter: Any = None
    #: the waiter's lease, seconds from when it joins (None: it has none)
    waiter_lease_seconds: float | None = None
    #: a host whose allocations the join must leave to the transaction, which looks at
    #: whether their owners are alive, if it holds any
    sweep_host: str | None = None


class Txn:
    """One transaction as the engine sees it: the snapshot, kept current with the
    changes made so far, and the changes themselves."""

    def __init__(self, snapshot: Snapshot, *, tokens: Callable[[], int] | None = None) -> None:
        self.snapshot = snapshot
        self.now = snapshot.now
        self.changes = Changes()
        #: where fencing tokens come from when the backend hands them out itself (a
        #: PostgreSQL sequence, so that transactions on disjoint pools need not meet);
        #: by default the snapshot's counter, written back with the changes
        self._tokens = tokens
        self._counter = snapshot.counter
        self._known = dict(snapshot.known)
        self._usage = dict(snapshot.usage)
        self._taken: dict[str, Any] = {k: v if isinstance(v, (SlotsBelow, SlotBitmap)) else set(v)
                                       for k, v in snapshot.taken.items()}
        self._pools = dict(snapshot.pools)
        self._waiters = {w.id: w for w in snapshot.waiters}

    # -- reading ----------------------------------------------------------------------------

    @property
    def counter(self) -> int:
        return self._counter

    @property
    def waiters(self) -> list[Waiter]:
        """The queue as it stands in this transaction (unordered: see core.queue)."""
        return list(self._waiters.values())

    def waiter(self, waiter_id: str) -> Waiter | None:
        return self._waiters.get(waiter_id)

    def usage(self, key: str) -> Usage:
        return self._usage.get(key, Usage())

    def has_read(self, key: str) -> bool:
        """Was the pool key ``key`` read (its usage is known, not taken to be none)?"""
        keys = self.snapshot.keys
        return keys is None or key in keys

    def usages(self) -> dict[str, Usage]:
        return dict(self._usage)

    def taken(self, key: str) -> Any:
        """The instance indices taken in ``key`` as this transaction stands (read only:
        a set, or a compact stand-in with ``in`` and ``lowest_free(limit)``)."""
        return self._taken.get(key, frozenset())

    def pool(self, key: str) -> PoolRecord | None:
        return self._pools.get(key)

    def pools(self) -> dict[str, PoolRecord]:
        return dict(self._pools)

    def find(self, allocation_id: str) -> Allocation | None:
        return self._known.get(allocation_id)

    def allocations(self) -> list[Allocation]:
        """The allocations known to this transaction (all of them on a complete snapshot)."""
        return list(self._known.values())

    # -- writing ----------------------------------------------------------------------------

    def next_token(self) -> int:
        if self._tokens is not None:
            token = self._tokens()
            self._counter = max(self._counter, token)
            return token
        self._counter += 1
        self.changes.counter = self._counter
        return self._counter

    def raise_counter(self, floor: int) -> None:
        if floor > self._counter:
            self._counter = floor
            self.changes.counter = floor

    def grant(self, allocation: Allocation, event: Mapping[str, Any] | None = None) -> None:
        self.changes.grants.append(allocation)
        self._known[allocation.id] = allocation
        self._add(allocation, +1)
        if event is not None:
            self.changes.events.append(dict(event))

    def remove(self, allocation: Allocation, event: Mapping[str, Any] | None = None) -> None:
        if allocation.id not in self._known:
            return
        del self._known[allocation.id]
        if any(g.id == allocation.id for g in self.changes.grants):
            self.changes.grants = [g for g in self.changes.grants if g.id != allocation.id]
        else:
            self.changes.removals.append(allocation)
        self._add(allocation, -1)
        if event is not None:
            self.changes.events.append(dict(event))

    def update(self, allocation: Allocation) -> None:
        """Replace an allocation with a changed copy (lease, expiry): same pools, same amounts."""
        self._known[allocation.id] = allocation
        for i, g in enumerate(self.changes.grants):
            if g.id == allocation.id:
                self.changes.grants[i] = allocation
                return
        self.changes.updates = [u for u in self.changes.updates if u.id != allocation.id] + [allocation]

    def put_pool(self, record: PoolRecord, event: Mapping[str, Any] | None = None) -> None:
        self._pools[record.key] = record
        self.changes.pools = [p for p in self.changes.pools if p.key != record.key] + [record]
        if event is not None:
            self.changes.events.append(dict(event))

    def put_waiter(self, waiter: Waiter) -> None:
        self._waiters[waiter.id] = waiter
        self.changes.waiters_put[waiter.id] = waiter
        self.changes.waiters_gone.discard(waiter.id)

    def drop_waiter(self, waiter_id: str) -> bool:
        if self._waiters.pop(waiter_id, None) is None:
            return False
        self.changes.waiters_put.pop(waiter_id, None)
        self.changes.waiters_gone.add(waiter_id)
        return True

    def journal(self, event: Mapping[str, Any]) -> None:
        self.changes.events.append(dict(event))

    def _add(self, allocation: Allocation, sign: int) -> None:
        held = allocation.usage
        for key in allocation.charges:
            before = self._usage.get(key, Usage())
            self._usage[key] = before.plus(held) if sign > 0 else before.minus(held)
            delta = self.changes.deltas.get(key, Usage())
            self.changes.deltas[key] = delta.plus(held) if sign > 0 else delta.minus(held)
        for key, index in allocation.slots.items():
            slots = self._taken.setdefault(key, set())
            if sign > 0:
                slots.add(index)
                if index in self.changes.slots_freed.get(key, set()):
                    self.changes.slots_freed[key].discard(index)
                else:
                    self.changes.slots_taken.setdefault(key, set()).add(index)
            else:
                slots.discard(index)
                if index in self.changes.slots_taken.get(key, set()):
                    self.changes.slots_taken[key].discard(index)
                else:
                    self.changes.slots_freed.setdefault(key, set()).add(index)


class Ledger(abc.ABC):
    """What every ledger backend offers. See the module docstring."""

    #: where it is, as shown to users (a URL's password masked)
    location: str
    #: other hosts use it too: leases apply, and host pools count this host only
    shared: bool = False
    #: the backend's name in messages ("file", "Redis", "PostgreSQL")
    backend: str = "file"
    #: it finds the keys of a :attr:`Scope.widen` scope itself, as it locks
    widens: bool = False
    #: it sends :attr:`Changes.wake` with the commit
    wakes_at_commit: bool = False

    @abc.abstractmethod
    def transaction(self, scope: Scope, *, reset: bool = False) -> AbstractContextManager[Txn]:
        """Hold what ``scope`` needs exclusively; apply the changes on a clean exit.

        ``reset`` (``cleanup --force``) accepts a ledger whose state was lost or went back
        in time, and starts it afresh, instead of refusing it.
        """

    @abc.abstractmethod
    def read(self, scope: Scope = EVERYTHING) -> Snapshot:
        """A consistent snapshot without holding the ledger afterwards."""

    @abc.abstractmethod
    def journal_lines(self) -> tuple[Snapshot, list[bytes], list[str]]:
        """Every allocation and every journal line (oldest first), read together, and the
        names of the journal files (or lists, or generations) read."""

    @abc.abstractmethod
    def journal_tail(self, limit: int) -> tuple[int, list[bytes]]:
        """The ledger's committed journal sequence number and at most the last ``limit``
        journal lines, read from the end (``history --limit N``)."""

    def waiter_channel(self, waiter_id: str) -> Any:
        """A wake-up channel the waiter ``waiter_id`` sleeps on, or None (it then polls)."""
        return None

    def notify(self, waiter_ids: Sequence[str]) -> None:  # noqa: B027 - optional: a backend may not wake
        """Wake these waiters: capacity was freed for them, or the queue ahead moved."""

    def forget_waiters(self, waiter_ids: Sequence[str]) -> None:  # noqa: B027 - optional clean-up
        """Clean up after waiters that left or died."""

    def fast_grant(self, plan: Any) -> Any:
        """Grant in one step without the engine's transaction, where the backend can (see
        :mod:`netra_rm.ledger.redis`): the allocation, the plan's waiter as filed (there was
        no room: it joined the queue), or None: take the transaction."""
        return None

    def fast_release(self, ids: Sequence[str], *, events: Mapping[str, Mapping[str, Any]] | None = None) -> Any:
        """Release in one step where the backend can; None: take the transaction."""
        return None

    def health(self) -> tuple[str, ...]:
        """Warnings about the backend itself (e.g. a Redis without persistence)."""
        return ()

    def close(self) -> None:  # noqa: B027 - nothing to close for a file
        """Close connections (the process may also simply exit)."""


def iter_chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
