"""Measuring and enforcing: a command's measured peak, each enforcement mechanism (cgroup v1
and the watchdog for real; cgroup v2 and systemd-run through a fake tree), and cleanup."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from test_run import TINY

HOG = """
import sys, time
size = int(sys.argv[1]) * 1024 * 1024
block = bytearray(size)
for i in range(0, size, 4096):
    block[i] = 1
time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0)
"""

V1_MEMORY = Path("/sys/fs/cgroup/memory")


def v1_writable() -> bool:
    from netra_rm.machine.cgroup_v1 import CgroupV1

    return CgroupV1().available()


@pytest.fixture
def hog(tmp_path: Path) -> Path:
    path = tmp_path / "hog.py"
    path.write_text(HOG)
    return path


def history(cli, config: Path) -> list[dict]:
    return cli("--config", str(config), "history", "--json").json()["events"]


def test_a_200_mb_command_is_measured_within_15_percent(cli, small_config: Path, hog: Path) -> None:
    result = cli("--config", str(small_config), "run", "--layer", "tiny", "--category", "hog", "--memory-mb", "250",
                 "-v", "--", sys.executable, str(hog), "200", "0.6")
    assert result.code == 0, result.stderr
    assert "not enforced" in result.stderr and "the command used peak" in result.stderr
    release = history(cli, small_config)[-1]
    assert release["event"] == "release"
    assert 200 * 0.85 <= release["peak_memory_mb"] <= 200 * 1.15, release
    assert release["oom_killed"] is False and release["wall_seconds"] >= 0.6 and release["cpu_seconds"] > 0


def test_no_measure_journals_nothing(cli, small_config: Path) -> None:
    result = cli("--config", str(small_config), "run", *TINY, "--no-measure", "--", "true")
    assert result.code == 0, result.stderr
    assert "peak_memory_mb" not in history(cli, small_config)[-1]


@pytest.mark.skipif(not v1_writable(), reason="the cgroup v1 memory controller is not writable here")
def test_enforce_v1_kills_a_400_mb_command_under_100_mb(cli, small_config: Path, hog: Path) -> None:
    before = set(os.listdir(V1_MEMORY / "netra-rm")) if (V1_MEMORY / "netra-rm").exists() else set()
    result = cli("--config", str(small_config), "run", *TINY, "--enforce", "-v", "--", sys.executable, str(hog),
                 "400", env={"NETRA_RM_ENFORCE_WITH": "cgroup-v1"})
    assert result.code == 137, result.stderr
    assert "with cgroup-v1" in result.stderr
    assert "python" in result.stderr and "exceeded its 100 MB allocation (peak 100 MB) and was killed." \
        in result.stderr
    release = history(cli, small_config)[-1]
    assert release["oom_killed"] is True
    after = set(os.listdir(V1_MEMORY / "netra-rm"))
    assert {n for n in after - before if (V1_MEMORY / "netra-rm" / n).is_dir()} == set(), "its cgroup is removed"


@pytest.mark.skipif(not v1_writable(), reason="the cgroup v1 memory controller is not writable here")
def test_v1_leftovers_of_a_killed_run_are_removed_by_the_next(cli, small_config: Path) -> None:
    leftover = V1_MEMORY / "netra-rm" / "leftover0000"
    leftover.mkdir(parents=True, exist_ok=True)  # as a SIGKILLed run leaves it: empty
    result = cli("--config", str(small_config), "run", *TINY, "--enforce", "--", "true",
                 env={"NETRA_RM_ENFORCE_WITH": "cgroup-v1"})
    assert result.code == 0, result.stderr
    assert not leftover.exists()


def test_enforce_watchdog_kills_a_400_mb_command_under_100_mb(cli, small_config: Path, hog: Path) -> None:
    result = cli("--config", str(small_config), "run", *TINY, "--enforce", "-v", "--", sys.executable, str(hog),
                 "400", "5", env={"NETRA_RM_ENFORCE_WITH": "watchdog"})
    assert result.code == 137, result.stderr
    assert "with watchdog" in result.stderr
    assert "exceeded its 100 MB allocation (peak" in result.stderr and "and was killed." in result.stderr
    assert history(cli, small_config)[-1]["oom_killed"] is True


def test_without_enforce_nothing_is_limited(cli, small_config: Path, hog: Path) -> None:
    result = cli("--config", str(small_config), "run", *TINY, "--", sys.executable, str(hog), "200")
    assert result.code == 0 and result.stderr == ""
    assert history(cli, small_config)[-1]["oom_killed"] is False


def test_unknown_mechanism_is_bad_input(cli, small_config: Path) -> None:
    result = cli("--config", str(small_config), "run", *TINY, "--enforce", "--", "true",
                 env={"NETRA_RM_ENFORCE_WITH": "magic"})
    assert result.code == 2
    assert "unknown enforcement mechanism magic" in result.stderr


def test_layer_enforce_in_the_configuration(cli, write_config, hog: Path) -> None:
    config = write_config("""
layers:
  tiny:
    services: []
    enforce: true
    pool: {memory_mb: 300, cpu_percent: 30, instances: 3}
machine:
  check_memory: false
