"""The one /proc parser (netra_rm.procfs): the machine's counters against psutil on this machine and
against hand-written /proc files; one process's stat, memory and process group."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import psutil
import pytest

from netra_rm import procfs
from netra_rm.core import liveness
from netra_rm.core.startup.commands import group_alive
from netra_rm.monitor import sampler as sampler_module
from netra_rm.monitor.sampler import Sampler, read_psutil
from netra_rm.procfs import ProcfsReader

from servers import wait_until

linux_only = pytest.mark.skipif(not ProcfsReader.works_here(), reason="no readable /proc (not Linux)")


# -- beside psutil, on the real machine ---------------------------------------------------


@linux_only
def test_reading_agrees_with_psutil() -> None:
    before = read_psutil(psutil)
    ours = ProcfsReader().read()
    after = read_psutil(psutil)

    assert len(ours.cpu) == len(before.cpu) == psutil.cpu_count()
    for (busy0, total0), (busy, total), (busy1, total1) in zip(before.cpu, ours.cpu, after.cpu):
        # both in seconds, so a psutil reading and ours can follow one another
        assert busy0 - 0.05 <= busy <= busy1 + 0.05
        assert total0 - 0.05 <= total <= total1 + 0.05

    assert ours.memory[0] == before.memory[0]  # total
    assert ours.memory[1] == pytest.approx(before.memory[1], rel=0.05)  # available moves a little
    assert ours.memory[2] == ours.memory[0] - ours.memory[1]
    assert ours.memory[3] == pytest.approx(before.memory[3], abs=2.0)
    assert ours.swap[0] == before.swap[0]
    assert ours.swap[1] == pytest.approx(before.swap[1], rel=0.05, abs=1 << 20)

    if before.disk is None:
        assert ours.disk is None
    else:  # cumulative counters: ours was read between psutil's two readings
        assert ours.disk is not None and after.disk is not None
        assert before.disk[0] <= ours.disk[0] <= after.disk[0]
        assert before.disk[1] <= ours.disk[1] <= after.disk[1]
    assert before.net is not None and ours.net is not None and after.net is not None
    assert before.net[0] <= ours.net[0] <= after.net[0]
    assert before.net[1] <= ours.net[1] <= after.net[1]

    assert abs(ours.processes - before.processes) <= 20
    assert ours.load == pytest.approx(before.load, abs=0.5)


class _Figures:
    """psutil, but for the memory figures a test gives."""

    def __init__(self, memory: object) -> None:
        self.memory = memory

    def __getattr__(self, name: str) -> object:
        return getattr(psutil, name)

    def virtual_memory(self) -> object:
        return self.memory


@linux_only
def test_sampler_reads_proc_and_a_given_source_instead(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test (or a program) with figures of its own passes them as the source; the
    Sampler never looks at whether psutil's functions were replaced."""
    assert Sampler().sample().memory_percent == pytest.approx(psutil.virtual_memory().percent, abs=2.0)

    Mem = namedtuple("Mem", "total available percent used free")
    sample = Sampler(source=_Figures(Mem(1000, 30, 97.0, 970, 10))).sample()
    assert sample.memory_percent == 97.0
    assert sample.memory_used == 970
    assert 0.0 <= sample.cpu_percent <= 100.0

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Mem(1000, 30, 97.0, 970, 10))
    assert Sampler().sample().memory_percent != 97.0  # /proc, as on any other day


def test_sampler_asks_psutil_off_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_proc(self: ProcfsReader) -> None:
        raise AssertionError("the /proc reader must not be used off Linux")

    monkeypatch.setattr(ProcfsReader, "read", no_proc)
    monkeypatch.setattr(sampler_module, "_IS_LINUX", False)
    sample = Sampler().sample()
    assert sample.process_count > 0
    assert sample.memory_total == psutil.virtual_memory().total


# -- hand-written files: the formats and their corner cases --------------------------------


def write_proc(root: Path, *, meminfo: str, stat: str | None = None, diskstats: str | None = None,
               netdev: str | None = None, pids: tuple[int, ...] = (1, 42, 4242)) -> ProcfsReader:
    proc, block = root / "proc", root / "block"
    (proc / "net").mkdir(parents=True)
    block.mkdir()
    (proc / "stat").write_text(stat or (
        "cpu  30 0 10 60 0 0 0 0 0 0\n"
        "cpu0 10 0 5 30 5 0 0 0 0 0\n"
        "cpu1 20 0 5 20 0 0 0 0 8 2\n"
        "intr 12345 0 0\nctxt 999\nprocesses 77\n"
    ))
    (proc / "meminfo").write_text(meminfo)
    if diskstats is not None:
        (proc / "diskstats").write_text(diskstats)
    if netdev is not None:
        (proc / "net" / "dev").write_text(netdev)
    for pid in pids:
        (proc / str(pid)).mkdir()
    (proc / "self").mkdir()
    for disk in ("sda", "nvme0n1", "cciss!c0d0"):
        (block / disk).mkdir()
    return ProcfsReader(proc=proc, sys_block=block, clock_ticks=10)


MEMINFO = """MemTotal:        1000 kB
MemFree:          100 kB
MemAvailable:     250 kB
Buffers:           50 kB
Cached:           200 kB
SwapCached:         0 kB
SReclaimable:      25 kB
SwapTotal:        400 kB
SwapFree:         300 kB
"""


def test_cpu_lines_per_core_with_guest_time_counted_once(tmp_path: Path) -> None:
    reading = write_proc(tmp_path, meminfo=MEMINFO).read()
    # cpu0: total 50, idle 30 + iowait 5; cpu1: 57 minus guest 8 and guest_nice 2, idle 20
    # (in ticks of a tenth of a second here)
    assert [pytest.approx(core) for core in reading.cpu] == [(1.5, 5.0), (2.5, 4.5)]


