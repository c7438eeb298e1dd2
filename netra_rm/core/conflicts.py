"""Conflicts: what is wrong with the pools right now, one clear sentence each.

Pools are counted the one way everywhere (see :mod:`netra_rm.core.accounting`): a host
looks at its own key of a host-scoped pool and at the fleet's key of a global one, so
what other hosts hold in their own pools is never this host's conflict.
"""

from __future__ import annotations

from typing import Any

from netra_rm.core.engine import Engine
from netra_rm.records import Capacity, Usage, cpu_percent


def find_conflicts(engine: Engine, *, sample: Any = None, layer: str | None = None) -> list[str]:
    """Pools over their limits (say, after a pool shrank), this host's global caps
    exceeded, a dedicated allocation sharing its layer, the machine at a critical level
    while allocations are active, and allocations just reclaimed because their time ran
    out, their owner is gone or their lease lapsed. ``layer`` limits the answer to what
    concerns that layer."""
    snapshot, reclaimed = engine.report()
    snapshot_usage = snapshot.usage
    pools = snapshot.pools
    allocations = snapshot.allocations
    found: list[str] = []
    for r in reclaimed:
        if layer in (None, r.allocation.layer):
            why = {"expired": "its time ran out", "lease lapsed": "its holder stopped renewing its lease"}.get(
                r.reason, "its owner process is gone")
            found.append(f"allocation {r.allocation.id} ({r.allocation.layer}/{r.allocation.category}) was "
                         f"reclaimed: {why}.")
    view = engine.view
    targets = [(name, charge) for name, charge in view.layers.items() if layer in (None, name)]
    if layer is not None:
        spec = engine.config.layer(layer)
        targets += [(name, view.pools[name]) for name in spec.uses if name in view.pools]
    else:
        targets += list(view.pools.items())
    for name, charge in targets:
        record = pools.get(charge.key)
        capacity = record.capacity if record is not None else charge.capacity
        if capacity is None:
            continue
        found.extend(_over(charge.label, snapshot_usage.get(charge.key, Usage()), capacity))
        if charge.kind == "layer":
            held = [a for a in allocations if charge.key in a.charges]
            dedicated = [a for a in held if a.dedicated]
            if dedicated and len(held) > 1:
                found.append(f"layer {name}: dedicated allocation {dedicated[0].id} shares the layer with "
                             f"{len(held) - 1} other allocation(s).")
    configured = set(engine.config.layers)
    orphans = {a.layer for a in allocations if a.layer is not None and a.layer not in configured
               and a.owner.host == engine.host}
    for name in sorted(orphans):
        if layer in (None, name):
            count = sum(1 for a in allocations if a.layer == name)
            found.append(f"layer {name} holds {count} allocation(s) but is no longer configured.")
    caps = view.caps
    mine = snapshot_usage.get(caps.key, Usage())
    if caps.capacity is not None and (layer is None or mine.instances):
        limits = engine.config.limits
        if mine.memory_mb > limits.max_memory_mb:
            found.append(f"the global memory cap is exceeded: {mine.memory_mb} of {limits.max_memory_mb} MB.")
        if caps.capacity.cpu_units is not None and mine.cpu_units > caps.capacity.cpu_units:
            found.append(f"the global CPU cap is exceeded: {mine.cpu_percent:g}% of {limits.max_cpu_percent:g}%.")
        if mine.instances > limits.max_parallel_instances:
            found.append(f"the global instance cap is exceeded: {mine.instances} of "
                         f"{limits.max_parallel_instances}.")
    if sample is not None and mine.instances:
        found.extend(_critical_machine(engine, sample))
    found.extend(_over_use(engine, allocations, layer))
    return found


def _over(label: str, used: Usage, capacity: Capacity) -> list[str]:
    found = []
    if capacity.memory_mb is not None and used.memory_mb > capacity.memory_mb:
        found.append(f"{label} is over its memory limit: {used.memory_mb} of {capacity.memory_mb} MB.")
    if capacity.cpu_units is not None and used.cpu_units > capacity.cpu_units:
        found.append(f"{label} is over its CPU limit: {used.cpu_percent:g}% of {cpu_percent(capacity.cpu_units):g}%.")
    if used.instances > capacity.instances:
        found.append(f"{label} is over its instance limit: {used.instances} of {capacity.instances}.")
    return found


def _over_use(engine: Engine, allocations: list[Any], layer: str | None) -> list[str]:
    """Allocations of this host whose owner uses more memory than it reserved."""
    from netra_rm.machine import live

    views = [a.to_dict() for a in allocations if a.owner.host == engine.host and a.owner.pid is not None
             and layer in (None, a.layer)]
    live.annotate(views, engine.host)
    return live.over_use(views)


def _critical_machine(engine: Engine, sample: Any) -> list[str]:
    thresholds = engine.config.thresholds
    found = []
    for metric, label, value in (("memory_percent", "memory", getattr(sample, "memory_percent", None)),
                                 ("cpu_percent", "CPU", getattr(sample, "cpu_percent", None))):
        level = thresholds.get(metric)
        if value is not None and level and value >= level["critical"]:
            found.append(f"system {label} is at a critical level ({value:.0f}% >= {level['critical']:g}%) while "
                         "allocations are active.")
    return found
