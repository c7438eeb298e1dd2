"""``netra-rm ledger migrate --from A --to B``: copy active allocations between ledgers.

Both ledgers are held for the copy (the source first, then the target), so nothing is
granted in either meanwhile and the copy is one consistent snapshot. Allocations already
in the target (same id) are left alone, expired ones are not copied, and the target's
fencing counter is raised to at least the source's, so fencing tokens stay monotonic for
holders that move over. The copies are journaled in the target as ``migrate`` events, so
``netra-rm verify`` on the target explains them. The source is not changed: switch
``NETRA_RM_LEDGER`` (or ``--ledger``) to the target once the copy is done, and holders
release their allocations there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from netra_rm.errors import UsageError
from netra_rm.ledger.base import Ledger


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

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": 1, "from": self.source, "to": self.target, "copied": self.copied,
                "already_there": self.already_there, "expired": self.expired,
                "fencing_counter": self.fencing_counter}


def migrate(source: Ledger, target: Ledger, *, clock: Callable[[], float] = time.time) -> MigrationResult:
    """Copy the active allocations of ``source`` into ``target`` (see the module)."""
    if source.location == target.location:
        raise UsageError(f"--from and --to name the same ledger ({source.location}); nothing to copy.")
    with source.transaction() as src, target.transaction() as dst:
        now = clock()
        present = {a.id for a in dst.allocations}
        copied: list[str] = []
        already: list[str] = []
        expired: list[str] = []
        for allocation in src.allocations:
            if allocation.expires_at <= now:
                expired.append(allocation.id)
            elif allocation.id in present:
                already.append(allocation.id)
            else:
                dst.add(allocation)
                copied.append(allocation.id)
                dst.events.append(_migrate_event(allocation.to_dict(), now, source.location))
        if src.fencing_counter > dst.fencing_counter:
            dst.fencing_counter = src.fencing_counter
            dst.changed = True
        counter = dst.fencing_counter
    return MigrationResult(source=source.location, target=target.location, copied=copied, already_there=already,
                           expired=expired, fencing_counter=counter)


def _migrate_event(data: dict[str, Any], now: float, source: str) -> dict[str, Any]:
    event = {"time": round(now, 3), "event": "migrate", "id": data["id"], "layer": data["layer"],
             "category": data.get("category", ""), "memory_mb": data["memory_mb"],
             "cpu_percent": data["cpu_percent"], "dedicated": data.get("dedicated", False),
             "slot": data.get("slot", 0), "fencing_token": data.get("fencing_token", 0),
             "owner": data.get("owner"), "from": source}
    if data.get("pools"):
        event["pools"] = data["pools"]
    return event
