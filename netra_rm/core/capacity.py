"""What this machine (or container) really has: memory and CPUs.

CI jobs often run in containers, where the host's totals lie. We read the cgroup's
limits (v2 and v1) and the CPU affinity, and use the smaller figure, saying which.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from netra_rm import procfs

_MB = 1024 * 1024
_UNLIMITED = 1 << 60  # cgroup v1 reports "no limit" as a huge number


@dataclass(frozen=True)
class MachineCapacity:
    """Memory in MB and CPUs (possibly fractional), with the source of each figure."""

    memory_total_mb: float
    memory_available_mb: float
    memory_source: str
    cpu_count: float
    cpu_source: str

    def to_dict(self) -> dict[str, object]:
        return {
            "memory_total_mb": round(self.memory_total_mb, 1),
            "memory_available_mb": round(self.memory_available_mb, 1),
            "memory_source": self.memory_source,
            "cpu_count": round(self.cpu_count, 2),
            "cpu_source": self.cpu_source,
        }


def _read(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:  # plain open: Path.read_text costs more than the read
            return f.read().decode().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _int(text: str | None) -> int | None:
    if text is None or text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return None if value >= _UNLIMITED else value


@lru_cache(maxsize=8)
def _cgroup_dirs(cgroup_root: Path, proc_self: Path) -> tuple[Path | None, dict[str, Path]]:
    """This process's cgroup v2 directory (if any) and its v1 directories by controller.

    Cached: a process does not move between cgroups in practice, and finding the
    directories costs a dozen stat calls, on every admission otherwise.
    """
    v2: Path | None = None
    v1: dict[str, Path] = {}
    text = _read(proc_self / "cgroup") or ""
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        rel = rel.lstrip("/")
        if controllers == "":
            candidate = cgroup_root / rel
            if (candidate / "cgroup.controllers").exists() or (cgroup_root / "cgroup.controllers").exists():
                v2 = candidate if candidate.exists() else cgroup_root
        else:
            for controller in controllers.split(","):
                base = cgroup_root / controller
                nested = base / rel
                v1[controller] = nested if nested.exists() else base
    return v2, v1


def _host_memory() -> tuple[float, float]:
    """(total, available) bytes: /proc/meminfo on Linux (cheap), psutil elsewhere."""
    try:
        found = procfs.meminfo(("MemTotal", "MemAvailable"))
        if len(found) == 2:
            return float(found["MemTotal"]), float(found["MemAvailable"])
    except OSError:
        pass
    import psutil

    vm = psutil.virtual_memory()
    return float(vm.total), float(vm.available)


@lru_cache(maxsize=8)
def _cpu_figures(root: Path, proc: Path, host_cpus: int | None, affinity: int | None) -> tuple[float, str]:
    """CPUs and their source: the host's count, the affinity mask or the cgroup quota,
    whichever is smallest. Cached per process: only the report uses it, and a job's CPU
    limits do not change under it, while memory is read afresh for every admission."""
    cpus: float = float(host_cpus or os.cpu_count() or 1)
    source = "host"
    if affinity is None and hasattr(os, "sched_getaffinity"):
        affinity = len(os.sched_getaffinity(0))
    if affinity and affinity < cpus:
        cpus, source = float(affinity), "affinity"
    v2, v1 = _cgroup_dirs(root, proc)
    quota = None
    label = None
    if v2 is not None:
        cpu_max = (_read(v2 / "cpu.max") or "max").split()
        if len(cpu_max) == 2 and cpu_max[0] != "max":
            quota = int(cpu_max[0]) / int(cpu_max[1])
        label = "cgroup v2"
    elif v1:
        cpu_dir = v1.get("cpu") or v1.get("cpuacct")
        if cpu_dir is not None:
            q, period = _int(_read(cpu_dir / "cpu.cfs_quota_us")), _int(_read(cpu_dir / "cpu.cfs_period_us"))
            if q and q > 0 and period:
                quota = q / period
        label = "cgroup v1"
    if quota is not None and quota < cpus:
        cpus, source = quota, label or "cgroup"
    return cpus, source


def read_capacity(*, cgroup_root: str | Path = "/sys/fs/cgroup", proc_self: str | Path = "/proc/self",
                  host_memory: tuple[float, float] | None = None, host_cpus: int | None = None,
                  affinity: int | None = None) -> MachineCapacity:
    """Read the machine's capacity. The keyword arguments exist for tests.

    :param host_memory: (total, available) in bytes, instead of asking psutil.
    """
    if host_memory is None:
        host_memory = _host_memory()
    total, available = host_memory[0] / _MB, host_memory[1] / _MB
    memory_source = "host"

    root, proc = Path(cgroup_root), Path(proc_self)
    v2, v1 = _cgroup_dirs(root, proc)
    limit = usage = None
    label = None
    if v2 is not None:
        limit = _int(_read(v2 / "memory.max"))
        usage = _int(_read(v2 / "memory.current")) if limit is not None else None
        label = "cgroup v2"
    elif v1:
        mem_dir = v1.get("memory")
        if mem_dir is not None:
            limit = _int(_read(mem_dir / "memory.limit_in_bytes"))
            usage = _int(_read(mem_dir / "memory.usage_in_bytes")) if limit is not None else None
        label = "cgroup v1"
    cpus, cpu_source = _cpu_figures(root, proc, host_cpus, affinity)

    if limit is not None and limit / _MB < total:
        total = limit / _MB
        cg_available = max(0.0, (limit - (usage or 0)) / _MB)
        available = min(available, cg_available)
        memory_source = label or "cgroup"
    return MachineCapacity(memory_total_mb=total, memory_available_mb=available, memory_source=memory_source,
                           cpu_count=cpus, cpu_source=cpu_source)
