"""The records a ledger stores: owners, allocations, waiters and registered pools.

This module is at the bottom of the house: every backend (file, Redis, PostgreSQL) and
the engine use these types, and it imports nothing else of netra-rm. Each record is a
frozen value with ``to_dict`` and a strict ``from_dict``: a record read from a ledger is
checked for types, ranges and required keys, and anything else raises
:class:`RecordError`, which a backend reports as a corrupt ledger (exit 5), never as a
crash. Numbers are finite and in range; identifiers follow :data:`ID_PATTERN`, so an id
can name a file beside the ledger without ever being a path.

Quantities are exact. Memory is whole megabytes; CPU is kept in thousandths of a
percent (:data:`CPU_UNITS` per percent), so sums never drift and N default shares of a
pool always fit it (see :func:`cpu_units`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

T = TypeVar("T")

#: CPU is counted in thousandths of a percent.
CPU_UNITS = 1000
#: Identifiers of allocations, waiters and requests: lowercase hex, 8 to 32 characters.
ID_PATTERN = re.compile(r"[0-9a-f]{8,32}")
#: Upper bounds of what a record may hold (past these, a record is corrupt).
MAX_MEMORY_MB = 1 << 40
MAX_CPU_PERCENT = 1_000_000.0
MAX_TIME = 1e11  # Unix seconds, about the year 5100
MAX_TOKEN = 1 << 62
MAX_INSTANCES = 1_000_000
MAX_PRIORITY = 1_000_000
MAX_TEXT = 4096


# -- pool keys (see netra_rm.core.accounting for what they mean) ---------------------------------

CAPS = "caps"


def _host_suffix(scope: str, host: str) -> str:
    return f"@{host}" if scope == "host" and host else ""


def layer_key(layer: str, scope: str, host: str) -> str:
    """The key of a layer's pool: per host (``layer:NAME@HOST``) or fleet-wide."""
    return f"layer:{layer}{_host_suffix(scope, host)}"


def pool_key(pool: str, scope: str, host: str) -> str:
    """The key of a shared or ad-hoc pool: per host (``pool:NAME@HOST``) or fleet-wide."""
    return f"pool:{pool}{_host_suffix(scope, host)}"


def caps_key(host: str) -> str:
    """The key of a host's global caps (``caps@HOST``; ``caps`` on the file ledger)."""
    return f"{CAPS}@{host}" if host else CAPS


def parse_key(key: str) -> tuple[str, str, str | None]:
    """(kind, name, host or None) of a key: ``layer:tiny@ci-1`` -> ("layer", "tiny", "ci-1")."""
    if key == CAPS or key.startswith(CAPS + "@"):
        return "caps", "", key[len(CAPS) + 1:] or None
    kind, _, rest = key.partition(":")
    name, at, host = rest.partition("@")
    return kind, name, host if at else None


def token_floor(now: float) -> int:
    """Where a new ledger's fencing counter starts: the clock in milliseconds times 1024.
    A ledger that lost its state and starts again therefore hands out tokens above any the
    old one could have (unless it granted over a million a second on average)."""
    return int(now * 1000) << 10


class RecordError(ValueError):
    """A record that is not what the ledger may hold; the message says which field."""


def is_id(value: object) -> bool:
    """Does ``value`` follow the id grammar (and so can never be a path)?"""
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def cpu_units(percent: float) -> int:
    """A CPU percentage as a whole number of :data:`CPU_UNITS` (rounded to the nearest)."""
    return int(round(percent * CPU_UNITS))


def cpu_percent(units: int) -> float:
    """Units back to a percentage (exact to three decimals)."""
    return units / CPU_UNITS


# -- checked access to untrusted mappings ------------------------------------------------------

