"""Pools as the fleet administers them: which key ``pool show/set/drain/resume NAME``
acts on, changing a pool's capacity or state in the ledger for every host at once, the
pools a host sees, and the named instances a holder is told about."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from netra_rm.core.accounting import Charge
from netra_rm.errors import UsageError
from netra_rm.ledger import Scope, Snapshot
from netra_rm.ledger.journal import pool_event
from netra_rm.records import Allocation, Capacity, PoolRecord, Usage, cpu_percent, cpu_units, parse_key
from netra_rm.redact import mask_url

if TYPE_CHECKING:
    from netra_rm.core.engine import Engine


def pool_key_for(engine: Engine, name: str, *, host: str | None = None) -> str:
    """The key ``pool show/set/drain/resume NAME`` acts on: a layer's pool or a shared
    or ad-hoc pool, this host's for a host-scoped one (or ``host``'s)."""
    from netra_rm.records import layer_key, pool_key

    where = engine.host_key if host is None else host
    if name in engine.config.layers:
        return layer_key(name, engine.config.layers[name].pool.scope, where)
    if name in engine.config.pools:
        return pool_key(name, engine.config.pools[name].scope, where)
    check_pool_name(name)
    return pool_key(name, "global", "")

def instance_environment(engine: Engine, allocation: Allocation) -> dict[str, str]:
    """The variables that tell a holder which named instances it holds:
    ``NETRA_RM_INSTANCE`` and ``NETRA_RM_INSTANCE_<PROPERTY>`` for the first pool the
    allocation uses that names its instances, and ``NETRA_RM_POOL_<POOL>_INSTANCE``
    (``_<PROPERTY>``) for each. Property values come from this host's configuration
    (with their passwords), else from the ledger (masked)."""
    env: dict[str, str] = {}
    ordered_keys = [k for k in allocation.charges if k in allocation.instances]
    registry: dict[str, PoolRecord] | None = None
    for i, key in enumerate(ordered_keys):
        name = allocation.instances[key]
        charge = _charge_for_key(engine, key)
        properties: Mapping[str, str] = {}
        if charge is not None and charge.capacity is not None and name in charge.capacity.properties:
            properties = charge.capacity.properties[name]
        else:
            if registry is None:
                registry = engine.ledger.read(Scope(keys=frozenset(ordered_keys))).pools
            record = registry.get(key)
            if record is not None:
                properties = record.capacity.properties.get(name, {})
        pool = _env_name(parse_key(key)[1])
        env[f"NETRA_RM_POOL_{pool}_INSTANCE"] = name
        for prop, value in properties.items():
            env[f"NETRA_RM_POOL_{pool}_{_env_name(prop)}"] = value
        if i == 0:
            env["NETRA_RM_INSTANCE"] = name
            for prop, value in properties.items():
                env[f"NETRA_RM_INSTANCE_{_env_name(prop)}"] = value
    return env

def _charge_for_key(engine: Engine, key: str) -> Charge | None:
    kind, name, _ = parse_key(key)
    if kind == "layer" and name in engine.config.layers:
        return engine.view.layers.get(name) if engine.view.layers[name].key == key else None
    if kind == "pool" and name in engine.config.pools:
        return engine.view.pools.get(name) if engine.view.pools[name].key == key else None
    return None

def change_pool(engine: Engine, name: str, *, instances: int | None = None, memory_mb: int | None = None,
                cpu_percent_value: float | None = None, drained: bool | None = None,
                host: str | None = None) -> PoolRecord:
    """``pool set`` / ``drain`` / ``resume``: change a pool's capacity or state in the
    ledger, for every host at once; a journal event records it."""
    key = pool_key_for(engine, name, host=host)
    peek = engine.ledger.read(Scope(keys=frozenset({key})))
    keys = frozenset({key}) | engine._keys_of_waiters_sharing(peek, {key})
    with engine.transaction(Scope(keys=keys)) as (txn, _):
        record = txn.pool(key)
        charge = _charge_for_key(engine, key)
        if record is None:
            if charge is None or charge.capacity is None:
                raise UsageError(f"pool {name} is not known to the ledger {engine.ledger.location} and not "
                                 "configured here.", remediation=[
                                     f"Create it on first use: netra-rm run --pool {name} --instances N -- CMD"])
            record = PoolRecord(key=key, capacity=masked_capacity(charge.capacity), source="config",
                                registered_by=engine.host, changed_at=round(txn.now, 3),
                                description=charge.description)
        before = record.capacity
        capacity = before
        action = "set"
        if instances is not None or memory_mb is not None or cpu_percent_value is not None:
            if instances is not None and before.names and instances != len(before.names):
                raise UsageError(f"pool {name} lists {len(before.names)} named instances; change the list in "
                                 "the configuration instead of the count.")
            capacity = dataclasses.replace(
                before, instances=before.instances if instances is None else instances,
                memory_mb=before.memory_mb if memory_mb is None else memory_mb,
                cpu_units=before.cpu_units if cpu_percent_value is None else cpu_units(cpu_percent_value))
            record = dataclasses.replace(record, capacity=capacity, source="admin")
        if drained is not None:
            action = "drain" if drained else "resume"
            record = dataclasses.replace(record, drained=drained)
        record = dataclasses.replace(record, changed_at=round(txn.now, 3))
        txn.put_pool(record, pool_event(action, record, txn.now, host=engine.host, previous=before))
        return record

def pools(engine: Engine) -> list[dict[str, Any]]:
    """Every pool this host sees, and every pool the ledger holds: capacity, usage,
    state, and where its capacity comes from."""
    snapshot = engine.ledger.read(Scope(everything=True))
    seen: set[str] = set()
    views = []
    for charge in (*engine.view.layers.values(), *engine.view.pools.values()):
        seen.add(charge.key)
        views.append(_pool_view(engine, charge.key, charge, snapshot))
    for key in sorted(snapshot.pools):
        if key not in seen:
            views.append(_pool_view(engine, key, None, snapshot))
    return views

def _pool_view(engine: Engine, key: str, charge: Charge | None, snapshot: Snapshot) -> dict[str, Any]:
    kind, name, host = parse_key(key)
    record = snapshot.pools.get(key)
    capacity = record.capacity if record is not None else (charge.capacity if charge else None)
    used = snapshot.usage.get(key, Usage())
    configured = charge.capacity if charge is not None else None
    view: dict[str, Any] = {
        "name": name, "kind": kind, "key": key, "scope": "host" if host else "global",
        "source": record.source if record is not None else ("configuration" if configured else "unknown"),
        "drained": bool(record and record.drained), "active_instances": used.instances,
        "allocated_memory_mb": used.memory_mb, "allocated_cpu_percent": used.cpu_percent,
    }
    if capacity is not None:
        view.update(max_parallel_instances=capacity.instances, max_memory_mb=capacity.memory_mb,
                    max_cpu_percent=capacity.cpu_percent,
                    available_instances=max(0, capacity.instances - used.instances))
        if capacity.names:
            view["instances"] = list(capacity.names)
    if record is not None and configured is not None and not record.capacity.same_limits(configured):
        view["configured"] = masked_capacity(configured).to_dict()
    return view

def _env_name(text: str) -> str:
    """A pool or property name as part of an environment variable's name."""
    return "".join(c if c.isalnum() else "_" for c in text).upper()


def check_pool_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise UsageError(f"the pool name {name!r} must be 1-64 letters, digits, '_', '.' or '-', starting with a "
                         "letter or digit.")


def masked_capacity(capacity: Capacity) -> Capacity:
    """A capacity as the ledger may store it: property values that are URLs lose their
    passwords (the holder gets the real ones from its own configuration)."""
    if not capacity.properties:
        return capacity
    return dataclasses.replace(capacity, properties={
        name: {k: (mask_url(v) or v) if "://" in v else v for k, v in props.items()}
        for name, props in capacity.properties.items()})


def capacity_words(capacity: Capacity) -> str:
    parts = [f"{capacity.instances} instance(s)"]
    if capacity.memory_mb is not None:
        parts.append(f"{capacity.memory_mb} MB")
    if capacity.cpu_units is not None:
        parts.append(f"{cpu_percent(capacity.cpu_units):g}% CPU")
    if capacity.names:
        parts.append("named " + ", ".join(capacity.names))
    return ", ".join(parts)
