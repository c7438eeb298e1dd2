"""What ``status``, the monitor, the metrics and the Python API show of the pools and
the allocations: views over one snapshot of the ledger, counted by pool key (see
:mod:`netra_rm.core.accounting`) as this host counts them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from netra_rm.core.queue import ordered, waiter_view
from netra_rm.ledger import Scope, Snapshot
from netra_rm.records import Allocation, Capacity, Usage, cpu_percent, parse_key

if TYPE_CHECKING:
    from netra_rm.core.engine import Engine


def resource_status(engine: Engine, *, system_metrics: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The pools, the active allocations and the machine, as the contract's dict."""
    snapshot = engine.report()[0]
    now = snapshot.now
    allocations = sorted(snapshot.allocations, key=lambda a: (a.created_at, a.id))
    queue = ordered(snapshot.waiters, now, engine.config.aging_seconds)
    waiters = [waiter_view(w, i, now, engine.config.aging_seconds) for i, w in enumerate(queue, 1)]
    caps = engine.view.caps
    total = snapshot.usage.get(caps.key, Usage())
    limits = engine.config.limits
    capacity = engine.capacity_reader()
    metrics: dict[str, Any] = dict(system_metrics or {})
    metrics.setdefault("capacity", capacity.to_dict())
    return {
        "total_allocations": len(allocations),
        "resource_pools": _layer_pools(engine, snapshot),
        "active_allocations": [allocation_view(a, now) for a in allocations],
        "global_limits": {
            "max_memory_mb": limits.max_memory_mb, "allocated_memory_mb": total.memory_mb,
            "max_cpu_percent": limits.max_cpu_percent, "allocated_cpu_percent": total.cpu_percent,
            "max_parallel_instances": limits.max_parallel_instances, "active_instances": total.instances,
            "sources": dict(limits.sources),
        },
        "system_metrics": metrics,
        "waiters": waiters,
        "ledger": engine.ledger.location,
        "ledger_warnings": list(snapshot.warnings),
        "host": engine.host,
        "shared_pools": _shared_pools(engine, snapshot),
    }

def _layer_pools(engine: Engine, snapshot: Snapshot) -> dict[str, dict[str, Any]]:
    """Each layer's pool as this host counts it (its own key for a host pool, the
    fleet's for a global one), with the ledger's capacity for a central pool."""
    pools = {}
    for name, charge in engine.view.layers.items():
        record = snapshot.pools.get(charge.key)
        capacity = record.capacity if record is not None else charge.capacity
        assert capacity is not None
        view = pool_view(capacity, snapshot.usage.get(charge.key, Usage()), scope=charge.scope)
        view["key"] = charge.key
        view["drained"] = bool(record and record.drained)
        pools[name] = view
    return pools

def _shared_pools(engine: Engine, snapshot: Snapshot) -> dict[str, dict[str, Any]]:
    found = {}
    for name, charge in engine.view.pools.items():
        record = snapshot.pools.get(charge.key)
        capacity = record.capacity if record is not None else charge.capacity
        assert capacity is not None
        found[name] = shared_pool_status(capacity, snapshot.usage.get(charge.key, Usage()), scope=charge.scope,
                                         drained=bool(record and record.drained))
    for key, record in snapshot.pools.items():
        kind, name, host = parse_key(key)
        if kind == "pool" and name not in found and host is None:
            found[name] = shared_pool_status(record.capacity, snapshot.usage.get(key, Usage()), scope="global",
                                             drained=record.drained)
            found[name]["adhoc"] = True
    return found

def pool_usage(engine: Engine) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """The layers' pools and the active allocations, for a view that asks every second:
    a read, not a transaction, unless something is due to be reclaimed."""
    snapshot = engine.report()[0]
    now = snapshot.now
    allocations = sorted(snapshot.allocations, key=lambda a: (a.created_at, a.id))
    return _layer_pools(engine, snapshot), [allocation_view(a, now) for a in allocations]

def layer_pool_status(engine: Engine, layer: str) -> dict[str, Any]:
    """One layer's pool with its usage now (as this host counts it)."""
    engine.config.layer(layer)
    charge = engine.view.layers[layer]
    snapshot = engine.ledger.read(Scope(keys=frozenset({charge.key})))
    record = snapshot.pools.get(charge.key)
    capacity = record.capacity if record is not None else charge.capacity
    assert capacity is not None
    view = pool_view(capacity, snapshot.usage.get(charge.key, Usage()), scope=charge.scope)
    view["drained"] = bool(record and record.drained)
    return view

def pool_view(capacity: Capacity, used: Usage, *, scope: str = "host") -> dict[str, Any]:
    """The contract's per-layer pool dict."""
    memory = capacity.memory_mb or 0
    cpu = capacity.cpu_units or 0
    data = {
        "max_memory_mb": memory, "allocated_memory_mb": used.memory_mb,
        "available_memory_mb": max(0, memory - used.memory_mb),
        "max_cpu_percent": cpu_percent(cpu), "allocated_cpu_percent": used.cpu_percent,
        "available_cpu_percent": cpu_percent(max(0, cpu - used.cpu_units)),
        "max_parallel_instances": capacity.instances, "active_instances": used.instances,
        "available_instances": max(0, capacity.instances - used.instances) if not used.dedicated else 0,
        "dedicated": bool(used.dedicated),
        "scope": scope,
    }
    if capacity.names:
        data["instances"] = list(capacity.names)
    return data


def shared_pool_status(capacity: Capacity, used: Usage, *, scope: str, drained: bool = False) -> dict[str, Any]:
    """A shared pool with its usage: instances, and memory and CPU where it limits them."""
    data = {"scope": scope, "max_parallel_instances": capacity.instances, "active_instances": used.instances,
            "available_instances": max(0, capacity.instances - used.instances),
            "max_memory_mb": capacity.memory_mb, "allocated_memory_mb": used.memory_mb,
            "max_cpu_percent": capacity.cpu_percent, "allocated_cpu_percent": used.cpu_percent,
            "drained": drained}
    if capacity.names:
        data["instances"] = list(capacity.names)
    return data


def allocation_view(allocation: Allocation, now: float) -> dict[str, Any]:
    """An allocation as shown to users: the ledger record plus age and time left (the
    internal bookkeeping left out)."""
    data = allocation.to_dict()
    for internal in ("behind", "slot_key", "request_id"):
        data.pop(internal, None)
    if allocation.instances:
        data["instances"] = {parse_key(k)[1] or k: v for k, v in allocation.instances.items()}
    data["age_seconds"] = round(max(0.0, now - allocation.created_at), 1)
    data["expires_in_seconds"] = round(allocation.expires_at - now, 1)
    return data
