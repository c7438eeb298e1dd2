"""The one upgrade chain of the ledger's schema, shared by every backend.

A ledger document of schema 1 held allocations and waiters without their pool keys; a
schema-2 ledger records, with each allocation, the keys it counts against and the
instance it holds in each (see :mod:`netra_rm.core.accounting`). :func:`upgrade`
brings a document of any earlier schema up to :data:`SCHEMA_VERSION`, one step at a
time; the file ledger applies it when it reads an old file (writing the result with its
next change), and the Redis and PostgreSQL ledgers apply it, in one transaction, to the
document a schema-1 server ledger kept (see ``netra-rm ledger migrate``).

A schema-1 record does not say whether its layer's pool was per host or fleet-wide: the
caller says (``scope_of``), from its configuration; on the file ledger it does not
matter, every key there belongs to the one machine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from netra_rm.ledger.base import SCHEMA_VERSION
from netra_rm.records import RecordError, caps_key, layer_key, pool_key

#: (kind, name) -> "host" or "global": how the configuration scopes a layer or pool
ScopeOf = Callable[[str, str], str]


def host_scoped(kind: str, name: str) -> str:
    """The default when nothing better is known: every pool per host."""
    return "host"


def upgrade(data: dict[str, Any], *, shared: bool, scope_of: ScopeOf = host_scoped) -> dict[str, Any]:
    """Bring a ledger document up to :data:`SCHEMA_VERSION`, one version at a time.

    :param shared: a server ledger: host-scoped keys carry each owner's host.
    """
    version = data.get("schema_version")
    if version == 1:
        data = _v1_to_v2(data, shared=shared, scope_of=scope_of)
        version = 2
    if version != SCHEMA_VERSION:
        raise RecordError(f"schema version {version!r} cannot be upgraded")
    return data


def _v1_to_v2(data: Mapping[str, Any], *, shared: bool, scope_of: ScopeOf) -> dict[str, Any]:
    allocations = data.get("allocations", [])
    waiters = data.get("waiters", [])
    if not isinstance(allocations, list) or not isinstance(waiters, list):
        raise RecordError("allocations and waiters must be lists")
    taken: dict[str, set[int]] = {}
    out_allocations = []
    ordered = sorted(allocations, key=lambda a: a.get("fencing_token", 0) if isinstance(a, Mapping) else 0)
    for item in ordered:
        if not isinstance(item, Mapping):
            raise RecordError("an allocation record is not an object")
        record = dict(item)
        charges, slot_key = _charges(record, shared=shared, scope_of=scope_of)
        slots: dict[str, int] = {}
        if slot_key is not None:
            slot = record.get("slot", 0)
            slots[slot_key] = slot if isinstance(slot, int) and not isinstance(slot, bool) else 0
            taken.setdefault(slot_key, set()).add(slots[slot_key])
        for key in charges:
            if key.startswith("pool:"):
                used = taken.setdefault(key, set())
                index = next(i for i in range(len(used) + 1) if i not in used)
                used.add(index)
                slots[key] = index
        record.update(charges=charges, slots=slots, slot_key=slot_key)
        record.pop("extra", None)
        out_allocations.append(record)
    out_waiters = []
    for item in waiters:
        if not isinstance(item, Mapping):
            raise RecordError("a waiter record is not an object")
        record = dict(item)
        record["charges"], _ = _charges(record, shared=shared, scope_of=scope_of)
        out_waiters.append(record)
    return {"schema_version": 2, "ledger_id": data.get("ledger_id"), "origin": data.get("origin"),
            "fencing_counter": data.get("fencing_counter", 0), "journal_seq": data.get("journal_seq", 0),
            "allocations": out_allocations, "waiters": out_waiters, "pools": []}


def _charges(record: Mapping[str, Any], *, shared: bool, scope_of: ScopeOf) -> tuple[list[str], str | None]:
    owner = record.get("owner")
    host = owner.get("host", "") if shared and isinstance(owner, Mapping) else ""
    host = host if isinstance(host, str) else ""
    layer = record.get("layer")
    charges: list[str] = []
    slot_key = None
    if isinstance(layer, str):
        slot_key = layer_key(layer, scope_of("layer", layer), host)
        charges += [slot_key, caps_key(host)]
    pools = record.get("pools", [])
    for name in pools if isinstance(pools, list) else []:
        if isinstance(name, str):
            charges.append(pool_key(name, scope_of("pool", name), host))
    return charges, slot_key
