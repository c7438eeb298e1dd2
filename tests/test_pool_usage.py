"""The monitor's per-tick ledger read (`Engine.pool_usage`): no lock, nothing written,
except to reclaim what a transaction would reclaim."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from netra_rm.core.engine import Engine

CONFIG = """
layers:
  unit:
    services: []
    pool: {memory_mb: 1000, cpu_percent: 50, instances: 4}
  api:
    services: []
    pool: {memory_mb: 2000, cpu_percent: 80, instances: 2}
limits: {max_memory_mb: 100000, max_cpu_percent: 100, max_parallel_instances: 100}
machine: {check_memory: false}
"""


def make_engine(tmp_path: Path) -> Engine:
    (tmp_path / "netra-rm.yaml").write_text(CONFIG)
    return Engine.from_options(config_path=str(tmp_path / "netra-rm.yaml"),
                               ledger=str(tmp_path / "ledger" / "ledger.json"), env={})


def grant(engine: Engine, layer: str, memory_mb: int, *, pid: int | None = None) -> str:
    request = engine.resolve_request(layer, "tests", memory_mb=memory_mb, cpu_percent=10)
    return engine.allocate(request, engine.owner(pid)).id


def test_pools_and_allocations_match_the_full_status(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    grant(engine, "unit", 300)
    grant(engine, "api", 700)
    pools, allocations = engine.pool_usage()
    status = engine.resource_status()
    assert pools == status["resource_pools"]
    assert pools["unit"]["allocated_memory_mb"] == 300 and pools["api"]["active_instances"] == 1
    assert [a["id"] for a in allocations] == [a["id"] for a in status["active_allocations"]]
    assert {"age_seconds", "expires_in_seconds", "owner"} <= set(allocations[0])


def test_reading_does_not_wait_for_a_writer_holding_the_lock(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    ident = grant(engine, "unit", 300)
    lock = tmp_path / "ledger" / "ledger.json.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, sys\n"
         f"f = open({str(lock)!r}, 'a')\n"
         "fcntl.flock(f, fcntl.LOCK_EX)\n"
         "print('locked', flush=True)\n"
         "sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        # a transaction would block here until the holder lets go
        seen: list[tuple[dict, list]] = []
        reader = threading.Thread(target=lambda: seen.append(make_engine(tmp_path).pool_usage()), daemon=True)
        reader.start()
        reader.join(10)
        assert seen, "pool_usage waited for the ledger lock"
        pools, allocations = seen[0]
        assert [a["id"] for a in allocations] == [ident]
        assert pools["unit"]["allocated_memory_mb"] == 300
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)


def test_reading_writes_nothing_while_all_allocations_hold(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    grant(engine, "unit", 300)
    ledger = tmp_path / "ledger" / "ledger.json"
    before = (ledger.read_bytes(), ledger.stat().st_ino, ledger.stat().st_mtime_ns)
    for _ in range(3):
        engine.pool_usage()
    assert (ledger.read_bytes(), ledger.stat().st_ino, ledger.stat().st_mtime_ns) == before


def test_a_dead_owners_allocation_is_reclaimed_and_not_shown(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    owner = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    kept = grant(engine, "unit", 100)
    doomed = grant(engine, "unit", 300, pid=owner.pid)
    assert engine.pool_usage()[0]["unit"]["allocated_memory_mb"] == 400
    assert owner.stdin is not None
    owner.stdin.close()
    owner.wait(timeout=30)

    pools, allocations = make_engine(tmp_path).pool_usage()
    assert [a["id"] for a in allocations] == [kept]
    assert pools["unit"]["allocated_memory_mb"] == 100
    # reclaimed in the ledger and the journal, as any transaction would have
    assert [a.id for a in make_engine(tmp_path).ledger.read().allocations] == [kept]
    journal = (tmp_path / "ledger" / "ledger.json.journal").read_text()
    assert '"reclaim"' in journal and doomed in journal
