"""Live use beside the reservation: status shows what each owner's process tree uses now,
an owner using more than it reserved is a conflict in status, layer and monitor, and
OpenMetrics carries a used-memory gauge per allocation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_run import wait_for

HOLD = """
import sys, time
block = bytearray(int(sys.argv[1]) * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture
def hog(tmp_path: Path):
    script = tmp_path / "hold.py"
    script.write_text(HOLD)
    procs: list[subprocess.Popen[str]] = []

    def start(mb: int) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, str(script), str(mb)], stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_an_owner_over_its_reservation_is_a_conflict_everywhere(cli, small_config: Path, hog) -> None:
    proc = hog(150)
    base = ("--config", str(small_config))
    ident = cli(*base, "allocate", "--layer", "tiny", "--category", "big", "--memory-mb", "100", "--owner-pid",
                str(proc.pid)).stdout.strip()
    status = cli(*base, "status", "--json").json()
    (held,) = status["resources"]["active_allocations"]
    assert held["id"] == ident and held["memory_mb"] == 100 and held["used_memory_mb"] >= 150
    expected = f"allocation {ident} (tiny/big) uses"
    assert any(c.startswith(expected) and "more than the 100 MB it reserved" in c
               for c in status["resources"]["conflicts"])
    table = cli(*base, "status")
    assert "used now" in table.stdout and "MB" in table.stdout
    layer = cli(*base, "layer", "tiny", "--json")
    assert layer.code == 1 and any(c.startswith(expected) for c in layer.json()["conflicts"])
    monitor = cli(*base, "monitor", "--json", "--count", "1", "--interval", "0.5", "--services-interval", "0")
    assert any(c.startswith(expected) for c in json.loads(monitor.stdout.splitlines()[0])["conflicts"])
    metrics = cli(*base, "status", "--format", "openmetrics").stdout
    line = next(x for x in metrics.splitlines() if x.startswith("netra_rm_allocation_memory_used_bytes{"))
    assert f'id="{ident}"' in line and float(line.rsplit(" ", 1)[1]) >= 150 * 2**20


def test_within_its_reservation_is_no_conflict(cli, small_config: Path, hog) -> None:
    proc = hog(20)
    base = ("--config", str(small_config))
    cli(*base, "allocate", "--layer", "tiny", "--category", "small", "--memory-mb", "100", "--owner-pid",
        str(proc.pid))
    status = cli(*base, "status", "--json").json()
    assert 20 <= status["resources"]["active_allocations"][0]["used_memory_mb"] < 100
    assert [c for c in status["resources"]["conflicts"] if "it reserved" in c] == []
    assert cli(*base, "layer", "tiny").code == 0


def test_status_says_how_a_running_command_is_enforced(cli, small_config: Path, tmp_path: Path,
                                                       home: Path, ledger_path: Path) -> None:
    import os

    env = {**os.environ, "NETRA_RM_LEDGER": str(ledger_path), "NETRA_RM_ENFORCE_WITH": "watchdog"}
    marker = tmp_path / "started"
    proc = subprocess.Popen([sys.executable, "-m", "netra_rm", "--config", str(small_config), "run", "--layer", "tiny",
                             "--category", "enforced", "--enforce", "--", sys.executable, "-c",
                             f"import time; open({str(marker)!r}, 'w'); time.sleep(60)"], env=env)
    try:
        wait_for(marker.exists, what="CMD to start")
        held = cli("--config", str(small_config), "status", "--json").json()["resources"]["active_allocations"]
        assert held[0]["enforcement"] == "watchdog"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
