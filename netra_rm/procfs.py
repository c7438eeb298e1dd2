"""Everything netra-rm reads from Linux's ``/proc``, parsed in one place.

- :class:`ProcfsReader`: the machine's counters, the monitor's sampler's fast path;
- :func:`process_stat`: one process's state, process group and start time
  (``/proc/PID/stat``), for liveness (is the owner of an allocation still the same
  process?) and for ``down`` (is anything left of a process group?);
- :func:`resident_pages` (``/proc/PID/statm``) and :func:`meminfo` (``/proc/meminfo``),
  for an owner's memory and the machine's capacity.

Elsewhere (no ``/proc``) callers ask psutil; nothing here imports it. The values are
named tuples, not dataclasses: liveness imports this module on every ``allocate`` and
``release``, and a named tuple costs a fifth of a dataclass to define.

The machine's counters: psutil reads the same files, one call per metric: ``/proc/meminfo`` twice (memory, then
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
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

__all__ = ["ProcessStat", "ProcfsReader", "Reading", "meminfo", "process_ids", "process_stat", "read_file",
           "resident_pages"]

#: Where the proc filesystem is mounted; the functions take another root for tests.
PROC = "/proc"
#: Whether this host has one (Linux); elsewhere callers ask psutil.
HAS_PROC = os.path.isdir(PROC)

_SECTOR_BYTES = 512  # /proc/diskstats counts 512-byte sectors whatever the device's own size


class Reading(NamedTuple):
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
        for line in read_file(self._stat).splitlines():
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
        raw = b"\n" + read_file(self._meminfo)
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
            raw = read_file(self._diskstats)
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
            raw = read_file(self._netdev)
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


def read_file(path: str | bytes) -> bytes:
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


# -- one process ------------------------------------------------------------------------------


class ProcessStat(NamedTuple):
    """What ``/proc/PID/stat`` says about a process: its state letter (``Z`` for a zombie),
    its process group and its start time in clock ticks since boot (with the pid, it
    names the process: a reused pid starts later)."""

    state: str
    process_group: int
    start_ticks: int

    @property
    def zombie(self) -> bool:
        return self.state == "Z"


def process_stat(pid: int | str, *, proc: str = PROC) -> ProcessStat | None:
    """``/proc/PID/stat`` of ``pid``, or None when there is no such process.

    Raises ``OSError`` when it cannot be read (no ``/proc`` here) and ``ValueError`` or
    ``IndexError`` when it is not what Linux writes.
    """
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = data[data.rfind(b")") + 2:].split()
    return ProcessStat(state=fields[0].decode(), process_group=int(fields[2]), start_ticks=int(fields[19]))


def process_ids(*, proc: str = PROC) -> Iterator[str]:
    """The ids of the processes alive now (the numeric entries of ``/proc``), as text."""
    for entry in os.scandir(proc):
        if entry.name.isdigit():
            yield entry.name


def resident_pages(pid: int, *, proc: str = PROC) -> int:
    """Resident memory of ``pid`` in pages (``/proc/PID/statm``); raises ``OSError``,
    ``ValueError`` or ``IndexError`` when it cannot be read."""
    with open(f"{proc}/{pid}/statm", "rb") as f:
        return int(f.read().split()[1])


def meminfo(keys: Iterable[str], *, proc: str = PROC) -> dict[str, int]:
    """The named lines of ``/proc/meminfo`` (``MemTotal``, ``MemAvailable``) in bytes;
    a key the kernel does not write is left out. Raises ``OSError`` when it cannot be read."""
    raw = b"\n" + read_file(os.path.join(proc, "meminfo"))
    found: dict[str, int] = {}
    for key in keys:
        if f"\n{key}:".encode() in raw:
            found[key] = _kib_field(raw, f"\n{key}:".encode())
    return found
