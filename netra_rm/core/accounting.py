"""Which allocations count against which pool: the one accounting rule.

Every pool an allocation can draw from has a *key*:

* ``layer:NAME@HOST`` — a layer's pool with ``scope: host`` (the default): the memory and
  CPU of one machine, counted per host on a shared ledger;
* ``layer:NAME`` — a layer's pool with ``scope: global``: counted across the fleet;
* ``pool:NAME@HOST`` / ``pool:NAME`` — a shared pool (configuration ``pools:``, or an
  ad-hoc pool named with ``--pool``), per host or fleet-wide;
* ``caps@HOST`` — the global caps (``limits:``, ``MAX_*``), which are per host.

On the file ledger every allocation is on one machine, so the host part is left out
(``layer:NAME``, ``caps``): every pool counts them all.

When an allocation is granted, :func:`charges` decides its keys once, and they are
stored with it. From then on an allocation counts against exactly its keys, and nothing
else: admission, the queue, ``layer``, conflicts, ``verify``, ``status``, the metrics,
the monitor, the plugin and the Python API all sum usage per key
(:func:`usage_by_key`) and look up the keys this host sees (:func:`layer_key`,
:func:`pool_key`, :func:`caps_key`). There is no other place that decides it.

Capacity. A host-scoped key's capacity comes from the host's own configuration. A
global key's capacity (a global layer pool, a global shared pool, an ad-hoc pool) is
held in the ledger itself: the first host to use it registers it from its
configuration, and ``netra-rm pool set`` changes it centrally (see
:mod:`netra_rm.core.pools`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from netra_rm.config.model import Config, Layer, Limits, Pool, SharedPool
from netra_rm.records import (
    CAPS,
    Allocation,
    Capacity,
    Request,
    caps_key,
    cpu_units,
    layer_key,
    parse_key,
    pool_key,
    taken_slots,
    usage_by_key,
)

__all__ = ["CAPS", "Charge", "caps_key", "charges", "host_view", "layer_key", "parse_key", "pool_key",
           "taken_slots", "usage_by_key"]


@dataclass(frozen=True)
class Charge:
    """One pool a request counts against.

    ``capacity`` is what this host's configuration says it may hold (None for an ad-hoc
    pool, whose capacity only the ledger holds, or comes from ``--instances``);
    ``central`` says the ledger holds the capacity that counts (a global key).
    """

    key: str
    kind: str  # "layer", "pool" or "caps"
    name: str
    scope: str
    capacity: Capacity | None
    central: bool
    slots: bool  # does it hand out instance indices (slots)?
    description: str = ""

    @property
    def label(self) -> str:
        """The pool as a user reads it in a sentence."""
        if self.kind == "layer":
            return f"layer {self.name}"
        if self.kind == "caps":
            return "the global caps"
        return f"pool {self.name} ({self.scope})"


def pool_capacity(pool: Pool) -> Capacity:
    """A layer pool's capacity: memory, CPU and instances (named ones, if listed)."""
    return Capacity(instances=pool.instances, memory_mb=pool.memory_mb, cpu_units=cpu_units(pool.cpu_percent),
                    names=pool.names, properties=pool.properties, dedicated=True)


def shared_capacity(pool: SharedPool) -> Capacity:
    return Capacity(instances=pool.instances, memory_mb=pool.memory_mb,
                    cpu_units=None if pool.cpu_percent is None else cpu_units(pool.cpu_percent),
                    names=pool.names, properties=pool.properties)


def caps_capacity(limits: Limits) -> Capacity:
    return Capacity(instances=limits.max_parallel_instances, memory_mb=limits.max_memory_mb,
                    cpu_units=cpu_units(limits.max_cpu_percent))


def adhoc_capacity(instances: int) -> Capacity:
    """An ad-hoc pool (``--pool NAME --instances N``): instances only."""
    return Capacity(instances=instances)


def layer_charge(layer: Layer, host: str) -> Charge:
    scope = layer.pool.scope
    return Charge(key=layer_key(layer.name, scope, host), kind="layer", name=layer.name, scope=scope,
                  capacity=pool_capacity(layer.pool), central=scope == "global", slots=True,
                  description=layer.description)


def caps_charge(limits: Limits, host: str) -> Charge:
    return Charge(key=caps_key(host), kind="caps", name="", scope="host", capacity=caps_capacity(limits),
                  central=False, slots=False)


def shared_charge(name: str, config: Config, host: str, *, adhoc_instances: int | None = None) -> Charge:
    """A shared pool from the configuration, or an ad-hoc one (global, capacity in the ledger)."""
    spec = config.pools.get(name)
    if spec is None:
        capacity = None if adhoc_instances is None else adhoc_capacity(adhoc_instances)
        return Charge(key=pool_key(name, "global", host), kind="pool", name=name, scope="global",
                      capacity=capacity, central=True, slots=True)
    return Charge(key=pool_key(name, spec.scope, host), kind="pool", name=name, scope=spec.scope,
                  capacity=shared_capacity(spec), central=spec.scope == "global", slots=True,
                  description=spec.description)


def charges(request: Request, config: Config, host: str, *,
            adhoc_instances: Mapping[str, int] | None = None) -> list[Charge]:
    """The pools ``request`` counts against, on ``host`` ("" on the file ledger): its
    layer's pool, the host's global caps and each shared or ad-hoc pool it names.

    A request without a layer (``--pool NAME`` alone) takes one instance of its pools
    and counts against the caps only when it reserves memory or CPU.
    """
    found: list[Charge] = []
    if request.layer is not None:
        found.append(layer_charge(config.layer(request.layer), host))
    if request.layer is not None or request.memory_mb or request.cpu_units:
        found.append(caps_charge(config.limits, host))
    for name in request.pools:
        found.append(shared_charge(name, config, host, adhoc_instances=(adhoc_instances or {}).get(name)))
    return found


@dataclass(frozen=True)
class HostView:
    """The keys one host looks at: each layer's pool, each configured shared pool and its
    own caps, as this host's configuration scopes them."""

    layers: Mapping[str, Charge]
    pools: Mapping[str, Charge]
    caps: Charge

    @property
    def keys(self) -> list[str]:
        return [c.key for c in (*self.layers.values(), *self.pools.values(), self.caps)]


def holders(allocations: Iterable[Allocation], key: str) -> list[Allocation]:
    """The allocations that count against ``key``."""
    return [a for a in allocations if key in a.charges]


def host_view(config: Config, host: str) -> HostView:
    return HostView(layers={name: layer_charge(layer, host) for name, layer in config.layers.items()},
                    pools={name: shared_charge(name, config, host) for name in config.pools},
                    caps=caps_charge(config.limits, host))


def default_share(pool: Pool) -> tuple[int, int]:
    """A layer's default share (memory MB, CPU units): its pool divided by its instances,
    rounded down, so that ``instances`` default shares always fit the pool exactly."""
    return pool.memory_mb // pool.instances, cpu_units(pool.cpu_percent) // pool.instances
