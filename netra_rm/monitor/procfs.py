"""Linux's counters read straight from ``/proc``: the sampler's fast path.

psutil reads the same files, one call per metric: ``/proc/meminfo`` twice (memory, then
swap), ``/proc/vmstat`` for swap figures the monitor never shows, and an ``access()``
per line of ``/proc/diskstats`` to tell whole disks from partitions. At one sample a
second that is most of what a monitor costs. :class:`ProcfsReader` reads each file once
per sample and remembers which device names are whole disks, with psutil's definitions:

- CPU: per-core ``(busy, total)`` seconds from the ``cpuN`` lines of ``/proc/stat``, guest
  time counted once (it is already inside user time), idle including iowait;
- memory: ``MemTotal``, ``MemAvailable`` (or free + buffers + cached on kernels that
  lack it), used = total - available; swap from ``SwapTotal``/``SwapFree``;
- disk: sectors read and written (512 bytes each) summed over the devices that have a
  ``/sys/block`` entry (disks, not their partitions);
- network: bytes sent and received summed over every interface in ``/proc/net/dev``;
- processes: the numeric entries of ``/proc``.

Tests compare it with psutil on the machine they run on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProcfsReader", "Reading"]

_SECTOR_BYTES = 512  # /proc/diskstats counts 512-byte sectors whatever the device's own size


@dataclass(frozen=True)
class Reading:
    """One read of the machine: cumulative counters (CPU, disk, network) and gauges."""

    cpu: tuple[tuple[float, float], ...]  # (busy, total) seconds per core
    memory: tuple[int, int, int, float]  # total, available, used bytes; percent used
    swap: tuple[int, int, float]  # total, used bytes; percent used
    load: tuple[float, float, float]
    disk: tuple[int, int] | None  # (read, written) bytes; None when no counters are visible
    net: tuple[int, int] | None  # (sent, received) bytes
    processes: int


class ProcfsReader:
    """Reads a :class:`Reading` from ``proc`` (``/proc``) and ``sys_block`` (``/sys/block``).

    Not thread-safe: one reader per sampler.
    """

    def __init__(self, *, proc: str | Path = "/proc", sys_block: str | Path = "/sys/block",
                 clock_ticks: int | None = None) -> None:
        self._tick = 1.0 / (clock_ticks or os.sysconf("SC_CLK_TCK"))  # /proc/stat counts these
        self._proc = os.fsencode(proc)
        self._stat = os.path.join(self._proc, b"stat")
        self._meminfo = os.path.join(self._proc, b"meminfo")
        self._diskstats = os.path.join(self._proc, b"diskstats")
        self._netdev = os.path.join(self._proc, b"net", b"dev")
        self._sys_block = os.fsencode(sys_block)
        self._whole_disk: dict[bytes, bool] = {}  # device name -> has a /sys/block entry

    @classmethod
    def works_here(cls, *, proc: str | Path = "/proc") -> bool:
        """Whether this machine has the files a reader needs (Linux with /proc mounted)."""
        return all(os.access(os.path.join(proc, name), os.R_OK) for name in ("stat", "meminfo"))

    def read(self) -> Reading:
        """Everything, once. Raises ``OSError`` when ``stat`` or ``meminfo`` cannot be read."""
        memory, swap = self._memory()
        return Reading(
            cpu=self._cpu(),
            memory=memory,
            swap=swap,
            load=self._load(),
            disk=self._disk(),
            net=self._net(),
            processes=sum(map(bytes.isdigit, os.listdir(self._proc))),
        )

    def _cpu(self) -> tuple[tuple[float, float], ...]:
        cores: list[tuple[float, float]] = []
        for line in _read(self._stat).splitlines():
            if not line.startswith(b"cpu"):
                if cores:
                    break  # the cpu lines come first, together
                continue
            if not line[3:4].isdigit():
                continue  # the "cpu" line of all cores together
            values = [int(x) for x in line.split()[1:]]
            total = sum(values)
            # user nice system idle iowait irq softirq steal guest guest_nice
            total -= sum(values[8:10])
            idle = sum(values[3:5])
            cores.append(((total - idle) * self._tick, total * self._tick))
        return tuple(cores)

    def _memory(self) -> tuple[tuple[int, int, int, float], tuple[int, int, float]]:
        raw = b"\n" + _read(self._meminfo)
        total = _kib_field(raw, b"\nMemTotal:")
        free = _kib_field(raw, b"\nMemFree:")
        available = _kib_field(raw, b"\nMemAvailable:")
        if available <= 0:  # kernels before 3.14: estimate as free(1) did
            available = free + sum(_kib_field(raw, key) for key in (b"\nBuffers:", b"\nCached:", b"\nSReclaimable:"))
        available = max(0, available if available <= total else free)
        used = total - available
        swap_total = _kib_field(raw, b"\nSwapTotal:")
        swap_used = max(0, swap_total - _kib_field(raw, b"\nSwapFree:"))
        return (total, available, used, _percent(used, total)), (swap_total, swap_used, _percent(swap_used, swap_total))

    def _load(self) -> tuple[float, float, float]:
        one, five, fifteen = os.getloadavg()
        return one, five, fifteen

    def _disk(self) -> tuple[int, int] | None:
        try:
            raw = _read(self._diskstats)
        except OSError:
            return None
        read = written = 0
        seen = False
        for line in raw.splitlines():
            parts = line.split()
            if len(parts) < 10:
                continue
            name = parts[2]
            whole = self._whole_disk.get(name)
            if whole is None:
                entry = os.path.join(self._sys_block, name.replace(b"/", b"!"))
                whole = self._whole_disk[name] = os.access(entry, os.F_OK)
            if whole:
                seen = True
                read += int(parts[5])
                written += int(parts[9])
        return (read * _SECTOR_BYTES, written * _SECTOR_BYTES) if seen else None

    def _net(self) -> tuple[int, int] | None:
        try:
            raw = _read(self._netdev)
        except OSError:
            return None
        sent = received = 0
        for line in raw.splitlines()[2:]:  # two header lines
            colon = line.rfind(b":")
            values = line[colon + 1:].split()
            if colon < 0 or len(values) < 9:
                continue
            received += int(values[0])
            sent += int(values[8])
        return sent, received


def _read(path: bytes) -> bytes:
    """A whole /proc file in one or two reads (they are generated on each read)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = [os.read(fd, 65536)]
        while chunks[-1]:
            chunks.append(os.read(fd, 65536))
    finally:
        os.close(fd)
    return b"".join(chunks)


def _kib_field(meminfo: bytes, key: bytes) -> int:
    """The bytes of ``key`` (``b"\\nMemTotal:"``) in ``/proc/meminfo``, given in kB; 0 if absent."""
    start = meminfo.find(key)
    if start < 0:
        return 0
    start += len(key)
    end = meminfo.find(b"\n", start)
    value = meminfo[start:end if end >= 0 else None].split()
    return int(value[0]) * 1024 if value and value[0].isdigit() else 0


def _percent(part: int, whole: int) -> float:
    return round(part / whole * 100.0, 1) if whole > 0 else 0.0
