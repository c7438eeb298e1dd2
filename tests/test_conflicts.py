"""`resolve_resource_conflicts`: what is wrong now, one sentence each."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from netra_rm import create_resource_manager
from netra_rm.core.conflicts import find_conflicts
from netra_rm.core.engine import Engine
from netra_rm.core.model import Owner
from netra_rm.ledger import EVERYTHING

BIG = """
layers:
  tiny:
    services: []
    pool: {memory_mb: 300, cpu_percent: 30, instances: 3}
limits: {max_memory_mb: 100000, max_cpu_percent: 100, max_parallel_instances: 1000}
machine: {check_memory: false}
"""
SHRUNK = """
layers:
  tiny:
    services: []
    pool: {memory_mb: 100, cpu_percent: 10, instances: 1}
limits: {max_memory_mb: 150, max_cpu_percent: 100, max_parallel_instances: 1000}
machine: {check_memory: false}
"""


@dataclass(frozen=True)
class Sample:
    memory_percent: float
    cpu_percent: float


def engine(tmp_path: Path, text: str) -> Engine:
    config = tmp_path / f"c{abs(hash(text))}.yaml"
    config.write_text(text)
    return Engine.from_options(config_path=str(config), ledger=str(tmp_path / "ledger.json"), env={})


def fill(e: Engine, n: int, **kw) -> None:
    for _ in range(n):
        e.allocate(e.resolve_request("tiny", "c", memory_mb=100, cpu_percent=10, **kw), e.owner())


def test_no_conflicts_in_a_healthy_ledger(tmp_path: Path) -> None:
    e = engine(tmp_path, BIG)
    fill(e, 2)
    assert find_conflicts(e, sample=Sample(10, 10)) == []


def test_pools_and_caps_over_their_limits_after_the_configuration_shrank(tmp_path: Path) -> None:
    fill(engine(tmp_path, BIG), 2)
    found = find_conflicts(engine(tmp_path, SHRUNK))
    assert "layer tiny is over its memory limit: 200 of 100 MB." in found
    assert "layer tiny is over its CPU limit: 20% of 10%." in found
    assert "layer tiny is over its instance limit: 2 of 1." in found
    assert "the global memory cap is exceeded: 200 of 150 MB." in found


def test_critical_machine_with_active_allocations(tmp_path: Path) -> None:
    e = engine(tmp_path, BIG)
    assert find_conflicts(e, sample=Sample(99, 95)) == []  # nothing active: nothing to say
    fill(e, 1)
    found = find_conflicts(e, sample=Sample(99, 95))
    assert any(c.startswith("system memory is at a critical level (99% >= 95%)") for c in found)
    assert any(c.startswith("system CPU is at a critical level (95% >= 90%)") for c in found)


def test_dedicated_allocation_sharing_its_layer(tmp_path: Path) -> None:
    e = engine(tmp_path, BIG)
    fill(e, 1)
    with e.ledger.transaction(EVERYTHING) as txn:  # as an older netra-rm or a hand edit could leave it
        other = txn.allocations()[0]
        txn.grant(replace(other, id="dddddddddddd", dedicated=True, slots={"layer:tiny": 1}))
    found = find_conflicts(e)
    assert "layer tiny: dedicated allocation dddddddddddd shares the layer with 1 other allocation(s)." in found


def test_reclaimed_allocations_are_reported_and_gone(tmp_path: Path) -> None:
    e = engine(tmp_path, BIG)
    fill(e, 1)
    with e.ledger.transaction(EVERYTHING) as txn:
        a = txn.allocations()[0]
        txn.remove(a)
        txn.grant(replace(a, owner=Owner(host=e.host, user="u", pid=999999999, start="x")))
    found = find_conflicts(e)
    assert found == [f"allocation {a.id} (tiny/c) was reclaimed: its owner process is gone."]
    assert e.active_allocations() == []


def test_agent_resolves_conflicts_and_samples_in_the_background(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(BIG)
    with create_resource_manager(enable_monitoring=True, monitor_interval=0.2, config=str(config),
                                 ledger=str(tmp_path / "l.json"), env={}) as rm:
        assert rm.resolve_resource_conflicts() == []
        assert rm._monitor.wait_for_sample(10)
        metrics = rm.get_resource_status()["system_metrics"]
        assert metrics["memory"]["percent"] > 0 and "cpu" in metrics
    assert rm._monitor is None


def test_agent_has_system_metrics_right_after_it_starts(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(BIG)
    with create_resource_manager(enable_monitoring=True, config=str(config), ledger=str(tmp_path / "l.json"),
                                 env={}) as rm:  # the default 2 s interval
        metrics = rm.get_resource_status()["system_metrics"]
        assert metrics["memory"]["total_bytes"] > 0 and metrics["processes"] > 0
        assert 0.0 <= metrics["cpu"]["percent"] <= 100.0


class _Machine:
    """psutil, with memory figures a test can change while the agent's monitor runs."""

    def __init__(self) -> None:
        import psutil

        self.psutil = psutil
        self.memory = psutil.virtual_memory()

    def __getattr__(self, name: str) -> object:
        return getattr(self.psutil, name)

    def virtual_memory(self) -> object:
        return self.memory


def test_agent_sees_a_critical_machine_through_its_metrics_source(tmp_path: Path) -> None:
    """Figures given to the agent (``metrics_source``, as a test gives them) reach its
    monitor, and an active allocation on a critical machine is a conflict."""
    config = tmp_path / "c.yaml"
    config.write_text(BIG)
    machine = _Machine()
    with create_resource_manager(enable_monitoring=True, monitor_interval=0.2, config=str(config),
                                 ledger=str(tmp_path / "l.json"), env={}, metrics_source=machine) as rm:
        assert rm.allocate_resources("tiny", "c") is not None
        real = machine.memory
        machine.memory = real._replace(percent=97.5, available=real.total // 40)
        found: list[str] = []

        def critical() -> bool:
            found[:] = rm.resolve_resource_conflicts()
            return any("system memory is at a critical level" in c for c in found)

        deadline = time.monotonic() + 10  # the next background sample (every 0.2 s) brings it
        pause = threading.Event()
        while not critical() and time.monotonic() < deadline:
            pause.wait(0.05)
        assert critical(), found
