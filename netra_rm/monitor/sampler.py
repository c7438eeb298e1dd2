"""System metrics, one cheap sample per call: the only place the monitor reads the machine.

A :class:`Sampler` keeps the previous cumulative counters (CPU times, disk and network
bytes) and turns their change over ``time.monotonic()`` into percentages and rates, so
each :class:`SystemSample` describes the interval since the previous call. On Linux it
reads four ``/proc`` files once each per call and lists ``/proc``
(:class:`netra_rm.procfs.ProcfsReader`, with psutil's definitions); elsewhere it asks
psutil. A test (or a program with figures of its own) passes a ``source`` shaped like the
``psutil`` module, and the Sampler reads that instead.
It never walks the process table (the process count is the number of process ids), so a
sample a second costs a few hundred microseconds of CPU.

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

from netra_rm.procfs import ProcfsReader, Reading

__all__ = ["MetricsSource", "Sampler", "SystemSample"]

_IS_LINUX = sys.platform.startswith("linux")


class MetricsSource(Protocol):
    """The part of the ``psutil`` module a :class:`Sampler` uses; tests pass a fake."""

    def cpu_times(self, percpu: bool = ...) -> Any: ...

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


class Sampler:
    """Produces one :class:`SystemSample` per :meth:`sample` call (not thread-safe).

    On Linux it reads ``/proc`` itself (:class:`~netra_rm.procfs.ProcfsReader`, psutil's
    definitions at a third of the cost); elsewhere it asks psutil. ``source`` stands in for
    the ``psutil`` module (a test injecting figures, say), and ``clock``/``monotonic`` for
    ``time.time``/``time.monotonic``.
    """

    def __init__(
        self,
        *,
        source: MetricsSource | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read: Callable[[], Reading] = _reader(source)
        self._clock = clock
        self._monotonic = monotonic
        self._last = self._read()  # primes the first sample's CPU
        self._last_at = self._monotonic()
        self._first = True

    def sample(self) -> SystemSample:
        """Read the system now; rates cover the time since the previous call."""
        reading = self._read()
        at = self._monotonic()
        previous, self._last = self._last, reading
        elapsed, self._last_at = at - self._last_at, at
        first, self._first = self._first, False

        per_core, total = _cpu_percents(previous.cpu, reading.cpu)
        cores = len(per_core) or 1
        load = reading.load
        disk_r = disk_w = net_s = net_r = None
        if not first and elapsed > 0:
            disk_r, disk_w = _rates(previous.disk, reading.disk, elapsed)
            net_s, net_r = _rates(previous.net, reading.net, elapsed)
        mem_total, mem_available, mem_used, mem_percent = reading.memory
        swap_total, swap_used, swap_percent = reading.swap
        return SystemSample(
            timestamp=self._clock(),
            cpu_percent=total,
            cpu_percent_per_core=per_core,
            memory_total=mem_total,
            memory_available=mem_available,
            memory_used=mem_used,
            memory_percent=mem_percent,
            swap_total=swap_total,
            swap_used=swap_used,
            swap_percent=swap_percent,
            load_average=load,
            load_per_core=(load[0] / cores, load[1] / cores, load[2] / cores),
            disk_read_bytes_per_second=disk_r,
            disk_write_bytes_per_second=disk_w,
            net_sent_bytes_per_second=net_s,
            net_recv_bytes_per_second=net_r,
            process_count=reading.processes,
            interval_seconds=None if first else elapsed,
        )


def _reader(source: MetricsSource | None) -> Callable[[], Reading]:
    """How to read the machine: ``source`` when given, else ``/proc`` where it works, else
    psutil (both give CPU seconds and bytes, so the Sampler treats them alike)."""
    if source is not None:
        return lambda: read_psutil(source)
    if _IS_LINUX and ProcfsReader.works_here():
        return ProcfsReader().read
    return lambda: read_psutil(psutil)


def read_psutil(ps: Any) -> Reading:
    """A :class:`Reading` through psutil's functions (or anything shaped like them)."""
    mem = ps.virtual_memory()
    swap = ps.swap_memory()
    load = tuple(float(x) for x in ps.getloadavg())
    disk_io = ps.disk_io_counters()
    net_io = ps.net_io_counters()
    return Reading(
        cpu=tuple(_busy_total(t) for t in ps.cpu_times(percpu=True)),
        memory=(int(mem.total), int(mem.available), int(mem.used), float(mem.percent)),
        swap=(int(swap.total), int(swap.used), float(swap.percent)),
        load=(load[0], load[1], load[2]),
        disk=None if disk_io is None else (int(disk_io.read_bytes), int(disk_io.write_bytes)),
        net=None if net_io is None else (int(net_io.bytes_sent), int(net_io.bytes_recv)),
        processes=len(ps.pids()),
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
