"""Machine capacity: the host's figures, unless a cgroup or the CPU affinity says less."""

from __future__ import annotations

from pathlib import Path

from netra_rm.core.capacity import read_capacity

GB = 1024 ** 3
HOST = (64 * GB, 48 * GB)  # total, available


def fake(tmp_path: Path, proc_cgroup: str, files: dict[str, str]) -> tuple[Path, Path]:
    root, proc = tmp_path / "cgroup", tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(proc_cgroup)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root, proc


def test_no_cgroup_limits_means_the_host(tmp_path: Path) -> None:
    root, proc = fake(tmp_path, "0::/\n", {"cgroup.controllers": "cpu memory", "memory.max": "max",
                                            "cpu.max": "max 100000"})
    cap = read_capacity(cgroup_root=root, proc_self=proc, host_memory=HOST, host_cpus=8, affinity=8)
    assert (cap.memory_total_mb, cap.memory_source, cap.cpu_count, cap.cpu_source) == (65536, "host", 8, "host")
    assert cap.memory_available_mb == 48 * 1024


def test_cgroup_v2_limits_win(tmp_path: Path) -> None:
    root, proc = fake(tmp_path, "0::/ci/job\n", {"cgroup.controllers": "cpu memory",
                                                  "ci/job/cgroup.controllers": "cpu memory",
                                                  "ci/job/memory.max": str(4 * GB),
                                                  "ci/job/memory.current": str(1 * GB),
                                                  "ci/job/cpu.max": "150000 100000"})
    cap = read_capacity(cgroup_root=root, proc_self=proc, host_memory=HOST, host_cpus=8, affinity=8)
    assert (cap.memory_total_mb, cap.memory_available_mb, cap.memory_source) == (4096, 3072, "cgroup v2")
    assert (cap.cpu_count, cap.cpu_source) == (1.5, "cgroup v2")


def test_cgroup_v1_limits_win(tmp_path: Path) -> None:
    root, proc = fake(tmp_path, "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n", {
        "memory/docker/abc/memory.limit_in_bytes": str(2 * GB),
        "memory/docker/abc/memory.usage_in_bytes": str(GB // 2),
        "cpu/docker/abc/cpu.cfs_quota_us": "200000", "cpu/docker/abc/cpu.cfs_period_us": "100000"})
    cap = read_capacity(cgroup_root=root, proc_self=proc, host_memory=HOST, host_cpus=8, affinity=8)
    assert (cap.memory_total_mb, cap.memory_available_mb, cap.memory_source) == (2048, 1536, "cgroup v1")
    assert (cap.cpu_count, cap.cpu_source) == (2, "cgroup v1")


def test_cgroup_v1_unlimited_and_affinity(tmp_path: Path) -> None:
    root, proc = fake(tmp_path, "4:memory:/\n", {"memory/memory.limit_in_bytes": "9223372036854771712",
                                                  "memory/memory.usage_in_bytes": "1000"})
    cap = read_capacity(cgroup_root=root, proc_self=proc, host_memory=HOST, host_cpus=8, affinity=3)
    assert cap.memory_source == "host" and (cap.cpu_count, cap.cpu_source) == (3, "affinity")


def test_this_machine_reads_without_error() -> None:
    cap = read_capacity()
    assert cap.memory_total_mb > 0 and 0 <= cap.memory_available_mb <= cap.memory_total_mb and cap.cpu_count > 0
