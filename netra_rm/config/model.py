"""The validated configuration as frozen values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from netra_rm.config.service import ServiceSpec

#: Pool scopes: ``host`` pools count the allocations of one machine (keyed by host);
#: ``global`` pools count every allocation in a shared ledger, across the fleet.
POOL_SCOPES = ("host", "global")


@dataclass(frozen=True)
class Pool:
    """A layer's capacity: memory in MB, CPU in percent of the machine, parallel instances.

    ``scope`` says whose allocations count against it: this host's (``host``, the
    default) or every host's sharing the ledger (``global``).
    """

    memory_mb: int
    cpu_percent: float
    instances: int
    scope: str = "host"
    #: named instances (``instances: [{name: db1, properties: {...}}, ...]``), in order
    names: tuple[str, ...] = ()
    properties: dict[str, dict[str, str]] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class SharedPool:
    """A named pool that layers draw from besides their own (configuration ``pools:``):
    e.g. two slots on a staging database, five licences, one hardware rig, counted on
    this host or, with ``scope: global``, across the fleet. An allocation takes one
    instance of it, and its memory and CPU when the pool limits them."""

    name: str
    instances: int
    scope: str = "host"
    memory_mb: int | None = None
    cpu_percent: float | None = None
    description: str = ""
    names: tuple[str, ...] = ()
    properties: dict[str, dict[str, str]] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Layer:
    """A test layer: the services it needs and the pool it draws from."""

    name: str
    services: tuple[str, ...]
    pool: Pool
    default_memory_mb: int
    default_cpu_percent: float
    description: str = ""
    #: shared pools (configuration ``pools:``) each allocation also takes an instance of
    uses: tuple[str, ...] = ()
    #: ``run`` confines its commands to their allocations, as with ``run --enforce``
    enforce: bool = False


@dataclass(frozen=True)
class Limits:
    """Caps on the sum of all active allocations across all layers.

    ``sources`` says, per cap, where the figure came from ("config" or the variable).
    """

    max_memory_mb: int
    max_cpu_percent: float
    max_parallel_instances: int
    sources: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class MachineSettings:
    check_memory: bool = True
    memory_reserve_mb: int = 256
    #: ``run`` measures its command's memory and CPU (``run --no-measure`` for one run)
    measure: bool = True


@dataclass(frozen=True)
class CategoryDefaults:
    """What a category of tests gets when its request does not say (configuration
    ``categories:``); None leaves it to the layer's default."""

    memory_mb: int | None = None
    cpu_percent: float | None = None
    duration_minutes: float | None = None
    priority: int | None = None
    description: str = ""


@dataclass(frozen=True)
class Categories:
    """The configured categories; with ``strict``, no other category is accepted."""

    defaults: dict[str, CategoryDefaults] = field(default_factory=dict)
    strict: bool = False

    def get(self, name: str) -> CategoryDefaults | None:
        """The defaults of category ``name``; a usage error for an unknown one when strict."""
        found = self.defaults.get(name)
        if found is None and self.strict:
            from netra_rm.errors import UnknownNameError

            known = ", ".join(self.defaults) or "(none configured)"
            raise UnknownNameError(f"unknown category {name!r}; known categories: {known}.",
                                   remediation=["Use one of them, or add it under categories: in the configuration "
                                                "(categories.strict: true accepts no other)."])
        return found


@dataclass(frozen=True)
class CheckSettings:
    connect_timeout: float = 1.0
    timeout: float = 2.0
    deadline: float = 5.0


@dataclass(frozen=True)
class Config:
    """Everything netra-rm was told: layers, services, limits and settings."""

    source: str
    layers: dict[str, Layer]
    services: dict[str, ServiceSpec]
    limits: Limits
    machine: MachineSettings
    checks: CheckSettings
    thresholds: dict[str, Any]
    default_duration_minutes: float
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    pools: dict[str, SharedPool] = field(default_factory=dict)
    #: on a shared ledger, how long an owned allocation lives without a heartbeat
    lease_seconds: float = 30.0
    #: a waiter's effective priority rises by one for every this many seconds it waits
    aging_seconds: float = 60.0
    categories: Categories = field(default_factory=Categories)

    def layer(self, name: str) -> Layer:
        """The layer called ``name``, or a usage error listing the valid layers."""
        try:
            return self.layers[name]
        except KeyError:
            from netra_rm.errors import UnknownNameError

            valid = ", ".join(self.layers) or "(none configured)"
            raise UnknownNameError(
                f"unknown layer {name!r}; valid layers: {valid}.",
                remediation=["Pick one of the layers above, or add the layer to your configuration "
                             "(netra-rm config show prints it)."],
            ) from None

    def service(self, name: str) -> ServiceSpec:
        """The service called ``name``, or a usage error listing the valid services."""
        try:
            return self.services[name]
        except KeyError:
            from netra_rm.errors import UnknownNameError

            valid = ", ".join(self.services) or "(none configured)"
            raise UnknownNameError(f"unknown service {name!r}; valid services: {valid}.") from None

    @property
    def dependencies(self) -> dict[str, tuple[str, ...]]:
        """The dependency graph: service name -> the services it depends on."""
        return {name: spec.depends_on for name, spec in self.services.items()}
