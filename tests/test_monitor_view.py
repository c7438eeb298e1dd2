"""The live view, the NDJSON line and the monitor loop."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Callable

import psutil
import pytest
from rich.console import Console

from netra_rm.monitor.loop import ServicesPoller, run_monitor
from netra_rm.monitor.sampler import SystemSample
from netra_rm.monitor.snapshot import MonitorSnapshot, SnapshotSource, pool_utilisation
from netra_rm.monitor.thresholds import Alert, Level, Thresholds
from netra_rm.monitor.view import build_view, snapshot_to_ndjson_dict

REPO = Path(__file__).resolve().parents[1]
NOW = 1_800_000_000.0

SAMPLE = SystemSample(
    timestamp=NOW,
    cpu_percent=83.5,
    cpu_percent_per_core=(99.0, 70.0, 65.0, 100.0, 80.0, 88.0),
    memory_total=16 * 2**30,
    memory_available=2 * 2**30,
    memory_used=14 * 2**30,
    memory_percent=96.1,
    swap_total=2 * 2**30,
    swap_used=2**29,
    swap_percent=25.0,
    load_average=(3.0, 2.0, 1.0),
    load_per_core=(0.5, 0.333, 0.167),
    disk_read_bytes_per_second=1.5 * 2**20,
    disk_write_bytes_per_second=512.0,
    net_sent_bytes_per_second=2048.0,
    net_recv_bytes_per_second=0.0,
    process_count=321,
    interval_seconds=2.0,
)
POOLS = [
    {"layer": "fast_feedback", "max_memory_mb": 512, "allocated_memory_mb": 256, "max_cpu_percent": 50,
     "allocated_cpu_percent": 10, "max_parallel_instances": 8, "active_instances": 2},
    {"layer": "e2e_background", "max_memory_mb": 4096, "allocated_memory_mb": 4096, "max_cpu_percent": 90,
     "allocated_cpu_percent": 90, "max_parallel_instances": 2, "active_instances": 2},
]
ALLOCATIONS = [
    {"id": "alloc-1a2b", "layer": "fast_feedback", "category": "unit", "memory_mb": 256, "cpu_percent": 10,
     "created_at": NOW - 75, "expires_at": NOW + 1725, "owner": {"host": "ci-7", "user": "runner", "pid": 4242}},
    {"id": "alloc-9z8y", "layer": "e2e_background", "category": "[bold]e2e", "memory_mb": 4096,
     "cpu_percent": 90, "created_at": NOW - 4000, "expires_at": NOW - 20,
     "owner": {"host": "ci-8", "user": "runner", "pid": 17}},
]
SERVICES = [
    {"name": "postgresql", "status": "healthy", "latency_ms": 3.2, "error": None},
    {"name": "backend", "status": "unhealthy", "latency_ms": None, "error": "connection refused"},
]
ALERTS = [Alert("memory_percent", Level.CRITICAL, 96.1, 95.0, NOW - 8, NOW)]


def snapshot(**changes: Any) -> MonitorSnapshot:
    snap = MonitorSnapshot(sample=SAMPLE, pools=POOLS, allocations=ALLOCATIONS, services=SERVICES,
                           alerts=ALERTS, services_checked_at=NOW - 4)
    return dataclasses.replace(snap, **changes)


def render(renderable: Any, *, width: int = 120, console: Console | None = None) -> str:
    console = console or Console(record=True, no_color=True, width=width, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def line_with(text: str, word: str) -> str:
    return next(line for line in text.splitlines() if word in line)


def row(text: str, first_cell: str) -> str:
    """The first line of a table whose first cell is ``first_cell`` (the system panel's rows)."""
    return next(line for line in text.splitlines() if line.startswith(f"│ {first_cell} "))


# -- build_view -----------------------------------------------------------------------------


def test_view_shows_system_pools_allocations_services_and_alerts() -> None:
    text = render(build_view(snapshot()))
    assert "\x1b[" not in text
    # system panel, with level words that survive NO_COLOR
    assert "critical" in row(text, "memory")
    assert "96.1%" in row(text, "memory")
    assert "14.0 GiB / 16.0 GiB" in text
    assert "warning" in row(text, "CPU")
    assert "cpu3 100%" in line_with(text, "cores") and "cpu0 99%" in line_with(text, "cores")
    assert "(2 more, mean 68%)" in " ".join(text.split())  # may wrap
    assert "ok" in line_with(text, "processes")
    assert "321" in line_with(text, "processes")
    assert "3.00 2.00 1.00" in line_with(text, "load")
    assert "read 1.5 MiB/s" in line_with(text, "disk") and "write 512 B/s" in line_with(text, "disk")
    assert "sent 2.0 KiB/s" in line_with(text, "network")
    # pools as bars with numbers
    pool = line_with(text, "fast_feedback  ")
    assert "256/512 MB" in pool and "50%" in pool and "2/8" in pool and "room" in pool
    assert "\u2588" in pool
    assert "full" in line_with(text, "e2e_background  ")
    # allocations: age, expiry, owner; markup in data is shown as is
    alloc = line_with(text, "alloc-1a2b")
    assert "1m15s" in alloc and "in 28m45s" in alloc and "runner@ci-7 pid 4242" in alloc
    assert "expired 20s ago" in line_with(text, "alloc-9z8y")
    assert "[bold]e2e" in text
    # services and alerts
    assert "checked 4s ago" in text
    assert "healthy" in line_with(text, "postgresql") and "3 ms" in line_with(text, "postgresql")
    assert "unhealthy" in line_with(text, "backend") and "connection refused" in line_with(text, "backend")
    assert "memory at 96.1% (critical, >= 95%) for 8s" in text


def test_view_fits_narrow_consoles() -> None:
    for width in (60, 80, 100):
        text = render(build_view(snapshot()), width=width)
        assert all(len(line) <= width for line in text.splitlines()), width
        assert "fast_feedback" in text and "memory" in text and "critical" in text


def test_view_draws_ascii_bars_where_the_console_cannot_do_unicode() -> None:
    class AsciiFile(io.StringIO):
        encoding = "ascii"

    console = Console(record=True, no_color=True, width=120, file=AsciiFile())
    text = render(build_view(snapshot()), console=console)
    assert "#" * 6 in line_with(text, "fast_feedback  ")
    assert "\u2588" not in line_with(text, "fast_feedback  ")


def test_view_of_an_empty_world() -> None:
    first = dataclasses.replace(SAMPLE, interval_seconds=None, disk_read_bytes_per_second=None,
                                disk_write_bytes_per_second=None, net_sent_bytes_per_second=None,
                                net_recv_bytes_per_second=None, swap_total=0)
    text = render(build_view(MonitorSnapshot(sample=first)))
    assert "no pools configured" in text
    assert "not checked yet" in text and "checking" in text
    assert "no alerts" in text
    assert "needs two samples" in line_with(text, "disk")
    assert "none" in line_with(text, "swap")


def test_view_says_when_the_service_check_failed() -> None:
    text = render(build_view(snapshot(services_error="checker crashed")))
    assert "last check failed: checker crashed" in text


def test_view_says_when_the_ledger_could_not_be_read() -> None:
    text = render(build_view(snapshot(ledger_error="the Redis ledger at redis://:***@h/0 cannot be reached")))
    assert "showing the last read" in text and "cannot be reached" in text
    assert "fast_feedback" in text  # the last pools read are still shown


def test_view_never_calls_psutil(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the view must not call psutil")

    for name in ("cpu_percent", "cpu_times", "virtual_memory", "swap_memory", "getloadavg",
                 "disk_io_counters", "net_io_counters", "pids", "process_iter", "cpu_count"):
        monkeypatch.setattr(psutil, name, forbidden)
    assert "fast_feedback" in render(build_view(snapshot()))
    snapshot_to_ndjson_dict(snapshot())


def test_many_allocations_are_cut_short() -> None:
    many = [dict(ALLOCATIONS[0], id=f"alloc-{i:03d}", created_at=NOW - i) for i in range(30)]
    text = render(build_view(snapshot(allocations=many), max_allocations=5))
    assert "Allocations (30 active)" in text
    assert "... and 25 more" in text
    assert "alloc-029" in text and "alloc-000" not in text  # oldest first


# -- NDJSON ---------------------------------------------------------------------------------


def test_ndjson_dict_shape() -> None:
    data = snapshot_to_ndjson_dict(snapshot())
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {"schema_version", "version", "timestamp", "system", "levels", "pools", "allocations",
                         "services", "services_checked_at", "alerts", "conflicts", "ledger_error"}
    assert data["ledger_error"] is None
    assert data["version"] == data["schema_version"] == 1
    assert data["timestamp"] == NOW
    assert data["system"] == SAMPLE.to_dict()
    assert data["levels"] == {"memory_percent": "critical", "cpu_percent": "warning", "load_per_core": "ok",
                              "processes": "ok"}
    assert data["pools"][0] == {
        "layer": "fast_feedback",
        "max_memory_mb": 512, "allocated_memory_mb": 256, "memory_used_percent": 50.0,
        "max_cpu_percent": 50, "allocated_cpu_percent": 10, "cpu_used_percent": 20.0,
        "max_parallel_instances": 8, "active_instances": 2, "instances_used_percent": 25.0,
    }
    assert data["pools"][1]["memory_used_percent"] == 100.0
    assert data["allocations"] == 2
    assert data["services"][1] == {"name": "backend", "status": "unhealthy", "latency_ms": None,
                                   "error": "connection refused"}
    assert data["services_checked_at"] == NOW - 4
    assert data["alerts"] == [{"metric": "memory_percent", "level": "critical", "value": 96.1,
                               "threshold": 95.0, "since": NOW - 8, "duration_seconds": 8.0,
                               "message": "memory at 96.1% (critical, >= 95%) for 8s"}]


def test_pool_utilisation_of_a_zero_limit() -> None:
    empty = pool_utilisation({"layer": "x", "max_memory_mb": 0, "allocated_memory_mb": 0,
                              "max_cpu_percent": 0, "allocated_cpu_percent": 5})
    assert empty["memory_used_percent"] == 0.0
    assert empty["cpu_used_percent"] == 100.0
    assert empty["max_parallel_instances"] == 0 and empty["instances_used_percent"] == 0.0


# -- run_monitor ----------------------------------------------------------------------------


def fixed_snapshots() -> Callable[[], MonitorSnapshot]:
    calls = 0

    def get() -> MonitorSnapshot:
        nonlocal calls
        calls += 1
        return snapshot(sample=dataclasses.replace(SAMPLE, timestamp=NOW + calls))

    return get


def test_run_monitor_json_lines_with_count() -> None:
    out = io.StringIO()
    shown = run_monitor(fixed_snapshots(), interval=0.01, count=3, json_lines=True, out=out, console=None)
    assert shown == 3
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    parsed = [json.loads(line) for line in lines]
    assert [p["timestamp"] for p in parsed] == [NOW + 1, NOW + 2, NOW + 3]
    assert all('": ' not in line and '", "' not in line for line in lines)  # compact separators


def test_run_monitor_with_a_real_sampler() -> None:
    out = io.StringIO()
    run_monitor(SnapshotSource(thresholds=Thresholds()), interval=0.05, count=2, json_lines=True, out=out)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["system"]["interval_seconds"] is None
    assert second["system"]["interval_seconds"] > 0
    assert second["system"]["memory"]["total_bytes"] > 0


def test_a_slow_service_check_never_blocks_the_view() -> None:
    release = threading.Event()

    def slow_services() -> list[dict[str, Any]]:
        release.wait(30)
        return SERVICES

    out = io.StringIO()
    start = time.monotonic()
    try:
        run_monitor(fixed_snapshots(), interval=0.02, count=3, json_lines=True, out=out,
                    services_provider=slow_services, services_interval=60)
    finally:
        release.set()
    assert time.monotonic() - start < 5
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 3
    assert all(line["services"] == [] and line["services_checked_at"] is None for line in lines)


def test_services_poller_keeps_the_last_good_result() -> None:
    calls = 0
    failed, done = threading.Event(), threading.Event()

    def provider() -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            return SERVICES
        if calls == 2:
            failed.set()
            raise RuntimeError("checker crashed")
        done.wait(30)  # hold the third check until the test is over
        return []

    poller = ServicesPoller(provider, interval=0.01, clock=lambda: NOW).start()
    try:
        assert failed.wait(10)
        deadline = time.monotonic() + 10
        while poller.latest()[2] is None and time.monotonic() < deadline:
            threading.Event().wait(0.01)
        services, checked_at, error = poller.latest()
        assert (list(services), checked_at, error) == (SERVICES, NOW, "checker crashed")
        folded = poller.fold_into(snapshot(services=(), services_checked_at=None))
        assert (list(folded.services), folded.services_checked_at, folded.services_error) == (
            SERVICES, NOW, "checker crashed")
    finally:
        poller.stop()
        done.set()


def test_services_poller_reports_an_error() -> None:
    def provider() -> list[dict[str, Any]]:
        raise RuntimeError("checker crashed")

    poller = ServicesPoller(provider, interval=60).start()
    try:
        deadline = time.monotonic() + 10
        while poller.latest()[2] is None and time.monotonic() < deadline:
            threading.Event().wait(0.01)
        assert poller.latest() == ((), None, "checker crashed")
    finally:
        poller.stop()


def test_run_monitor_live_view_on_a_plain_console() -> None:
    console = Console(record=True, no_color=True, width=120, file=io.StringIO())
    shown = run_monitor(fixed_snapshots(), interval=0.01, count=2, json_lines=False, console=console)
    assert shown == 2
    text = console.export_text()
    assert "fast_feedback" in text and "memory" in text


def test_ctrl_c_ends_the_loop_normally() -> None:
    calls = 0

    def get() -> MonitorSnapshot:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt
        return snapshot()

    out = io.StringIO()
    assert run_monitor(get, interval=0.01, count=None, json_lines=True, out=out) == 1
    assert len(out.getvalue().splitlines()) == 1


def test_a_closed_pipe_ends_the_loop_normally() -> None:
    class ClosedPipe(io.StringIO):
        def write(self, s: str) -> int:
            raise BrokenPipeError

    assert run_monitor(fixed_snapshots(), interval=0.01, count=3, json_lines=True, out=ClosedPipe()) == 0


def test_stop_event_ends_a_long_wait_promptly() -> None:
    stop = threading.Event()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(
        run_monitor(fixed_snapshots(), interval=60, count=None, json_lines=True, out=io.StringIO(), stop=stop)))
    thread.start()
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    assert result == [0]


@pytest.mark.parametrize(("interval", "count"), [(0, None), (-1, 1), (1, 0)])
def test_run_monitor_rejects_bad_options(interval: float, count: int | None) -> None:
    with pytest.raises(ValueError):
        run_monitor(fixed_snapshots(), interval=interval, count=count, json_lines=True, out=io.StringIO())


def test_live_view_in_a_real_terminal_and_ctrl_c_exits_zero() -> None:
    pexpect = pytest.importorskip("pexpect")
    script = textwrap.dedent(
        f"""
        from netra_rm.monitor.loop import run_monitor
        from netra_rm.monitor.snapshot import SnapshotSource
        pools = {POOLS!r}
        run_monitor(SnapshotSource(ledger_state=lambda: (pools, [])), interval=0.2, count=None,
                    json_lines=False, out=None, console=None)
        print("monitor ended")
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="120", LINES="60", TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    child = pexpect.spawn(sys.executable, ["-c", script], env=env, encoding="utf-8", codec_errors="replace", timeout=20,
                          dimensions=(60, 120))
    try:
        child.expect("fast_feedback")
        child.expect("memory")
        child.sendintr()
        child.expect("monitor ended")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
