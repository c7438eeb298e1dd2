"""``netra-rm ledger migrate --from A --to B``: move active allocations between ledgers.

Any backend to any backend (a file, Redis, PostgreSQL), and any schema: a ledger of an
older schema (the version-1 document every backend used to keep) is read through the
upgrade chain (:mod:`netra_rm.ledger.upgrade`) like any other. The source is read in one
consistent snapshot and the target written in one transaction. Each allocation's pool
keys are worked out again for the target (a file ledger has one machine; a shared ledger
keys host pools by each owner's host), allocations already in the target (same id) are
left alone, expired ones are not copied, the pools the source holds are registered in the
target, and the target's fencing counter is raised to at least the source's, so fencing
tokens stay monotonic for holders that move over. The copies are journaled in the target
as ``migrate`` events, so ``netra-rm verify`` on the target explains them. The source is
not changed: point ``NETRA_RM_LEDGER`` (or ``--ledger``) at the target once the copy is
done, and holders release their allocations there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from netra_rm.errors import UsageError
from netra_rm.ledger.base import EVERYTHING, Ledger
from netra_rm.ledger.journal import event_record, pool_event
from netra_rm.ledger.upgrade import ScopeOf, host_scoped
from netra_rm.records import Allocation, caps_key, layer_key, parse_key, pool_key


@dataclass(frozen=True)
class MigrationResult:
    """What a migration did: the ledgers (passwords masked), the ids copied, those the
    target already held, the expired ones left behind, and the target's fencing counter."""

    source: str
    target: str
    copied: list[str] = field(default_factory=list)
    already_there: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    fencing_counter: int = 0
    pools: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": 1, "from": self.source, "to": self.target, "copied": self.copied,
                "already_there": self.already_there, "expired": self.expired,
                "fencing_counter": self.fencing_counter, "pools": self.pools}


def rekey(allocation: Allocation, *, shared: bool, scope_of: ScopeOf) -> Allocation:
    """``allocation`` with its pool keys as the target ledger counts them."""
    host = allocation.owner.host if shared else ""
    charges: list[str] = []
    slots: dict[str, int] = {}
    instances: dict[str, str] = {}
    slot_key = None
    for key in allocation.charges:
        kind, name, _ = parse_key(key)
        if kind == "layer":
            new = layer_key(name, scope_of("layer", name), host)
            slot_key = new
        elif kind == "caps":
            new = caps_key(host)
        else:
            new = pool_key(name, scope_of("pool", name), host)
        charges.append(new)
        if key in allocation.slots:
            slots[new] = allocation.slots[key]
        if key in allocation.instances:
            instances[new] = allocation.instances[key]
    return dataclasses.replace(allocation, charges=tuple(charges), slots=slots, instances=instances,
                               slot_key=slot_key, behind=())


def migrate(source: Ledger, target: Ledger, *, scope_of: ScopeOf = host_scoped,
            clock: Callable[[], float] | None = None) -> MigrationResult:
    """Copy the active allocations (and registered pools) of ``source`` into ``target``."""
    if source.location == target.location:
        raise UsageError(f"--from and --to name the same ledger ({source.location}); nothing to copy.")
    for ledger in (source, target):
        if hasattr(ledger, "scope_of"):
            ledger.scope_of = scope_of
    snapshot = source.read(EVERYTHING)
    copied: list[str] = []
    already: list[str] = []
    expired: list[str] = []
    pools: list[str] = []
    with target.transaction(EVERYTHING) as txn:
        now = txn.now if clock is None else clock()
        for record in snapshot.pools.values():
            if txn.pool(record.key) is None:
                txn.put_pool(record, pool_event("register", record, now, host=f"migrated from {source.location}"))
                pools.append(record.key)
        for allocation in sorted(snapshot.allocations, key=lambda a: a.fencing_token):
            if allocation.expires_at <= now:
                expired.append(allocation.id)
                continue
            if txn.find(allocation.id) is not None:
                already.append(allocation.id)
                continue
            moved = rekey(allocation, shared=target.shared, scope_of=scope_of)
            clash = [k for k, i in moved.slots.items() if i in txn.taken(k)]
            if clash:
                free = dict(moved.slots)
                for key in clash:
                    taken = txn.taken(key)
                    free[key] = next(i for i in range(len(taken) + 1) if i not in taken)
                moved = dataclasses.replace(moved, slots=free)
            txn.grant(moved, event_record("migrate", moved, now, **{"from": source.location}))
            copied.append(allocation.id)
        txn.raise_counter(snapshot.counter)
        counter = txn.counter
    return MigrationResult(source=source.location, target=target.location, copied=copied, already_there=already,
                           expired=expired, fencing_counter=counter, pools=pools)
