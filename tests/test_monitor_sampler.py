"""The sampler against a fake psutil and against real load, and the background thread."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import namedtuple
from pathlib import Path
from typing import Any, Callable

import psutil
import pytest

from netra_rm.monitor.background import MonitorThread
from netra_rm.monitor.sampler import Sampler, SystemSample

CpuTimes = namedtuple("CpuTimes", "user nice system idle iowait irq softirq steal guest guest_nice")
Mem = namedtuple("Mem", "total available percent used free")
Swap = namedtuple("Swap", "total used free percent sin sout")
Disk = namedtuple("Disk", "read_count write_count read_bytes write_bytes")
Net = namedtuple("Net", "bytes_sent bytes_recv packets_sent packets_recv")


class FakePsutil:
    """Cumulative counters that tests move by hand; no process-table functions at all."""

    def __init__(self, cores: int = 2) -> None:
        self.busy = [0.0] * cores
        self.idle = [0.0] * cores
        self.disk: Disk | None = Disk(0, 0, 0, 0)
        self.net: Net | None = Net(0, 0, 0, 0)
        self.load = (1.0, 0.5, 0.25)
        self.npids = 123

    def cpu_times(self, percpu: bool = False) -> Any:
        assert percpu, "the sampler reads per-core times once and sums them itself"
        return [CpuTimes(b, 0, 0, i, 0, 0, 0, 0, 0, 0) for b, i in zip(self.busy, self.idle)]

    def cpu_count(self, logical: bool = True) -> int:
        return len(self.busy)

    def virtual_memory(self) -> Mem:
        return Mem(total=1000, available=400, percent=60.0, used=550, free=100)

    def swap_memory(self) -> Swap:
        return Swap(total=200, used=50, free=150, percent=25.0, sin=0, sout=0)

    def getloadavg(self) -> tuple[float, float, float]:
        return self.load

    def disk_io_counters(self) -> Disk | None:
        return self.disk

    def net_io_counters(self) -> Net | None:
        return self.net

    def pids(self) -> list[int]:
        return list(range(self.npids))


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def make_sampler(fake: FakePsutil, mono: FakeClock) -> Sampler:
    return Sampler(source=fake, clock=lambda: 1_700_000_000.0 + mono.now, monotonic=mono)


def wait_until(condition: Callable[[], bool], *, timeout: float, step: float = 0.05) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while time.monotonic() < deadline:
        if condition():
            return True
        pause.wait(step)
    return condition()


# -- with a fake source -----------------------------------------------------------------


def test_first_sample_has_no_rates_and_cpu_since_construction() -> None:
    fake, mono = FakePsutil(), FakeClock()
    sampler = make_sampler(fake, mono)
    fake.busy = [0.5, 1.0]
    fake.idle = [0.5, 0.0]
    mono.now += 1.0
    sample = sampler.sample()
    assert sample.interval_seconds is None
    assert sample.disk_read_bytes_per_second is None
    assert sample.net_recv_bytes_per_second is None
    assert sample.cpu_percent_per_core == (50.0, 100.0)
    assert sample.cpu_percent == 75.0


def test_rates_are_counter_deltas_over_monotonic_time() -> None:
    fake, mono = FakePsutil(), FakeClock()
    sampler = make_sampler(fake, mono)
    sampler.sample()
    fake.disk = Disk(0, 0, 4000, 10_000)
    fake.net = Net(2_000, 8_000, 0, 0)
    mono.now += 2.0
    sample = sampler.sample()
    assert sample.interval_seconds == 2.0
    assert sample.disk_read_bytes_per_second == 2000.0
    assert sample.disk_write_bytes_per_second == 5000.0
    assert sample.net_sent_bytes_per_second == 1000.0
    assert sample.net_recv_bytes_per_second == 4000.0


def test_counter_that_goes_back_gives_zero_and_missing_counter_gives_none() -> None:
    fake, mono = FakePsutil(), FakeClock()
    fake.disk = Disk(0, 0, 5000, 5000)
    sampler = make_sampler(fake, mono)
    sampler.sample()
    fake.disk = Disk(0, 0, 10, 10)  # a device went away, or the counter was reset
    fake.net = None
    mono.now += 1.0
    sample = sampler.sample()
    assert sample.disk_read_bytes_per_second == 0.0
    assert sample.disk_write_bytes_per_second == 0.0
    assert sample.net_sent_bytes_per_second is None
    assert sample.net_recv_bytes_per_second is None


def test_memory_swap_load_and_processes() -> None:
    fake, mono = FakePsutil(cores=4), FakeClock()
    fake.load = (8.0, 4.0, 2.0)
    sample = make_sampler(fake, mono).sample()
    assert (sample.memory_total, sample.memory_available, sample.memory_used) == (1000, 400, 550)
    assert sample.memory_percent == 60.0
    assert (sample.swap_total, sample.swap_used, sample.swap_percent) == (200, 50, 25.0)
    assert sample.load_average == (8.0, 4.0, 2.0)
    assert sample.load_per_core == (2.0, 1.0, 0.5)
    assert sample.process_count == 123
    assert sample.cpu_count == 4


def test_a_core_appearing_does_not_break_sampling() -> None:
    fake, mono = FakePsutil(cores=2), FakeClock()
    sampler = make_sampler(fake, mono)
    fake.busy.append(0.0)
    fake.idle.append(0.0)
    mono.now += 1.0
    sample = sampler.sample()
    assert sample.cpu_percent_per_core == (0.0, 0.0, 0.0)
    fake.busy = [1.0, 1.0, 1.0]
    mono.now += 1.0
    assert sampler.sample().cpu_percent == 100.0


def test_to_dict_is_json_ready() -> None:
    fake, mono = FakePsutil(), FakeClock()
    sampler = make_sampler(fake, mono)
    sampler.sample()
    mono.now += 1.0
    data = sampler.sample().to_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {"timestamp", "interval_seconds", "cpu", "memory", "swap", "load", "disk",
                         "network", "processes"}
    assert data["cpu"]["per_core"] == [0.0, 0.0]
    assert data["memory"]["percent"] == 60.0
    assert data["load"]["average"] == [1.0, 0.5, 0.25]
    assert data["disk"] == {"read_bytes_per_second": 0.0, "write_bytes_per_second": 0.0}
    assert data["processes"] == 123


def test_sample_is_frozen() -> None:
    sample = make_sampler(FakePsutil(), FakeClock()).sample()
    with pytest.raises(AttributeError):
        sample.cpu_percent = 1.0  # type: ignore[misc]


def test_real_sampler_never_walks_the_process_table(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the sampler must not iterate processes")

    monkeypatch.setattr(psutil, "process_iter", forbidden)
    monkeypatch.setattr(psutil, "Process", forbidden)
    sampler = Sampler()
    sampler.sample()
    assert sampler.sample().process_count > 0


# -- against the real machine -------------------------------------------------------------


def test_sampling_is_cheap() -> None:
    """Well under 1% of a core at one sample a second means well under 10 ms a sample."""
    sampler = Sampler()
    start = time.process_time()
    for _ in range(200):
        sampler.sample()
    per_sample = (time.process_time() - start) / 200
    assert per_sample < 0.005, f"{per_sample * 1000:.2f} ms of CPU per sample"


def test_disk_write_rate_sees_a_known_write(tmp_path: Path) -> None:
    if psutil.disk_io_counters() is None:
        pytest.skip("no block device counters visible on this machine")
    size = 32 * 1024 * 1024
    sampler = Sampler()
    sampler.sample()
    chunk = os.urandom(1024 * 1024)
    with open(tmp_path / "known.bin", "wb") as f:
        for _ in range(size // len(chunk)):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())

    written = 0.0

    def enough_written() -> bool:
        nonlocal written
        sample = sampler.sample()
        assert sample.interval_seconds is not None and sample.disk_write_bytes_per_second is not None
        written += sample.disk_write_bytes_per_second * sample.interval_seconds
        return written >= 0.9 * size

    assert wait_until(enough_written, timeout=15.0), f"saw {written:.0f} bytes written, expected ~{size}"


def test_cpu_percent_rises_under_a_cpu_bound_process() -> None:
    cores = psutil.cpu_count() or 1
    spinners = max(1, min(8, cores // 2))
    expected_rise = 100.0 * spinners / cores
    sampler = Sampler()
    pause = threading.Event()
    baseline: list[float] = []
    for _ in range(4):
        pause.wait(0.25)
        baseline.append(sampler.sample().cpu_percent)
    base = sum(baseline) / len(baseline)
    if base > 100.0 - expected_rise / 2:  # no room to see a rise: agree with psutil over one window instead
        before = psutil.cpu_times()
        sampler.sample()
        pause.wait(0.5)
        ours = sampler.sample().cpu_percent
        after = psutil.cpu_times()
        idle = (after.idle + after.iowait) - (before.idle + before.iowait)
        total = sum(after) - sum(before)
        theirs = 100.0 * (1.0 - idle / total) if total > 0 else 0.0
        assert abs(ours - theirs) < 15.0, f"busy machine: the sampler saw {ours:.1f}% CPU, psutil {theirs:.1f}%"
        return

    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(spinners)]
    try:
        seen: list[float] = []

        def cpu_rose() -> bool:
            seen.append(sampler.sample().cpu_percent)
            return seen[-1] >= base + expected_rise / 2

        assert wait_until(cpu_rose, timeout=15.0, step=0.25), (
            f"baseline {base:.1f}%, with {spinners} spinner(s) on {cores} cores saw {seen}"
        )
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


# -- MonitorThread ------------------------------------------------------------------------


def test_monitor_thread_keeps_a_bounded_history() -> None:
    seen: list[SystemSample] = []
    thread = MonitorThread(interval=0.01, history_size=3, on_sample=seen.append)
    assert thread.latest() is None
    with thread:
        assert thread.wait_for_sample(5.0) is not None
        assert wait_until(lambda: len(seen) >= 5, timeout=10.0)
        history = thread.history()
        assert len(history) == 3
        assert [s.timestamp for s in history] == sorted(s.timestamp for s in history)
        latest = thread.latest()
        assert latest is not None and latest.timestamp >= history[-1].timestamp
    assert not thread.running


def test_monitor_thread_stops_promptly_with_a_long_interval() -> None:
    thread = MonitorThread(interval=60.0).start()
    assert thread.running
    start = time.monotonic()
    thread.stop()
    assert time.monotonic() - start < 1.0
    assert not thread.running
    thread.stop()  # twice is fine


def test_monitor_thread_survives_a_failing_callback() -> None:
    calls = 0

    def boom(sample: SystemSample) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("callback failed")

    with MonitorThread(interval=0.01, on_sample=boom) as thread:
        assert wait_until(lambda: calls >= 3, timeout=10.0)
        assert isinstance(thread.last_error, RuntimeError)
        assert thread.running


def test_monitor_thread_rejects_bad_options() -> None:
    with pytest.raises(ValueError):
        MonitorThread(interval=0)
    with pytest.raises(ValueError):
        MonitorThread(history_size=0)
