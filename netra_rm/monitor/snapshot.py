"""What the monitor shows at one tick, as plain data, and how to build it cheaply.

A :class:`MonitorSnapshot` is everything the live view and the NDJSON line need, so
neither touches psutil, the ledger or a service: the view is a pure function of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from netra_rm.errors import NetraRMError
from netra_rm.monitor.sampler import Sampler, SystemSample
from netra_rm.monitor.thresholds import Alert, AlertTracker, Level, Thresholds

__all__ = [
    "MonitorSnapshot",
    "SnapshotSource",
    "pool_utilisation",
    "snapshot_to_ndjson_dict",
]

#: The version of the NDJSON line's shape; bumped only on incompatible changes.
NDJSON_VERSION = 1


@dataclass(frozen=True)
class MonitorSnapshot:
    """One tick of the monitor.

    - ``pools``: per layer, ``layer``, ``max_memory_mb``, ``allocated_memory_mb``,
      ``max_cpu_percent``, ``allocated_cpu_percent``, ``max_parallel_instances``,
      ``active_instances``.
    - ``allocations``: ``id``, ``layer``, ``category``, ``memory_mb``, ``cpu_percent``,
      ``created_at`` and ``expires_at`` (unix seconds), ``owner`` (``host``, ``user``,
      ``pid``).
    - ``services``: ``name``, ``status``, ``latency_ms``, ``error``; the latest result of
      a check that runs on its own cadence, taken at ``services_checked_at`` (unix
      seconds; ``None`` before the first check finished). ``services_error`` says why the
      latest check failed, when it did (the services shown are then older).
    - ``alerts``: the debounced alerts; ``thresholds`` give the instantaneous levels.
    - ``ledger_error``: why the ledger could not be read at this tick (the pools and
      allocations shown are then the last ones read), else ``None``.
    """

    sample: SystemSample
    pools: Sequence[Mapping[str, Any]] = ()
    allocations: Sequence[Mapping[str, Any]] = ()
    services: Sequence[Mapping[str, Any]] = ()
    alerts: Sequence[Alert] = ()
    thresholds: Thresholds = field(default_factory=Thresholds)
    services_checked_at: float | None = None
    services_error: str | None = None
    ledger_error: str | None = None
    #: allocations of this host whose owner uses more memory than it reserved, a sentence each
    conflicts: Sequence[str] = ()

    @property
    def timestamp(self) -> float:
        """Unix seconds of the sample."""
        return self.sample.timestamp

    def levels(self) -> dict[str, Level]:
        """The instantaneous level of each thresholded metric."""
        return self.thresholds.levels(self.sample)


#: Returns ``(pools, allocations)`` as the ledger has them now.
LedgerState = Callable[[], tuple[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]]]


class SnapshotSource:
    """Builds one :class:`MonitorSnapshot` per call: a fresh sample, its alerts, and the
    pools and allocations that ``ledger_state`` returns (``(pools, allocations)``).

    A ledger that cannot be read at some tick (a Redis ledger's server restarting, say)
    does not end the monitor: the snapshot keeps the last pools and allocations read and
    says why in ``ledger_error``. Made for ``run_monitor(SnapshotSource(...), ...)``;
    services are folded in by the loop, which checks them on their own cadence.
    """

    def __init__(
        self,
        *,
        sampler: Sampler | None = None,
        thresholds: Thresholds | None = None,
        ledger_state: LedgerState | None = None,
    ) -> None:
        self.sampler = sampler if sampler is not None else Sampler()
        self.tracker = AlertTracker(thresholds)
        self._ledger_state = ledger_state
        self._pools: tuple[Mapping[str, Any], ...] = ()
        self._allocations: tuple[Mapping[str, Any], ...] = ()

    def __call__(self) -> MonitorSnapshot:
        sample = self.sampler.sample()
        alerts = self.tracker.observe(sample)
        ledger_error = None
        if self._ledger_state is not None:
            try:
                pools, allocations = self._ledger_state()
            except NetraRMError as exc:
                ledger_error = exc.message
            else:
                self._pools, self._allocations = tuple(pools), tuple(allocations)
        from netra_rm.machine.live import over_use

        return MonitorSnapshot(
            sample=sample,
            pools=self._pools,
            allocations=self._allocations,
            alerts=tuple(alerts),
            thresholds=self.tracker.thresholds,
            ledger_error=ledger_error,
            conflicts=tuple(over_use(self._allocations)),
        )


def _percent(used: float, limit: float) -> float:
    """``used`` as a percentage of ``limit``; a zero limit is full as soon as it is used."""
    if limit <= 0:
        return 0.0 if used <= 0 else 100.0
    return round(used / limit * 100.0, 1)


def _num(pool: Mapping[str, Any], key: str) -> float:
    value = pool.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def pool_utilisation(pool: Mapping[str, Any]) -> dict[str, Any]:
    """A pool's limits and usage, with ``*_used_percent`` for memory, CPU and instances."""
    max_mem, mem = _num(pool, "max_memory_mb"), _num(pool, "allocated_memory_mb")
    max_cpu, cpu = _num(pool, "max_cpu_percent"), _num(pool, "allocated_cpu_percent")
    max_inst, inst = _num(pool, "max_parallel_instances"), _num(pool, "active_instances")
    return {
        "layer": str(pool.get("layer", "?")),
        "max_memory_mb": _plain(max_mem),
        "allocated_memory_mb": _plain(mem),
        "memory_used_percent": _percent(mem, max_mem),
        "max_cpu_percent": _plain(max_cpu),
        "allocated_cpu_percent": _plain(cpu),
        "cpu_used_percent": _percent(cpu, max_cpu),
        "max_parallel_instances": int(max_inst),
        "active_instances": int(inst),
        "instances_used_percent": _percent(inst, max_inst),
    }


def _plain(value: float) -> int | float:
    """Whole numbers as ints, so ``1024.0`` prints and serialises as ``1024``."""
    return int(value) if value.is_integer() else value


def snapshot_to_ndjson_dict(snapshot: MonitorSnapshot) -> dict[str, Any]:
    """The JSON object printed per sample by ``netra-rm monitor --json`` (one per line).

    ``{"schema_version", "version", "timestamp", "system", "levels", "pools", "allocations", "services",
    "services_checked_at", "alerts", "conflicts", "ledger_error"}``: ``system`` is :meth:`SystemSample.to_dict`,
    ``levels`` the instantaneous level word of each thresholded metric, ``pools`` the
    :func:`pool_utilisation` of each layer, ``allocations`` the number of active
    allocations, ``alerts`` the debounced alerts.
    """
    return {
        "schema_version": NDJSON_VERSION,  # the envelope every --json output has
        "version": NDJSON_VERSION,
        "timestamp": round(snapshot.sample.timestamp, 3),
        "system": snapshot.sample.to_dict(),
        "levels": {metric: level.value for metric, level in snapshot.levels().items()},
        "pools": [pool_utilisation(pool) for pool in snapshot.pools],
        "allocations": len(snapshot.allocations),
        "services": [
            {
                "name": service.get("name"),
                "status": service.get("status", "unknown"),
                "latency_ms": service.get("latency_ms"),
                "error": service.get("error"),
            }
            for service in snapshot.services
        ],
        "services_checked_at": (
            None if snapshot.services_checked_at is None else round(snapshot.services_checked_at, 3)
        ),
        "alerts": [alert.to_dict() for alert in snapshot.alerts],
        "conflicts": list(snapshot.conflicts),
        "ledger_error": snapshot.ledger_error,
    }
