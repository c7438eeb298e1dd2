"""``netra-rm status --format openmetrics``: pools, allocations, waiters, services and the
machine as OpenMetrics text, for Prometheus scrapes and node_exporter's textfile collector.

Every family is a gauge and names carry their unit in base units (bytes, seconds, ratios
of 1), so the same text parses as OpenMetrics and as the classic Prometheus text format
that the textfile collector reads. Nothing here decides anything; it only formats the
dicts ``status`` already built (``Engine.resource_status`` and the service summary).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, get_args

from netra_rm.services.result import Status

PREFIX = "netra_rm_"
MIB = 1024 * 1024
#: Every status a service can have, each a sample of ``netra_rm_service_status``.
SERVICE_STATUSES: tuple[str, ...] = get_args(Status)

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Family:
    """One gauge family: its name (without the prefix), help, unit and samples."""

    name: str
    help: str
    unit: str = ""
    samples: tuple[tuple[Labels, float], ...] = ()

    def lines(self) -> list[str]:
        full = PREFIX + self.name
        out = [f"# TYPE {full} gauge"]
        if self.unit:
            out.append(f"# UNIT {full} {self.unit}")
        out.append(f"# HELP {full} {_escape_help(self.help)}")
        for labels, value in self.samples:
            out.append(f"{full}{_labels(labels)} {_number(value)}")
        return out


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape_label(str(value))}"' for key, value in labels) + "}"


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _family(name: str, help: str, samples: Iterable[tuple[Labels, float | None]], unit: str = "") -> Family:
    """A family, dropping samples whose value is unknown (None)."""
    kept = tuple((labels, value) for labels, value in samples if value is not None)
    return Family(name=name, help=help, unit=unit, samples=kept)


def _ratio(percent: Any) -> float | None:
    return None if percent is None else float(percent) / 100.0


def _bytes(mb: Any) -> float | None:
    return None if mb is None else float(mb) * MIB


def pool_families(pools: Mapping[str, Mapping[str, Any]]) -> list[Family]:
    """Capacity, allocated and available per layer, for memory, CPU and instances."""
    def per_layer(key: str, convert: Any = lambda v: v) -> list[tuple[Labels, float | None]]:
        return [((("layer", name),), convert(pool.get(key))) for name, pool in pools.items()]

    return [
        _family("pool_memory_capacity_bytes", "Memory the layer's pool may hand out.",
                per_layer("max_memory_mb", _bytes), "bytes"),
        _family("pool_memory_allocated_bytes", "Memory held by the layer's active allocations.",
                per_layer("allocated_memory_mb", _bytes), "bytes"),
        _family("pool_memory_available_bytes", "Memory the layer's pool has left.",
                per_layer("available_memory_mb", _bytes), "bytes"),
        _family("pool_cpu_capacity_ratio", "CPU the layer's pool may hand out, as a share of the machine.",
                per_layer("max_cpu_percent", _ratio), "ratio"),
        _family("pool_cpu_allocated_ratio", "CPU held by the layer's active allocations, as a share of the "
                "machine.", per_layer("allocated_cpu_percent", _ratio), "ratio"),
        _family("pool_cpu_available_ratio", "CPU the layer's pool has left, as a share of the machine.",
                per_layer("available_cpu_percent", _ratio), "ratio"),
        _family("pool_instances_capacity", "Parallel instances the layer's pool allows.",
                per_layer("max_parallel_instances")),
        _family("pool_instances_active", "Active allocations (instances) in the layer's pool.",
                per_layer("active_instances")),
        _family("pool_instances_available", "Instances the layer's pool has left (0 while a dedicated "
                "allocation holds it).", per_layer("available_instances")),
        _family("pool_dedicated", "1 while a dedicated allocation holds the layer's whole pool.",
                per_layer("dedicated", lambda v: 1 if v else 0)),
    ]


def limit_families(limits: Mapping[str, Any]) -> list[Family]:
    """The global caps on the sum of all allocations, and what is held against them."""
    none: Labels = ()
    return [
        _family("limit_memory_capacity_bytes", "Global cap on memory across all layers.",
                [(none, _bytes(limits.get("max_memory_mb")))], "bytes"),
        _family("limit_memory_allocated_bytes", "Memory held by all active allocations.",
                [(none, _bytes(limits.get("allocated_memory_mb")))], "bytes"),
        _family("limit_cpu_capacity_ratio", "Global cap on CPU across all layers, as a share of the machine.",
                [(none, _ratio(limits.get("max_cpu_percent")))], "ratio"),
        _family("limit_cpu_allocated_ratio", "CPU held by all active allocations, as a share of the machine.",
                [(none, _ratio(limits.get("allocated_cpu_percent")))], "ratio"),
        _family("limit_instances_capacity", "Global cap on parallel instances across all layers.",
                [(none, limits.get("max_parallel_instances"))]),
        _family("limit_instances_active", "Active allocations across all layers.",
                [(none, limits.get("active_instances"))]),
    ]


def _allocation_labels(allocation: Mapping[str, Any]) -> Labels:
    return (("id", str(allocation.get("id"))), ("layer", str(allocation.get("layer"))),
            ("category", str(allocation.get("category"))))


def allocation_families(layers: Sequence[str], allocations: Sequence[Mapping[str, Any]],
                        waiters: Sequence[Mapping[str, Any]], now: float) -> list[Family]:
    """Allocations by layer and category, the oldest one's age, and the wait queue."""
    counts: dict[tuple[str, str], int] = {}
    oldest: dict[str, float] = {}
    for a in allocations:
        key = (str(a.get("layer")), str(a.get("category")))
        counts[key] = counts.get(key, 0) + 1
        age = a.get("age_seconds")
        if age is not None:
            oldest[key[0]] = max(oldest.get(key[0], 0.0), float(age))
    waiting: dict[str, int] = {name: 0 for name in layers}
    longest: dict[str, float] = {}
    for w in waiters:
        name = str(w.get("layer", "?"))
        waiting[name] = waiting.get(name, 0) + 1
        since = w.get("since")
        if isinstance(since, (int, float)):
            longest[name] = max(longest.get(name, 0.0), max(0.0, now - since))
    return [
        _family("allocations", "Active allocations by layer and category.",
                [((("layer", layer), ("category", category)), n) for (layer, category), n in sorted(counts.items())]),
        _family("allocation_oldest_age_seconds", "Age of the layer's oldest active allocation.",
                [((("layer", layer),), age) for layer, age in sorted(oldest.items())], "seconds"),
        _family("allocation_memory_reserved_bytes", "Memory an allocation reserved.",
                [(_allocation_labels(a), _bytes(a.get("memory_mb"))) for a in allocations], "bytes"),
        _family("allocation_memory_used_bytes", "Memory the owner of an allocation on this host uses now (its whole "
                "process tree).", [(_allocation_labels(a), _bytes(a.get("used_memory_mb"))) for a in allocations],
                "bytes"),
        _family("waiters", "Requests waiting in the queue for room in the layer's pool.",
                [((("layer", layer),), n) for layer, n in waiting.items()]),
        _family("waiter_longest_wait_seconds", "How long the layer's longest waiting request has waited.",
                [((("layer", layer),), s) for layer, s in sorted(longest.items())], "seconds"),
    ]