def test_memory_and_swap_from_one_meminfo(tmp_path: Path) -> None:
    reading = write_proc(tmp_path, meminfo=MEMINFO).read()
    assert reading.memory == (1_024_000, 256_000, 768_000, 75.0)
    assert reading.swap == (409_600, 102_400, 25.0)


def test_memory_without_memavailable_is_estimated(tmp_path: Path) -> None:
    old_kernel = "\n".join(line for line in MEMINFO.splitlines() if not line.startswith("MemAvailable"))
    reading = write_proc(tmp_path, meminfo=old_kernel + "\n").read()
    # free + buffers + cached + reclaimable = 375 kB
    assert reading.memory[1] == 375 * 1024
    assert reading.memory[3] == 62.5


def test_no_swap_is_zero_percent(tmp_path: Path) -> None:
    no_swap = MEMINFO.replace("SwapTotal:        400", "SwapTotal:          0").replace(
        "SwapFree:         300", "SwapFree:           0")
    assert write_proc(tmp_path, meminfo=no_swap).read().swap == (0, 0, 0.0)


def test_disk_counts_whole_disks_not_partitions(tmp_path: Path) -> None:
    diskstats = (
        "   8       0 sda 100 0 2000 0 50 0 4000 0 0 0 0\n"
        "   8       1 sda1 100 0 2000 0 50 0 4000 0 0 0 0\n"
        " 259       0 nvme0n1 10 0 10 0 10 0 30 0 0 0 0 0 0 0 0 0 0\n"
        " 259       1 nvme0n1p1 10 0 10 0 10 0 30 0 0 0 0 0 0 0 0 0 0\n"
        " 104       0 cciss/c0d0 1 0 1 0 1 0 1 0 0 0 0\n"
        "   1       0 short 1 2 3\n"
    )
    reader = write_proc(tmp_path, meminfo=MEMINFO, diskstats=diskstats)
    assert reader.read().disk == ((2000 + 10 + 1) * 512, (4000 + 30 + 1) * 512)
    assert reader.read().disk == ((2000 + 10 + 1) * 512, (4000 + 30 + 1) * 512)  # cached verdicts


def test_disk_and_network_missing_are_none(tmp_path: Path) -> None:
    reading = write_proc(tmp_path, meminfo=MEMINFO,
                         diskstats="   8       1 sda1 100 0 2000 0 50 0 4000 0 0 0 0\n").read()
    assert reading.disk is None  # only a partition: no whole disk visible
    assert reading.net is None


def test_network_sums_every_interface(tmp_path: Path) -> None:
    netdev = (  # as the kernel writes it, columns padded
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls "
        "carrier compressed\n"
        "    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0 "
        "      0          0\n"
        "  eth0:  500000     400    0    0    0     0          0         0    70000     300    0    0    0     0 "
        "      0          0\n"
    )
    reading = write_proc(tmp_path, meminfo=MEMINFO, netdev=netdev).read()
    assert reading.net == (71_000, 501_000)


def test_processes_are_the_numeric_entries(tmp_path: Path) -> None:
    assert write_proc(tmp_path, meminfo=MEMINFO, pids=(1, 2, 3, 99)).read().processes == 4


def test_works_here_wants_stat_and_meminfo(tmp_path: Path) -> None:
    assert not ProcfsReader.works_here(proc=tmp_path)
    write_proc(tmp_path, meminfo=MEMINFO)
    assert ProcfsReader.works_here(proc=tmp_path / "proc")


# -- one process ----------------------------------------------------------------------------------


def test_a_process_stat_is_read_after_the_last_parenthesis(tmp_path: Path) -> None:
    """The command name may hold spaces and parentheses; the fields after it are what count."""
    rest = " ".join(["S", "1", "777", "778"] + [str(n) for n in range(7, 22)] + ["123456"] + ["0"] * 30)
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "stat").write_text(f"4242 (evil) name (x) {rest}\n")
    (tmp_path / "4242" / "statm").write_text("5000 1200 300 1 0 900 0\n")
    (tmp_path / "meminfo").write_text(MEMINFO)
    found = procfs.process_stat(4242, proc=str(tmp_path))
    assert found == procfs.ProcessStat(state="S", process_group=777, start_ticks=123456)
    assert procfs.process_stat(99999, proc=str(tmp_path)) is None
    assert procfs.resident_pages(4242, proc=str(tmp_path)) == 1200
    assert procfs.meminfo(["MemTotal", "MemAvailable", "Hugepagesize"], proc=str(tmp_path)) == {
        "MemTotal": 1000 * 1024, "MemAvailable": 250 * 1024}


@linux_only
def test_this_process_as_liveness_and_the_sampler_see_it() -> None:
    me = procfs.process_stat(os.getpid())
    assert me is not None and me.state in ("R", "S") and me.process_group == os.getpgrp()
    assert liveness.start_token(os.getpid()) == f"linux:{me.start_ticks}"
    assert str(os.getpid()) in set(procfs.process_ids())


@linux_only
def test_a_process_group_of_only_zombies_is_gone() -> None:
    """What `down` waits for: a group whose last process ended (unreaped) is no longer alive."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE,
                             start_new_session=True)
    try:
        assert group_alive(child.pid)
        assert child.stdin is not None
        child.stdin.close()  # it ends, and stays a zombie until reaped

        def zombie() -> bool:
            found = procfs.process_stat(child.pid)
            return found is not None and found.zombie

        wait_until(zombie, timeout=30, what="the child to end")
        assert not group_alive(child.pid)
    finally:
        child.kill()
        child.wait()
