"""The last resort: a watchdog that kills the command's tree when its memory passes the limit.

Where no cgroup can be had, ``run`` samples the command's process tree (see
:mod:`netra_rm.machine.measure`) every :data:`WATCH_INTERVAL` seconds and, once the summed
resident memory is above the allocation, sends SIGKILL to every process of the tree. It
limits memory only, and only as fast as it samples: a command can go past the limit by
what it allocates in one interval. CPU is not limited.
"""

from __future__ import annotations

import os
import signal

from netra_rm.machine.base import Confinement, Limits, Mechanism, Used
from netra_rm.machine.measure import TreeUsage, tree_pids

#: Seconds between two looks at the command's memory.
WATCH_INTERVAL = 0.1


class Watchdog(Mechanism):
    name = "watchdog"

    def __init__(self, *, proc: str = "/proc") -> None:
        self.proc = proc

    def available(self) -> bool:
        return os.path.isdir(f"{self.proc}/self/task")

    def confine(self, key: str, limits: Limits) -> Confinement:
        return WatchdogConfinement(limits, proc=self.proc)


class WatchdogConfinement(Confinement):
    mechanism = Watchdog.name
    needs_samples = True

    def __init__(self, limits: Limits, *, proc: str) -> None:
        self.limits = limits
        self.proc = proc
        self.pid: int | None = None
        self.peak_mb = 0.0
        self.killed = False

    def attach(self, pid: int) -> None:
        self.pid = pid

    def observe(self, usage: TreeUsage | None) -> bool:
        if usage is None or self.pid is None or self.killed:
            return False
        self.peak_mb = max(self.peak_mb, usage.memory_mb)
        if usage.memory_mb <= self.limits.memory_mb:
            return False
        self.killed = True
        for pid in reversed(tree_pids(self.pid, proc=self.proc)):  # the leaves first
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return True

    def used(self) -> Used:
        return Used(peak_memory_mb=self.peak_mb or None, oom_killed=self.killed)

    def close(self) -> None:
        pass
