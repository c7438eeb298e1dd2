"""System metrics, one cheap sample per call: the only place the monitor touches psutil.

A :class:`Sampler` keeps the previous cumulative counters (CPU times, disk and network
bytes) and turns their change over ``time.monotonic()`` into percentages and rates, so
each :class:`SystemSample` describes the interval since the previous call. It reads a
handful of ``/proc`` files per call and never walks the process table (the process count
is ``len(psutil.pids())``), so sampling every second costs well under 1% of a core.

CPU percentages come from the Sampler's own ``cpu_times`` deltas rather than from
``psutil.cpu_percent(None)``, whose "since the last call" state is global to the process:
two samplers (the agent's background thread and a monitor view, say) would otherwise
steal each other's intervals. The constructor reads the counters once (the priming that
``cpu_percent(None)`` needs), so the first sample already covers the time since the
Sampler was made; the first sample's disk and network rates are ``None`` because a rate
needs two readings.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import psutil

__all__ = ["MetricsSource", "Sampler", "SystemSample"]

_IS_LINUX = sys.platform.startswith("linux")


class MetricsSource(Protocol):
    """The part of the ``psutil`` module a :class:`Sampler` uses; tests pass a fake."""

    def cpu_times(self, percpu: bool = ...) -> Any: ...

    def cpu_count(self, logical: bool = ...) -> int | None: ...

    def virtual_memory(self) -> Any: ...

    def swap_memory(self) -> Any: ...

    def getloadavg(self) -> tuple[float, float, float]: ...

    def disk_io_counters(self) -> Any: ...

    def net_io_counters(self) -> Any: ...

    def pids(self) -> list[int]: ...


@dataclass(frozen=True)
class SystemSample:
    """The machine at one instant, with rates over the interval since the previous sample.

    Byte counts are bytes; percentages are 0 to 100. ``interval_seconds`` and the four rates
    are ``None`` on a Sampler's first sample (no previous counters), and a rate is also
    ``None`` when the platform has no such counter (no block devices visible, say).
    """

    timestamp: float  # unix seconds
    cpu_percent: float
    cpu_percent_per_core: tuple[float, ...]
    memory_total: int
    memory_available: int
    memory_used: int
    memory_percent: float
    swap_total: int
    swap_used: int
    swap_percent: float
    load_average: tuple[float, float, float]  # 1, 5 and 15 minutes
    load_per_core: tuple[float, float, float]  # load_average / logical cores
    disk_read_bytes_per_second: float | None
    disk_write_bytes_per_second: float | None
    net_sent_bytes_per_second: float | None
    net_recv_bytes_per_second: float | None
    process_count: int
    interval_seconds: float | None = None  # monotonic time since the previous sample

    @property
    def cpu_count(self) -> int:
        """Logical cores seen in this sample."""
        return len(self.cpu_percent_per_core)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the ``system`` object of the monitor's NDJSON lines)."""
        return {
            "timestamp": round(self.timestamp, 3),
            "interval_seconds": _round(self.interval_seconds, 3),
            "cpu": {
                "percent": self.cpu_percent,
                "per_core": list(self.cpu_percent_per_core),
                "count": self.cpu_count,
            },
            "memory": {
                "total_bytes": self.memory_total,
                "available_bytes": self.memory_available,
                "used_bytes": self.memory_used,
                "percent": self.memory_percent,
            },
            "swap": {
                "total_bytes": self.swap_total,
                "used_bytes": self.swap_used,
                "percent": self.swap_percent,
            },
            "load": {
                "average": [round(x, 2) for x in self.load_average],
                "per_core": [round(x, 3) for x in self.load_per_core],
            },
            "disk": {
                "read_bytes_per_second": _round(self.disk_read_bytes_per_second, 1),
                "write_bytes_per_second": _round(self.disk_write_bytes_per_second, 1),
            },
            "network": {
                "sent_bytes_per_second": _round(self.net_sent_bytes_per_second, 1),
                "recv_bytes_per_second": _round(self.net_recv_bytes_per_second, 1),
            },
            "processes": self.process_count,
        }


@dataclass(frozen=True)
class _Counters:
    """The cumulative readings a rate is computed from."""

    at: float  # monotonic seconds
    cpu: tuple[tuple[float, float], ...]  # (busy, total) seconds per core
    disk: tuple[int, int] | None  # (read, write) bytes
    net: tuple[int, int] | None  # (sent, received) bytes