def service_families(services: Mapping[str, Mapping[str, Any]]) -> list[Family]:
    """Up/down, status and check latency per service."""
    up, status, latency = [], [], []
    for name, s in services.items():
        current = str(s.get("status", "unknown"))
        up.append(((("service", name), ("kind", str(s.get("kind") or "unknown"))), 1 if current == "healthy" else 0))
        for state in SERVICE_STATUSES:
            status.append(((("service", name), ("status", state)), 1 if state == current else 0))
        ms = s.get("latency_ms")
        latency.append(((("service", name),), None if ms is None else float(ms) / 1000.0))
    return [
        _family("service_up", "1 when the service's check passed, else 0.", up),
        _family("service_status", "1 for the service's current status (healthy, unhealthy, blocked, unknown).",
                status),
        _family("service_check_latency_seconds", "How long the service's last check took.", latency, "seconds"),
    ]


def discovery_families(discovery: Mapping[str, Any] | None) -> list[Family]:
    """Compose discovery's warnings (an unreadable compose file, an ambiguous match), when it is on."""
    if discovery is None:
        return []
    source = str(discovery.get("source") or "none")
    return [_family("discovery_warnings", "Warnings of Compose discovery (an unreadable compose project, an "
                    "ambiguous match); the services then keep their configured addresses.",
                    [((("source", source),), len(discovery.get("warnings") or []))])]


