"""A transient systemd scope: ``systemd-run --scope`` (``--user`` when not root).

The command line becomes ``systemd-run --scope --unit netra-rm-<id> -p MemoryMax=...
-p CPUQuota=... -- CMD...``; ``systemd-run`` registers the scope with its own process
and then executes CMD in it, so CMD keeps the process netra-rm started. systemd removes
the scope once it is empty. Its peak and OOM kills are read from the scope's cgroup when
the cgroup v2 files are there.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

from netra_rm.machine import cgroupfs
from netra_rm.machine.base import Confinement, Limits, Mechanism, Used, keyed_value, read_int


class SystemdRun(Mechanism):
    name = "systemd-run"

    def __init__(self, *, executable: str | None = None, run_dir: str = "/run/systemd/system",
                 user_bus: str | None = None, root: bool | None = None, path: str | None = None,
                 cgroup_root: str = "/sys/fs/cgroup", proc: str = "/proc") -> None:
        self.path = path
        self.executable = executable
        self.run_dir = run_dir  # exists when systemd is the init system
        self.user_bus = user_bus  # the user manager's bus socket (default: $XDG_RUNTIME_DIR/bus)
        self.root = os.geteuid() == 0 if root is None else root
        self.cgroup_root = cgroup_root
        self.proc = proc

    def _executable(self) -> str | None:
        return self.executable or shutil.which("systemd-run", path=self.path)

    def available(self) -> bool:
        if self._executable() is None or not os.path.isdir(self.run_dir):
            return False
        if self.root:
            return True
        return self.user_bus is not None and os.path.exists(self.user_bus)

    def confine(self, key: str, limits: Limits) -> Confinement:
        executable = self._executable()
        if executable is None:
            raise OSError("systemd-run is not installed")
        return SystemdScope(executable, key, limits, user=not self.root, cgroup_root=self.cgroup_root,
                            proc=self.proc)


class SystemdScope(Confinement):
    mechanism = SystemdRun.name

    def __init__(self, executable: str, key: str, limits: Limits, *, user: bool, cgroup_root: str,
                 proc: str) -> None:
        self.executable = executable
        self.unit = f"netra-rm-{key}"
        self.limits = limits
        self.user = user
        self.cgroup_root = cgroup_root
        self.proc = proc
        self.path: str | None = None
        self.pid: int | None = None

    def wrap(self, argv: Sequence[str]) -> list[str]:
        cpu = f"{self.limits.cpu_cores * 100:.0f}%"
        return [self.executable, *(["--user"] if self.user else []), "--scope", "--quiet", "--collect",
                "--unit", self.unit, "-p", f"MemoryMax={self.limits.memory_bytes}", "-p", "MemorySwapMax=0",
                "-p", f"CPUQuota={cpu}", "--", *argv]

    def attach(self, pid: int) -> None:
        self.pid = pid

    def observe(self, usage: object) -> bool:
        if self.path is None and self.pid is not None:
            path = cgroupfs.own_cgroup(self.pid, proc=self.proc).get("")
            if path and path.endswith(f"/{self.unit}.scope"):
                self.path = os.path.join(self.cgroup_root, path.lstrip("/"))
        return False

    def used(self) -> Used:
        if self.path is None:
            return Used()
        peak = read_int(os.path.join(self.path, "memory.peak"))
        kills = keyed_value(os.path.join(self.path, "memory.events"), "oom_kill")
        return Used(peak_memory_mb=None if peak is None else peak / (1024 * 1024), oom_killed=bool(kills))

    def close(self) -> None:
        pass  # --collect: systemd removes the scope once it is empty
