"""Conflicts: what is wrong with the pools right now, one clear sentence each."""

from __future__ import annotations

from typing import Any

from netra_rm.core.admission import Usage, usage_by_layer
from netra_rm.core.engine import Engine


def find_conflicts(engine: Engine, *, sample: Any = None, layer: str | None = None) -> list[str]:
    """Pools over their limits (say, after the configuration shrank), global caps exceeded,
    a dedicated allocation sharing its layer, the machine at a critical level while
    allocations are active, and allocations reclaimed because their time ran out or their
    owner is gone. ``layer`` limits the answer to what concerns that layer."""
    with engine.transaction() as (state, reclaimed):
        allocations = list(state.allocations)
    found: list[str] = []
    for r in reclaimed:
        if layer in (None, r.allocation.layer):
            why = "its time ran out" if r.reason == "expired" else "its owner process is gone"
            found.append(f"allocation {r.allocation.id} ({r.allocation.layer}/{r.allocation.category}) was "
                         f"reclaimed: {why}.")
    by_layer = usage_by_layer(allocations)
    for name, held in sorted(by_layer.items()):
        if layer not in (None, name):
            continue
        spec = engine.config.layers.get(name)
        if spec is None:
            found.append(f"layer {name} holds {len(held)} allocation(s) but is no longer configured.")
            continue
        used, pool = Usage.of(held), spec.pool
        if used.memory_mb > pool.memory_mb:
            found.append(f"layer {name} is over its memory limit: {used.memory_mb} of {pool.memory_mb} MB.")
        if used.cpu_percent > pool.cpu_percent + 1e-9:
            found.append(f"layer {name} is over its CPU limit: {used.cpu_percent:g}% of {pool.cpu_percent:g}%.")
        if used.instances > pool.instances:
            found.append(f"layer {name} is over its instance limit: {used.instances} of {pool.instances}.")
        dedicated = [a for a in held if a.dedicated]
        if dedicated and len(held) > 1:
            found.append(f"layer {name}: dedicated allocation {dedicated[0].id} shares the layer with "
                         f"{len(held) - 1} other allocation(s).")
    total, limits = Usage.of(allocations), engine.config.limits
    if layer is None or layer in by_layer:
        if total.memory_mb > limits.max_memory_mb:
            found.append(f"the global memory cap is exceeded: {total.memory_mb} of {limits.max_memory_mb} MB.")
        if total.cpu_percent > limits.max_cpu_percent + 1e-9:
            found.append(f"the global CPU cap is exceeded: {total.cpu_percent:g}% of {limits.max_cpu_percent:g}%.")
        if total.instances > limits.max_parallel_instances:
            found.append(f"the global instance cap is exceeded: {total.instances} of "
                         f"{limits.max_parallel_instances}.")
    if sample is not None and allocations:
        found.extend(_critical_machine(engine, sample))
    found.extend(_over_use(engine, allocations, layer))
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