class _Fields:
    """Typed reads from one untrusted mapping; every failure names the record and the field."""

    def __init__(self, data: Any, what: str) -> None:
        if not isinstance(data, Mapping):
            raise RecordError(f"{what} is not an object")
        self.data = data
        self.what = what

    def fail(self, key: str, problem: str) -> RecordError:
        return RecordError(f"{self.what}: {key} {problem}")

    def text(self, key: str, *, default: str | None = None, optional: bool = False) -> Any:
        value = self.data.get(key, default)
        if value is None and (optional or default is not None):
            return value
        if not isinstance(value, str):
            raise self.fail(key, f"must be text, got {_kind(value)}")
        if len(value) > MAX_TEXT:
            raise self.fail(key, f"is longer than {MAX_TEXT} characters")
        return value

    def ident(self, key: str) -> str:
        value = self.data.get(key)
        if not is_id(value):
            raise self.fail(key, f"must be an id of 8-32 lowercase hex digits, got {_short(value)}")
        return str(value)

    def integer(self, key: str, *, minimum: int = 0, maximum: int = MAX_TOKEN, default: int | None = None,
                optional: bool = False) -> Any:
        value = self.data.get(key, default)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer() and math.isfinite(value):
                value = int(value)
            else:
                raise self.fail(key, f"must be a whole number, got {_short(value)}")
        if not minimum <= value <= maximum:
            raise self.fail(key, f"must be between {minimum} and {maximum}, got {value}")
        return value

    def number(self, key: str, *, minimum: float = 0.0, maximum: float = MAX_TIME, default: float | None = None,
               optional: bool = False) -> Any:
        value = self.data.get(key, default)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"must be a number, got {_short(value)}")
        if not math.isfinite(value) or not minimum <= value <= maximum:
            raise self.fail(key, f"must be a finite number between {minimum:g} and {maximum:g}, got {value!r}")
        return float(value)

    def boolean(self, key: str, *, default: bool = False) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {_short(value)}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key, ())
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and len(v) <= MAX_TEXT for v in value):
            raise self.fail(key, "must be a list of names")
        return tuple(value)

    def idents(self, key: str) -> tuple[str, ...]:
        values = self.strings(key)
        for v in values:
            if not is_id(v):
                raise self.fail(key, f"holds {_short(v)}, which is not an id")
        return values

    def mapping(self, key: str) -> Mapping[str, Any]:
        value = self.data.get(key, {})
        if not isinstance(value, Mapping):
            raise self.fail(key, f"must be an object, got {_kind(value)}")
        return value


def _kind(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- records ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Owner:
    """Who holds an allocation. ``pid`` None means no process: it lives until released or
    it expires. ``start`` identifies the process instance, so a reused pid is not alive."""

    host: str
    user: str
    pid: int | None = None
    start: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "user": self.user, "pid": self.pid, "start": self.start}

    @classmethod
    def from_dict(cls, data: Any, what: str = "owner") -> Owner:
        f = _Fields(data, what)
        return cls(host=f.text("host"), user=f.text("user", default=""),
                   pid=f.integer("pid", minimum=1, maximum=1 << 31, optional=True),
                   start=f.text("start", optional=True))


@dataclass(frozen=True)
class Usage:
    """What a set of allocations holds in one pool: memory (MB), CPU (units), instances,
    and how many of them are dedicated."""

    memory_mb: int = 0
    cpu_units: int = 0
    instances: int = 0
    dedicated: int = 0

    @property
    def cpu_percent(self) -> float:
        return cpu_percent(self.cpu_units)

    def plus(self, other: Usage) -> Usage:
        return Usage(self.memory_mb + other.memory_mb, self.cpu_units + other.cpu_units,
                     self.instances + other.instances, self.dedicated + other.dedicated)

    def minus(self, other: Usage) -> Usage:
        return Usage(self.memory_mb - other.memory_mb, self.cpu_units - other.cpu_units,
                     self.instances - other.instances, self.dedicated - other.dedicated)

    def to_list(self) -> list[int]:
        return [self.memory_mb, self.cpu_units, self.instances, self.dedicated]

    @classmethod
    def from_list(cls, value: Any, what: str = "usage") -> Usage:
        if (not isinstance(value, (list, tuple)) or len(value) != 4
                or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_MEMORY_MB
                           for v in value)):
            raise RecordError(f"{what} must be four whole numbers of zero or more, got {_short(value)}")
        return cls(*value)


