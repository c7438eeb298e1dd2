"""cgroup v2: a subtree delegated to this process (``memory`` and ``cpu`` enabled).

netra-rm makes ``<its own cgroup>/netra-rm/<id>``, enables the two controllers on the
way down, sets ``memory.max`` (``memory.swap.max`` 0) and ``cpu.max``, and writes the
command's process into it before it runs anything. It works only where the kernel lets
it: a cgroup delegated to this user (systemd's ``Delegate=yes``, a container's own
namespace) whose processes do not prevent enabling controllers below it. Its peak is
``memory.peak``; an OOM kill shows in ``memory.events``.
"""

from __future__ import annotations

import os

from netra_rm.machine import cgroupfs
from netra_rm.machine.base import (
    CPU_PERIOD_US,
    Confinement,
    Limits,
    Mechanism,
    Used,
    keyed_value,
    read_int,
    read_text,
    write_text,
)

_CONTROLLERS = ("memory", "cpu")


class CgroupV2(Mechanism):
    name = "cgroup-v2"

    def __init__(self, *, mountinfo: str = "/proc/self/mounts", proc: str = "/proc", root: str | None = None) -> None:
        self.mountinfo = mountinfo
        self.proc = proc
        self.root = root  # the cgroup2 mount point (default: found in mountinfo)

    def own_directory(self) -> str | None:
        """This process's cgroup directory in the cgroup2 hierarchy."""
        root = self.root
        if root is None:
            root = next((m.path for m in cgroupfs.mounts(self.mountinfo) if m.fstype == "cgroup2"), None)
        path = cgroupfs.own_cgroup(proc=self.proc).get("")
        if root is None or path is None:
            return None
        return os.path.join(root, path.lstrip("/"))

    def available(self) -> bool:
        own = self.own_directory()
        if own is None:
            return False
        controllers = (read_text(os.path.join(own, "cgroup.controllers")) or "").split()
        if not all(c in controllers for c in _CONTROLLERS):
            return False
        return os.access(own, os.W_OK) and os.access(os.path.join(own, "cgroup.subtree_control"), os.W_OK)

    def confine(self, key: str, limits: Limits) -> Confinement:
        own = self.own_directory()
        if own is None:
            raise OSError("no cgroup v2 hierarchy")
        enable = " ".join(f"+{c}" for c in _CONTROLLERS)
        base = os.path.join(own, cgroupfs.OWN_DIRECTORY)
        write_text(os.path.join(own, "cgroup.subtree_control"), enable)  # EBUSY where our own cgroup holds us
        os.makedirs(base, exist_ok=True)
        write_text(os.path.join(base, "cgroup.subtree_control"), enable)
        cgroupfs.remove_leftovers(base)
        path = os.path.join(base, key)
        os.mkdir(path)
        try:
            write_text(os.path.join(path, "memory.max"), str(limits.memory_bytes))
            if os.path.exists(os.path.join(path, "memory.swap.max")):
                write_text(os.path.join(path, "memory.swap.max"), "0")
            write_text(os.path.join(path, "cpu.max"), f"{limits.cpu_quota_us()} {CPU_PERIOD_US}")
        except OSError:
            cgroupfs.remove(path)
            raise
        return CgroupV2Confinement(path)


class CgroupV2Confinement(Confinement):
    mechanism = CgroupV2.name

    def __init__(self, path: str) -> None:
        self.path = path

    def attach(self, pid: int) -> None:
        write_text(os.path.join(self.path, "cgroup.procs"), str(pid))

    def used(self) -> Used:
        peak = read_int(os.path.join(self.path, "memory.peak"))
        usage_usec = keyed_value(os.path.join(self.path, "cpu.stat"), "usage_usec")
        kills = keyed_value(os.path.join(self.path, "memory.events"), "oom_kill")
        return Used(peak_memory_mb=None if peak is None else peak / (1024 * 1024),
                    cpu_seconds=None if usage_usec is None else usage_usec / 1e6, oom_killed=bool(kills))

    def close(self) -> None:
        cgroupfs.remove(self.path)
