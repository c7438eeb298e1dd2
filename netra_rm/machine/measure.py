"""Measuring a command's whole process tree: its memory now and at its peak, and its CPU time.

Without a cgroup of its own, a command is measured by walking its process tree in
``/proc`` (``/proc/PID/task/TID/children``, so the cost grows with the tree, not with
the machine) and summing each process's resident memory and CPU time from
``/proc/PID/stat``. The sum of resident sets counts pages that processes share (a
forked worker's copy-on-write pages) once per process, so it can overstate; a process
that leaves the tree (a daemon that detaches) is no longer counted. When the command
ends, ``wait4``'s resource usage gives the exact CPU time of everything it waited for
and the largest resident set any single process of it reached, so a peak shorter than
the sampling interval is not missed for a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

#: Seconds between two samples of a running command's tree.
SAMPLE_INTERVAL = 0.25

_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / (1024 * 1024) if hasattr(os, "sysconf") else 4096 / (1024 * 1024)
_TICK = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01


@dataclass(frozen=True)
class TreeUsage:
    """A process tree at one moment: summed resident memory, CPU seconds so far (its
    processes' own and what they reaped), and how many processes."""

    memory_mb: float
    cpu_seconds: float
    processes: int


@dataclass(frozen=True)
class Measurement:
    """What a command used while it held its allocation."""

    peak_memory_mb: float
    cpu_seconds: float
    wall_seconds: float
    oom_killed: bool = False

    def to_event(self) -> dict[str, Any]:
        """The fields of the journal's release event (and ``history --json``)."""
        return {"peak_memory_mb": round(self.peak_memory_mb, 1), "cpu_seconds": round(self.cpu_seconds, 3),
                "wall_seconds": round(self.wall_seconds, 3), "oom_killed": self.oom_killed}


def _stat_fields(proc: str, pid: int) -> list[bytes] | None:
    """The fields of ``/proc/PID/stat`` after the command name (field 3 is index 0)."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2:].split()


def tree_pids(root: int, *, proc: str = "/proc") -> list[int]:
    """``root`` and all its descendants alive now (``root`` first); empty when it is gone."""
    if not os.path.exists(f"{proc}/{root}"):
        return []
    found = [root]
    i = 0
    while i < len(found):
        pid = found[i]
        i += 1
        try:
            tasks = os.listdir(f"{proc}/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"{proc}/{pid}/task/{tid}/children", "rb") as f:
                    found.extend(int(child) for child in f.read().split())
            except (OSError, ValueError):
                continue
    return found


def tree_usage(root: int, *, proc: str = "/proc") -> TreeUsage | None:
    """The tree of ``root`` now, or None when ``root`` is gone (or /proc is missing)."""
    memory_pages = 0
    ticks = 0
    count = 0
    for pid in tree_pids(root, proc=proc):
        fields = _stat_fields(proc, pid)
        if fields is None or len(fields) < 22:
            continue
        try:
            ticks += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
            memory_pages += int(fields[21])
        except ValueError:
            continue
        count += 1
    if count == 0:
        return None
    return TreeUsage(memory_mb=memory_pages * _PAGE_MB, cpu_seconds=ticks * _TICK, processes=count)


class TreeSampler:
    """Samples one command's tree and keeps its peak memory and latest CPU time."""

    def __init__(self, root: int, *, proc: str = "/proc") -> None:
        self.root = root
        self.proc = proc
        self.peak_mb = 0.0
        self.cpu_seconds = 0.0
        self.last: TreeUsage | None = None

    def sample(self) -> TreeUsage | None:
        usage = tree_usage(self.root, proc=self.proc)
        if usage is not None:
            self.last = usage
            self.peak_mb = max(self.peak_mb, usage.memory_mb)
            self.cpu_seconds = max(self.cpu_seconds, usage.cpu_seconds)
        return usage


def rusage_figures(rusage: Any) -> tuple[float, float]:
    """(largest resident set of one process in MB, CPU seconds) from ``wait4``'s usage."""
    if rusage is None:
        return 0.0, 0.0
    return rusage.ru_maxrss / 1024, rusage.ru_utime + rusage.ru_stime


class SessionSampler:
    """Measures this process and its descendants in a daemon thread (the pytest plugin's
    session): :meth:`stop` says what they used since :meth:`start`."""

    def __init__(self, pid: int, *, interval: float = SAMPLE_INTERVAL) -> None:
        import threading

        self.sampler = TreeSampler(pid)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="netra-rm-measure", daemon=True)
        self._started = 0.0
        self._cpu_before = 0.0

    def start(self) -> None:
        import time

        self._started = time.monotonic()
        self._cpu_before = _own_cpu_seconds()
        self._thread.start()

    def _run(self) -> None:
        while True:
            self.sampler.sample()
            if self._stop.wait(self.interval):
                return

    def stop(self) -> Measurement:
        import resource
        import time

        self._stop.set()
        self._thread.join(timeout=2.0)
        self.sampler.sample()
        largest = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
        return Measurement(peak_memory_mb=max(self.sampler.peak_mb, largest),
                           cpu_seconds=max(0.0, _own_cpu_seconds() - self._cpu_before),
                           wall_seconds=time.monotonic() - self._started)


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and the children it has waited for."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