def system_families(metrics: Mapping[str, Any]) -> list[Family]:
    """The machine as the sampler saw it during ``status``."""
    cpu = metrics.get("cpu") or {}
    memory = metrics.get("memory") or {}
    swap = metrics.get("swap") or {}
    load = (metrics.get("load") or {}).get("average") or []
    capacity = metrics.get("capacity") or {}
    none: Labels = ()
    total = memory.get("total_bytes")
    available = memory.get("available_bytes")
    if total is None and capacity.get("memory_total_mb") is not None:
        total = _bytes(capacity["memory_total_mb"])
    if available is None and capacity.get("memory_available_mb") is not None:
        available = _bytes(capacity["memory_available_mb"])
    families = [
        _family("system_cpus", "CPUs netra-rm counts for this machine (cgroup limits applied).",
                [(none, capacity.get("cpu_count", cpu.get("count")))]),
        _family("system_cpu_usage_ratio", "Share of the machine's CPU in use.", [(none, _ratio(cpu.get("percent")))],
                "ratio"),
        _family("system_memory_total_bytes", "The machine's memory.", [(none, total)], "bytes"),
        _family("system_memory_available_bytes", "Memory available for new work.", [(none, available)], "bytes"),
        _family("system_memory_usage_ratio", "Share of the machine's memory in use.",
                [(none, _ratio(memory.get("percent")))], "ratio"),
        _family("system_swap_usage_ratio", "Share of swap in use.", [(none, _ratio(swap.get("percent")))], "ratio"),
        _family("system_processes", "Processes running on the machine.", [(none, metrics.get("processes"))]),
    ]
    for minutes, value in zip((1, 5, 15), load):
        families.append(_family(f"system_load{minutes}", f"Load average over {minutes} minute"
                                f"{'' if minutes == 1 else 's'}.", [(none, value)]))
    return families


def render_openmetrics(resources: Mapping[str, Any], services: Mapping[str, Any], *, now: float,
                       version: str) -> str:
    """The whole ``status`` report as OpenMetrics text, ending with ``# EOF``."""
    pools = resources.get("resource_pools") or {}
    families: list[Family] = [
        _family("build_info", "The netra-rm that wrote this report (always 1).", [((("version", version),), 1)]),
        _family("report_timestamp_seconds", "When this report was made (Unix time); a stale file shows here.",
                [((), round(now, 3))], "seconds"),
        *pool_families(pools),
        *limit_families(resources.get("global_limits") or {}),
        *allocation_families(list(pools), resources.get("active_allocations") or [],
                             resources.get("waiters") or [], now),
        *service_families(services.get("services") or {}),
        *system_families(resources.get("system_metrics") or {}),
        _family("conflicts", "Problems `netra-rm status` lists under Conflicts.",
                [((), len(resources.get("conflicts") or []))]),
        *discovery_families(services.get("discovery")),
    ]
    # a family with no samples (no allocations yet) still names itself, so dashboards and
    # `promtool check metrics` see every metric netra-rm can report
    lines = [line for family in families for line in family.lines()]
    return "\n".join(lines) + "\n# EOF\n"