@dataclass(frozen=True)
class Allocation:
    """A grant in the ledger. Times are Unix seconds (the ledger's clock: see the README).

    ``charges`` are the pool keys it counts against (see :mod:`netra_rm.core.accounting`),
    decided once when it was granted; ``slots`` the instance index it holds in each pool
    that hands out instances, and ``instances`` their names by pool. ``behind`` lists the
    waiters that were queued when it was granted (it went past them, so it counts against
    what they are entitled to until it is gone). ``lease_expires_at`` is set on a shared
    ledger when a process owns it: the holder renews it, and others reclaim the
    allocation once it lapses.
    """

    id: str
    layer: str | None
    category: str
    memory_mb: int
    cpu_units: int
    dedicated: bool
    requires: tuple[str, ...]
    created_at: float
    expires_at: float
    owner: Owner
    fencing_token: int = 0
    charges: tuple[str, ...] = ()
    slots: Mapping[str, int] = field(default_factory=dict)
    instances: Mapping[str, str] = field(default_factory=dict)
    pools: tuple[str, ...] = ()
    lease_expires_at: float | None = None
    priority: int = 0
    behind: tuple[str, ...] = ()
    request_id: str | None = None
    slot_key: str | None = None

    @property
    def cpu_percent(self) -> float:
        return cpu_percent(self.cpu_units)

    @classmethod
    def assembled(cls, fields: Mapping[str, Any]) -> Allocation:
        """The allocation with exactly these fields, every one of them given and already
        checked: what ``Allocation(**fields)`` makes, without the frozen class's
        field-by-field ``__init__`` (a one-step grant builds one at every allocate)."""
        allocation = object.__new__(cls)
        allocation.__dict__.update(fields)
        return allocation

    @property
    def slot(self) -> int:
        """The slot in its layer's pool (the first pool for an allocation without a layer)."""
        if self.slot_key is not None and self.slot_key in self.slots:
            return self.slots[self.slot_key]
        return next(iter(self.slots.values()), 0)

    @property
    def usage(self) -> Usage:
        """What this allocation holds in each pool it counts against."""
        return Usage(self.memory_mb, self.cpu_units, 1, 1 if self.dedicated else 0)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id, "layer": self.layer, "category": self.category, "memory_mb": self.memory_mb,
            "cpu_percent": self.cpu_percent, "dedicated": self.dedicated, "requires": list(self.requires),
            "created_at": self.created_at, "expires_at": self.expires_at, "slot": self.slot,
            "fencing_token": self.fencing_token, "owner": self.owner.to_dict(), "priority": self.priority,
            "charges": list(self.charges), "slots": dict(self.slots),
        }
        if self.slot_key is not None:
            data["slot_key"] = self.slot_key
        if self.instances:
            data["instances"] = dict(self.instances)
        if self.pools:
            data["pools"] = list(self.pools)
        if self.lease_expires_at is not None:
            data["lease_expires_at"] = self.lease_expires_at
        if self.behind:
            data["behind"] = list(self.behind)
        if self.request_id is not None:
            data["request_id"] = self.request_id
        return data

    @cached_property
    def json(self) -> str:
        """The compact JSON of :meth:`to_dict`, computed once (allocations never change)."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Any, what: str = "allocation") -> Allocation:
        """A checked record; :class:`RecordError` names what is wrong. Well-formed records
        (all of them, normally) take a fast path of plain type and range tests; anything
        it does not accept is checked field by field, to say which field is at fault."""
        fast = _fast_allocation(data)
        if fast is not None:
            return fast
        return cls._checked(data, what)

    @classmethod
    def _checked(cls, data: Any, what: str) -> Allocation:
        f = _Fields(data, what)
        ident = f.ident("id")
        what = f"allocation {ident}"
        f.what = what
        layer = f.text("layer", optional=True)
        slots_raw = f.mapping("slots")
        slots: dict[str, int] = {}
        for key, value in slots_raw.items():
            if not isinstance(key, str) or isinstance(value, bool) or not isinstance(value, int) \
                    or not 0 <= value < MAX_INSTANCES:
                raise f.fail("slots", f"holds {_short(key)}: {_short(value)}, not a pool key and an index")
            slots[key] = value
        instances_raw = f.mapping("instances")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in instances_raw.items()):
            raise f.fail("instances", "must map pool names to instance names")
        charges = f.strings("charges")
        slot_key = f.text("slot_key", optional=True)
        request_id = f.text("request_id", optional=True)
        if request_id is not None and not is_id(request_id):
            raise f.fail("request_id", f"must be an id, got {_short(request_id)}")
        return cls(
            id=ident, layer=layer, category=f.text("category", default=""),
            memory_mb=f.integer("memory_mb", maximum=MAX_MEMORY_MB),
            cpu_units=cpu_units(f.number("cpu_percent", maximum=MAX_CPU_PERCENT)),
            dedicated=f.boolean("dedicated"), requires=f.strings("requires"),
            created_at=f.number("created_at"), expires_at=f.number("expires_at"),
            owner=Owner.from_dict(data.get("owner"), f"{what}: owner"),
            fencing_token=f.integer("fencing_token", default=0), charges=charges, slots=slots,
            instances=dict(instances_raw), pools=f.strings("pools"),
            lease_expires_at=f.number("lease_expires_at", optional=True),
            priority=f.integer("priority", minimum=-MAX_PRIORITY, maximum=MAX_PRIORITY, default=0),
            behind=f.idents("behind"), request_id=request_id,
            slot_key=slot_key,
        )


@dataclass(frozen=True)
class Request:
    """A resolved request for one allocation: concrete amounts, in a layer and/or pools."""

    layer: str | None
    category: str
    memory_mb: int
    cpu_units: int
    dedicated: bool = False
    requires: tuple[str, ...] = ()
    duration_minutes: float = 30.0
    #: the shared or ad-hoc pools it also takes one instance of
    pools: tuple[str, ...] = ()
    priority: int = 0
    #: ad-hoc pools named with ``--pool NAME --instances N``: (name, N), not stored
    adhoc: tuple[tuple[str, int], ...] = field(default=(), compare=False)

    @property
    def cpu_percent(self) -> float:
        return cpu_percent(self.cpu_units)

    @property
    def usage(self) -> Usage:
        return Usage(self.memory_mb, self.cpu_units, 1, 1 if self.dedicated else 0)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "layer": self.layer, "category": self.category, "memory_mb": self.memory_mb,
            "cpu_percent": self.cpu_percent, "dedicated": self.dedicated, "requires": list(self.requires),
            "duration_minutes": self.duration_minutes, "priority": self.priority,
        }
        if self.pools:
            data["pools"] = list(self.pools)
        return data

    @classmethod
    def from_dict(cls, data: Any, what: str = "request") -> Request:
        f = _Fields(data, what)
        return cls(layer=f.text("layer", optional=True), category=f.text("category", default=""),
                   memory_mb=f.integer("memory_mb", maximum=MAX_MEMORY_MB),
                   cpu_units=cpu_units(f.number("cpu_percent", maximum=MAX_CPU_PERCENT)),
                   dedicated=f.boolean("dedicated"), requires=f.strings("requires"),
                   duration_minutes=f.number("duration_minutes", minimum=1e-9, maximum=MAX_TIME / 60, default=30.0),
                   pools=f.strings("pools"),
                   priority=f.integer("priority", minimum=-MAX_PRIORITY, maximum=MAX_PRIORITY, default=0))


@dataclass(frozen=True)
class Capacity:
    """How much one pool key may hold: memory (MB) and CPU (units) when it limits them,
    and instances. ``names`` lists named instances (index i is ``names[i]``), with
    ``properties`` per name; ``dedicated`` says whether the pool honours dedicated
    requests (layer pools do)."""

    instances: int
    memory_mb: int | None = None
    cpu_units: int | None = None
    names: tuple[str, ...] = ()
    properties: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    dedicated: bool = False

    @property
    def cpu_percent(self) -> float | None:
        return None if self.cpu_units is None else cpu_percent(self.cpu_units)

    def same_limits(self, other: Capacity) -> bool:
        """Do both say the same amounts and instance names (properties aside)?"""
        return (self.instances, self.memory_mb, self.cpu_units, tuple(self.names)) == (
            other.instances, other.memory_mb, other.cpu_units, tuple(other.names))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"instances": self.instances, "memory_mb": self.memory_mb,
                                "cpu_percent": self.cpu_percent}
        if self.names:
            data["names"] = list(self.names)
        if self.properties:
            data["properties"] = {k: dict(v) for k, v in self.properties.items()}
        if self.dedicated:
            data["dedicated"] = True
        return data

    @classmethod
    def from_dict(cls, data: Any, what: str = "capacity") -> Capacity:
        f = _Fields(data, what)
        cpu = f.number("cpu_percent", maximum=MAX_CPU_PERCENT, optional=True)
        names = f.strings("names")
        props_raw = f.mapping("properties")
        properties: dict[str, dict[str, str]] = {}
        for name, props in props_raw.items():
            if not isinstance(props, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                         for k, v in props.items()):
                raise f.fail("properties", f"of {_short(name)} must map names to text")
            properties[str(name)] = dict(props)
        instances = f.integer("instances", minimum=0, maximum=MAX_INSTANCES)
        if names and len(names) != instances:
            raise f.fail("names", f"lists {len(names)} names for {instances} instances")
        return cls(instances=instances, memory_mb=f.integer("memory_mb", maximum=MAX_MEMORY_MB, optional=True),
                   cpu_units=None if cpu is None else cpu_units(cpu), names=names, properties=properties,
                   dedicated=f.boolean("dedicated"))


@dataclass(frozen=True)
class PoolRecord:
    """A pool whose capacity the shared ledger holds (a global layer pool, a shared pool,
    an ad-hoc pool): what it may hold, whether it is draining, and where the figures
    came from (``config``: registered by the first host that used it; ``admin``: set
    with ``netra-rm pool set``)."""

    key: str
    capacity: Capacity
    drained: bool = False
    source: str = "config"
    registered_by: str = ""
    changed_at: float = 0.0
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "capacity": self.capacity.to_dict(), "drained": self.drained,
                "source": self.source, "registered_by": self.registered_by, "changed_at": self.changed_at,
                "description": self.description}

    @classmethod
    def from_dict(cls, data: Any, what: str = "pool") -> PoolRecord:
        f = _Fields(data, what)
        key = f.text("key")
        f.what = f"pool {key}"
        source = f.text("source", default="config")
        if source not in ("config", "admin"):
            raise f.fail("source", f"must be config or admin, got {_short(source)}")
        return cls(key=key, capacity=Capacity.from_dict(data.get("capacity"), f"pool {key}: capacity"),
                   drained=f.boolean("drained"), source=source, registered_by=f.text("registered_by", default=""),
                   changed_at=f.number("changed_at", default=0.0), description=f.text("description", default=""))


@dataclass(frozen=True)
class Waiter:
    """A request waiting in the queue.

    ``owner`` is the waiting process (the queue drops it when that process is gone).
    ``charges`` and ``capacity`` are the pool keys it needs and what each may hold as
    its own host sees it, so that any host can judge whether admitting something else
    would delay it. ``after`` is, per key, what was granted past it while it waited and
    is still held (see :mod:`netra_rm.core.queue`).
    """

    id: str
    request: Request
    owner: Owner
    since: float
    charges: tuple[str, ...] = ()
    capacity: Mapping[str, Capacity] = field(default_factory=dict)
    after: Mapping[str, Usage] = field(default_factory=dict)
    lease_expires_at: float | None = None
    fence: int = 0
    #: who will own the allocation, when not the waiting process itself (``run``'s child)
    holder: Owner | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, **self.request.to_dict(), "since": self.since, "fence": self.fence,
                                "owner": self.owner.to_dict(), "charges": list(self.charges),
                                "capacity": {k: c.to_dict() for k, c in self.capacity.items()},
                                "after": {k: u.to_list() for k, u in self.after.items() if u != Usage()}}
        if self.lease_expires_at is not None:
            data["lease_expires_at"] = self.lease_expires_at
        if self.holder is not None:
            data["holder"] = self.holder.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Any, what: str = "waiter") -> Waiter:
        f = _Fields(data, what)
        ident = f.ident("id")
        f.what = f"waiter {ident}"
        capacity = {str(k): Capacity.from_dict(v, f"waiter {ident}: capacity of {k}")
                    for k, v in f.mapping("capacity").items()}
        after = {str(k): Usage.from_list(v, f"waiter {ident}: after {k}") for k, v in f.mapping("after").items()}
        return cls(id=ident, request=Request.from_dict(data, f"waiter {ident}"),
                   owner=Owner.from_dict(data.get("owner"), f"waiter {ident}: owner"),
                   since=f.number("since", default=0.0), charges=f.strings("charges"), capacity=capacity,
                   after=after, lease_expires_at=f.number("lease_expires_at", optional=True),
                   fence=f.integer("fence", default=0),
                   holder=None if data.get("holder") is None else Owner.from_dict(data["holder"],
                                                                                   f"waiter {ident}: holder"))


def _num(value: Any, maximum: float) -> bool:
    t = type(value)
    return (t is float and 0.0 <= value <= maximum) or (t is int and 0 <= value <= maximum)


def _fast_allocation(d: Any) -> Allocation | None:
    """The allocation in ``d`` when every field is plainly right, else None (the careful
    path then says what is wrong)."""
    if type(d) is not dict:
        return None
    try:
        ident, layer, owner = d["id"], d.get("layer"), d["owner"]
        memory, cpu, created, expires = d["memory_mb"], d["cpu_percent"], d["created_at"], d["expires_at"]
        token, lease, priority = d.get("fencing_token", 0), d.get("lease_expires_at"), d.get("priority", 0)
        charges, slots, dedicated = d.get("charges", ()), d.get("slots", {}), d.get("dedicated", False)
        requires, pools, instances = d.get("requires", ()), d.get("pools", ()), d.get("instances", {})
        behind, request_id, slot_key = d.get("behind", ()), d.get("request_id"), d.get("slot_key")
        category = d.get("category", "")
        if not (type(ident) is str and ID_PATTERN.fullmatch(ident) and (layer is None or type(layer) is str)
                and type(category) is str and len(category) <= MAX_TEXT
                and type(memory) is int and 0 <= memory <= MAX_MEMORY_MB and _num(cpu, MAX_CPU_PERCENT)
                and _num(created, MAX_TIME) and _num(expires, MAX_TIME) and type(token) is int
                and 0 <= token <= MAX_TOKEN and (lease is None or _num(lease, MAX_TIME)) and type(priority) is int
                and -MAX_PRIORITY <= priority <= MAX_PRIORITY and type(dedicated) is bool
                and type(owner) is dict and type(owner.get("host")) is str and type(owner.get("user", "")) is str
                and type(charges) in (list, tuple) and all(type(k) is str for k in charges)
                and type(slots) is dict and all(type(k) is str and type(v) is int and 0 <= v < MAX_INSTANCES
                                                for k, v in slots.items())
                and type(requires) in (list, tuple) and all(type(r) is str for r in requires)
                and type(pools) in (list, tuple) and all(type(p) is str for p in pools)
                and type(instances) is dict and all(type(k) is str and type(v) is str for k, v in instances.items())
                and type(behind) in (list, tuple) and all(type(b) is str and ID_PATTERN.fullmatch(b) for b in behind)
                and (request_id is None or (type(request_id) is str and ID_PATTERN.fullmatch(request_id)))
                and (slot_key is None or type(slot_key) is str)):
            return None
        pid, start = owner.get("pid"), owner.get("start")
        if not ((pid is None or (type(pid) is int and 1 <= pid <= 1 << 31)) and (start is None or type(start) is str)
                and len(owner["host"]) <= MAX_TEXT):
            return None
    except (KeyError, TypeError, AttributeError):
        return None
    return Allocation(
        id=ident, layer=layer, category=category, memory_mb=memory, cpu_units=int(round(cpu * CPU_UNITS)),
        dedicated=dedicated, requires=tuple(requires), created_at=float(created), expires_at=float(expires),
        owner=Owner(owner["host"], owner.get("user", ""), pid, start), fencing_token=token, charges=tuple(charges),
        slots=slots, instances=instances, pools=tuple(pools),
        lease_expires_at=None if lease is None else float(lease), priority=priority, behind=tuple(behind),
        request_id=request_id, slot_key=slot_key)


def records_from(items: Any, parse: Callable[[Any], T], where: str) -> list[T]:
    """Parse a list of records with ``parse`` (``Allocation.from_dict``, ...); the first
    bad one raises :class:`RecordError` naming its position."""
    if not isinstance(items, (list, tuple)):
        raise RecordError(f"{where} must be a list")
    out = []
    for i, item in enumerate(items):
        try:
            out.append(parse(item))
        except RecordError as exc:
            raise RecordError(f"{where}, record {i + 1}: {exc}") from None
    return out


def allocations_from(items: Sequence[Any], where: str) -> list[Allocation]:
    """Parse a list of allocation records (see :func:`records_from`)."""
    return records_from(items, Allocation.from_dict, where)


def usage_by_key(allocations: Iterable[Allocation]) -> dict[str, Usage]:
    """What the allocations hold, per pool key: each counts against exactly its charges."""
    totals: dict[str, list[int]] = {}
    for a in allocations:
        dedicated = 1 if a.dedicated else 0
        for key in a.charges:
            t = totals.get(key)
            if t is None:
                totals[key] = [a.memory_mb, a.cpu_units, 1, dedicated]
            else:
                t[0] += a.memory_mb
                t[1] += a.cpu_units
                t[2] += 1
                t[3] += dedicated
    return {k: Usage(*v) for k, v in totals.items()}


def taken_slots(allocations: Iterable[Allocation]) -> dict[str, set[int]]:
    """Per key, the instance indices held."""
    taken: dict[str, set[int]] = {}
    for a in allocations:
        for key, index in a.slots.items():
            taken.setdefault(key, set()).add(index)
    return taken