""", name="enforced.yaml")
    result = cli("--config", str(config), "run", *TINY, "--", sys.executable, str(hog), "400", "5",
                 env={"NETRA_RM_ENFORCE_WITH": "watchdog"})
    assert result.code == 137 and "exceeded its 100 MB allocation" in result.stderr


# -- cgroup v2 and systemd-run, through a fake tree (their files do not exist here) --------

def fake_v2(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "cgroup2"
    own = root / "user.slice" / "ci.scope"
    own.mkdir(parents=True)
    (own / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (own / "cgroup.subtree_control").write_text("")
    proc = tmp_path / "proc" / "self"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text("0::/user.slice/ci.scope\n")
    return root, own


def test_cgroup_v2_confines_in_a_delegated_subtree(tmp_path: Path) -> None:
    from netra_rm.machine import Limits, confine
    from netra_rm.machine.cgroup_v2 import CgroupV2

    root, own = fake_v2(tmp_path)
    mechanism = CgroupV2(root=str(root), proc=str(tmp_path / "proc"))
    assert mechanism.available()
    confinement, passed = confine("abc123", Limits(memory_mb=512, cpu_percent=25, cpus=2), [mechanism])
    assert confinement.mechanism == "cgroup-v2" and passed == []
    confinement.attach(4242)
    cgroup = own / "netra-rm" / "abc123"
    assert (own / "cgroup.subtree_control").read_text() == "+memory +cpu"
    assert (own / "netra-rm" / "cgroup.subtree_control").read_text() == "+memory +cpu"
    assert (cgroup / "memory.max").read_text() == str(512 * 1024 * 1024)
    assert (cgroup / "cpu.max").read_text() == "50000 100000"  # 25 % of 2 CPUs: half a core
    assert (cgroup / "cgroup.procs").read_text() == "4242"
    (cgroup / "memory.peak").write_text(str(530 * 1024 * 1024))
    (cgroup / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (cgroup / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\n")
    used = confinement.used()
    assert (used.peak_memory_mb, used.cpu_seconds, used.oom_killed) == (530, 2.5, True)


def test_cgroup_v2_without_delegated_controllers_is_passed_over(tmp_path: Path) -> None:
    from netra_rm.machine import Limits, confine
    from netra_rm.machine.cgroup_v2 import CgroupV2
    from netra_rm.machine.watchdog import Watchdog

    root, own = fake_v2(tmp_path)
    (own / "cgroup.controllers").write_text("pids\n")
    confinement, passed = confine("x", Limits(100, 10), [CgroupV2(root=str(root), proc=str(tmp_path / "proc")),
                                                         Watchdog()])
    assert confinement.mechanism == "watchdog"
    assert passed == ["cgroup-v2: not available here"]


FAKE_SYSTEMD_RUN = """#!/bin/sh
printf '%s\\n' "$@" > "$(dirname "$0")/args"
while [ "$1" != "--" ]; do shift; done
shift
exec "$@"
"""


def test_systemd_run_wraps_the_command_in_a_scope(tmp_path: Path) -> None:
    from netra_rm.machine import Limits
    from netra_rm.machine.systemd import SystemdRun

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "systemd-run"
    fake.write_text(FAKE_SYSTEMD_RUN)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    run_dir = tmp_path / "run-systemd"
    run_dir.mkdir()
    user_bus = tmp_path / "bus"
    user_bus.write_text("")
    as_user = SystemdRun(path=str(bin_dir), run_dir=str(run_dir), user_bus=str(user_bus), root=False)
    assert as_user.available()
    assert not SystemdRun(path=str(bin_dir), run_dir=str(tmp_path / "no-systemd"), root=True).available()
    confinement = as_user.confine("abc123", Limits(memory_mb=256, cpu_percent=10, cpus=2))
    argv = confinement.wrap([sys.executable, "-c", "print('inside')"])
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    assert done.stdout == "inside\n", "CMD runs in place of systemd-run"
    args = (bin_dir / "args").read_text().split("\n")
    assert args[:6] == ["--user", "--scope", "--quiet", "--collect", "--unit", "netra-rm-abc123"]
    assert f"MemoryMax={256 * 1024 * 1024}" in args and "CPUQuota=20%" in args


def test_measure_tree_counts_descendants(tmp_path: Path) -> None:
    from netra_rm.machine.measure import tree_pids, tree_usage

    script = ("import subprocess, sys, time; "
              "c = subprocess.Popen([sys.executable, '-c', 'b = bytearray(60 * 2**20); import time; "
              "[b.__setitem__(i, 1) for i in range(0, len(b), 4096)]; print(1, flush=True); time.sleep(30)'], "
              "stdout=subprocess.PIPE); c.stdout.readline(); print('ready', flush=True); time.sleep(30)")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None and parent.stdout.readline() == "ready\n"
        assert len(tree_pids(parent.pid)) == 2
        usage = tree_usage(parent.pid)
        assert usage is not None and usage.processes == 2 and usage.memory_mb >= 60
    finally:
        for pid in reversed(tree_pids(parent.pid)):
            os.kill(pid, 9)
        parent.wait()
    assert tree_usage(parent.pid) is None