class Sampler:
    """Produces one :class:`SystemSample` per :meth:`sample` call (not thread-safe).

    ``source`` stands in for the ``psutil`` module and ``clock``/``monotonic`` for
    ``time.time``/``time.monotonic``; they exist for tests.
    """

    def __init__(
        self,
        *,
        source: MetricsSource | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ps: Any = source if source is not None else psutil
        self._clock = clock
        self._monotonic = monotonic
        self._cpu_count = max(1, int(self._ps.cpu_count(logical=True) or 1))
        self._last: _Counters = self._read_counters()  # primes the first sample's CPU
        self._first = True

    def sample(self) -> SystemSample:
        """Read the system now; rates cover the time since the previous call."""
        counters = self._read_counters()
        previous, self._last = self._last, counters
        first, self._first = self._first, False
        elapsed = counters.at - previous.at

        per_core, total = _cpu_percents(previous.cpu, counters.cpu)
        cores = len(per_core) or self._cpu_count
        mem = self._ps.virtual_memory()
        swap = self._ps.swap_memory()
        load = tuple(float(x) for x in self._ps.getloadavg())
        load3 = (load[0], load[1], load[2])

        disk_r = disk_w = net_s = net_r = None
        if not first and elapsed > 0:
            disk_r, disk_w = _rates(previous.disk, counters.disk, elapsed)
            net_s, net_r = _rates(previous.net, counters.net, elapsed)

        return SystemSample(
            timestamp=self._clock(),
            cpu_percent=total,
            cpu_percent_per_core=per_core,
            memory_total=int(mem.total),
            memory_available=int(mem.available),
            memory_used=int(mem.used),
            memory_percent=float(mem.percent),
            swap_total=int(swap.total),
            swap_used=int(swap.used),
            swap_percent=float(swap.percent),
            load_average=load3,
            load_per_core=(load3[0] / cores, load3[1] / cores, load3[2] / cores),
            disk_read_bytes_per_second=disk_r,
            disk_write_bytes_per_second=disk_w,
            net_sent_bytes_per_second=net_s,
            net_recv_bytes_per_second=net_r,
            process_count=len(self._ps.pids()),
            interval_seconds=None if first else elapsed,
        )

    def _read_counters(self) -> _Counters:
        cpu = tuple(_busy_total(t) for t in self._ps.cpu_times(percpu=True))
        disk_io = self._ps.disk_io_counters()
        net_io = self._ps.net_io_counters()
        return _Counters(
            at=self._monotonic(),
            cpu=cpu,
            disk=None if disk_io is None else (int(disk_io.read_bytes), int(disk_io.write_bytes)),
            net=None if net_io is None else (int(net_io.bytes_sent), int(net_io.bytes_recv)),
        )


def _busy_total(times: Any) -> tuple[float, float]:
    """(busy, total) CPU seconds of one core, counted as ``psutil.cpu_percent`` does."""
    total = float(sum(times))
    if _IS_LINUX:  # guest time is already included in user time
        total -= float(getattr(times, "guest", 0.0)) + float(getattr(times, "guest_nice", 0.0))
    idle = float(times.idle) + float(getattr(times, "iowait", 0.0))
    return total - idle, total


def _cpu_percents(
    before: Sequence[tuple[float, float]], after: Sequence[tuple[float, float]]
) -> tuple[tuple[float, ...], float]:
    """Per-core and total busy percentages between two readings of per-core CPU times."""
    if len(before) != len(after):  # a core came or went: no interval to speak of
        return tuple(0.0 for _ in after), 0.0
    per_core: list[float] = []
    busy_sum = total_sum = 0.0
    for (busy0, total0), (busy1, total1) in zip(before, after):
        busy, total = busy1 - busy0, total1 - total0
        per_core.append(_percent(busy, total))
        busy_sum += max(0.0, busy)
        total_sum += max(0.0, total)
    return tuple(per_core), _percent(busy_sum, total_sum)


def _percent(part: float, whole: float) -> float:
    if whole <= 0:
        return 0.0
    return round(min(100.0, max(0.0, part / whole * 100.0)), 1)


def _rates(
    before: tuple[int, int] | None, after: tuple[int, int] | None, elapsed: float
) -> tuple[float | None, float | None]:
    """Bytes per second for a pair of cumulative counters; a counter that went back is 0."""
    if before is None or after is None:
        return None, None
    return (
        max(0, after[0] - before[0]) / elapsed,
        max(0, after[1] - before[1]) / elapsed,
    )


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
