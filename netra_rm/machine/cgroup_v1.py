"""cgroup v1: the ``memory`` and ``cpu`` controllers, where this user may write them.

netra-rm makes ``<memory mount>/netra-rm/<id>`` and ``<cpu mount>/netra-rm/<id>``, sets
``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes``, so swap is no way out)
and the CFS quota, and writes the command's process into both before it runs anything.
Its peak is ``memory.max_usage_in_bytes``; an OOM kill shows in ``memory.oom_control``.
"""

from __future__ import annotations

import os

from netra_rm.machine import cgroupfs
from netra_rm.machine.base import CPU_PERIOD_US, Confinement, Limits, Mechanism, Used, keyed_value, read_int, write_text


class CgroupV1(Mechanism):
    name = "cgroup-v1"

    def __init__(self, *, mountinfo: str = "/proc/self/mounts") -> None:
        self.mountinfo = mountinfo

    def _bases(self) -> tuple[str, str | None] | None:
        memory = cpu = None
        for mount in cgroupfs.mounts(self.mountinfo):
            if mount.fstype != "cgroup":
                continue
            if "memory" in mount.options and memory is None:
                memory = mount.path
            if "cpu" in mount.options and cpu is None:
                cpu = mount.path
        if memory is None:
            return None
        return (os.path.join(memory, cgroupfs.OWN_DIRECTORY),
                None if cpu is None else os.path.join(cpu, cgroupfs.OWN_DIRECTORY))

    def available(self) -> bool:
        bases = self._bases()
        if bases is None:
            return False
        return all(os.access(os.path.dirname(b), os.W_OK) for b in bases if b is not None)

    def confine(self, key: str, limits: Limits) -> Confinement:
        bases = self._bases()
        if bases is None:
            raise OSError("no cgroup v1 memory controller is mounted")
        memory_base, cpu_base = bases
        made: list[str] = []
        try:
            for base in (memory_base, cpu_base):
                if base is None:
                    continue
                os.makedirs(base, exist_ok=True)
                cgroupfs.remove_leftovers(base)
                path = os.path.join(base, key)
                os.mkdir(path)
                made.append(path)
            memory = os.path.join(memory_base, key)
            write_text(os.path.join(memory, "memory.limit_in_bytes"), str(limits.memory_bytes))
            if os.path.exists(os.path.join(memory, "memory.memsw.limit_in_bytes")):
                write_text(os.path.join(memory, "memory.memsw.limit_in_bytes"), str(limits.memory_bytes))
            if cpu_base is not None:
                cpu = os.path.join(cpu_base, key)
                write_text(os.path.join(cpu, "cpu.cfs_period_us"), str(CPU_PERIOD_US))
                write_text(os.path.join(cpu, "cpu.cfs_quota_us"), str(limits.cpu_quota_us()))
        except OSError:
            for path in reversed(made):
                cgroupfs.remove(path)
            raise
        return CgroupV1Confinement(made)


class CgroupV1Confinement(Confinement):
    mechanism = CgroupV1.name

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths  # the memory cgroup first

    def attach(self, pid: int) -> None:
        for path in self.paths:
            write_text(os.path.join(path, "cgroup.procs"), str(pid))

    def used(self) -> Used:
        memory = self.paths[0]
        peak = read_int(os.path.join(memory, "memory.max_usage_in_bytes"))
        kills = keyed_value(os.path.join(memory, "memory.oom_control"), "oom_kill")
        return Used(peak_memory_mb=None if peak is None else peak / (1024 * 1024), oom_killed=bool(kills))

    def close(self) -> None:
        for path in self.paths:
            cgroupfs.remove(path)
