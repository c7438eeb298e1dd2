"""Leases on shared ledgers: another host reclaims an allocation whose holder stopped
renewing it; `run`, the Python agent and `allocate --owner-pid` keep theirs alive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from netra_rm.config import load_config
from netra_rm.core.engine import Engine

from backends import Backend

LEASE = 0.6
CONFIG = f"""
layers:
  rig:
    services: []
    pool: {{memory_mb: 100, cpu_percent: 10, instances: 1, scope: global}}
limits: {{max_memory_mb: 100000, max_cpu_percent: 100, max_parallel_instances: 1000}}
machine: {{check_memory: false}}
allocations: {{lease_seconds: {LEASE}}}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "netra-rm.yaml"
    path.write_text(CONFIG)
    return path


def engine(backend: Backend, config: Path, tmp_path: Path, host: str,
           clock: Callable[[], float] | None = None) -> Engine:
    """An engine on ``host``; with ``clock``, the ledger's clock (the server's) is the test's."""
    env = {"NETRA_RM_HOST_ID": host, "XDG_STATE_HOME": str(tmp_path / f"state-{host}")}
    ledger = backend.open(tmp_path / f"state-{host}")
    if clock is not None:
        ledger.clock = clock  # leases are judged by the ledger's clock, not the host's
    return Engine(load_config(config, env={}), ledger, env=env, clock=clock)


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    pause = 0.01
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def test_another_host_reclaims_an_allocation_once_its_lease_lapsed(server_backend: Backend, config: Path,
                                                                   tmp_path: Path) -> None:
    now = [1_900_000_000.0]
    a = engine(server_backend, config, tmp_path, "host-a", clock=lambda: now[0])
    b = engine(server_backend, config, tmp_path, "host-b", clock=lambda: now[0])
    request = a.resolve_request("rig", "hil")
    held = a.allocate(request, a.current_process_owner())
    assert held.lease_expires_at == pytest.approx(now[0] + LEASE)

    now[0] += LEASE - 0.1
    assert b.try_allocate(request, b.current_process_owner())[0] is None  # still leased
    now[0] += 0.2
    taken, _ = b.try_allocate(request, b.current_process_owner())
    assert taken is not None and taken.fencing_token > held.fencing_token
    from netra_rm.core.verify import ledger_history

    reclaim = [e for e in ledger_history(b) if e["event"] == "reclaim"]
    assert [(e["id"], e["reason"]) for e in reclaim] == [(held.id, "lease lapsed")]


def test_its_own_host_keeps_it_while_the_owner_runs(server_backend: Backend, config: Path, tmp_path: Path) -> None:
    now = [1_900_000_000.0]
    a = engine(server_backend, config, tmp_path, "host-a", clock=lambda: now[0])
    request = a.resolve_request("rig", "hil")
    held = a.allocate(request, a.current_process_owner())  # this test process: alive
    now[0] += LEASE * 10
    assert [x.id for x in a.active_allocations()] == [held.id]


def test_renewing_moves_the_lease_and_reports_what_is_gone(server_backend: Backend, config: Path,
                                                           tmp_path: Path) -> None:
    now = [1_900_000_000.0]
    a = engine(server_backend, config, tmp_path, "host-a", clock=lambda: now[0])
    held = a.allocate(a.resolve_request("rig", "hil"), a.current_process_owner())
    now[0] += LEASE / 2
    assert a.renew([held.id, "nosuchid0000"]) == ["nosuchid0000"]
    assert a.active_allocations()[0].lease_expires_at == pytest.approx(now[0] + LEASE)


def test_a_vanished_hosts_allocation_is_reclaimed_by_lease_expiry(server_backend: Backend, config: Path,
                                                                  tmp_path: Path) -> None:
    """A process on host "ghost" takes the rig and is killed outright: nobody on its host
    remains to see it die, so only the lease tells; another host gets the rig."""
    code = ("import sys, time\n"
            "from netra_rm.core.engine import Engine\n"
            "e = Engine.from_options(config_path=sys.argv[1], ledger=sys.argv[2])\n"
            "a = e.allocate(e.resolve_request('rig', 'ghost'), e.current_process_owner())\n"
            "print(a.id, flush=True)\n"
            "time.sleep(600)\n")
    env = {**os.environ, "NETRA_RM_HOST_ID": "ghost", "XDG_STATE_HOME": str(tmp_path / "state-ghost")}
    ghost = subprocess.Popen([sys.executable, "-c", code, str(config), server_backend.location], env=env,
                             stdout=subprocess.PIPE, text=True)
    ghost_id = ghost.stdout.readline().strip()
    ghost.kill()
    ghost.wait()
    killed_at = time.monotonic()

    b = engine(server_backend, config, tmp_path, "host-b")
    from netra_rm.core.waiting import allocate_waiting

    taken = allocate_waiting(b, b.resolve_request("rig", "hil"), b.current_process_owner(), wait=True, timeout=15)
    assert taken.id != ghost_id
    assert time.monotonic() - killed_at < LEASE + 3
    from netra_rm.core.verify import ledger_history

    assert ("reclaim", ghost_id, "lease lapsed") in [(e["event"], e.get("id"), e.get("reason"))
                                                      for e in ledger_history(b)]


def observe_renewals(backend: Backend, config: Path, tmp_path: Path, count: int) -> str:
    """Watch from host-b until the one allocation's lease was renewed ``count`` times,
    checking at every look that host-b cannot take the rig; the allocation's id."""
    b = engine(backend, config, tmp_path, "host-b")
    request = b.resolve_request("rig", "other")
    wait_for(lambda: b.active_allocations() != [], timeout=20, what="host-a's allocation")
    seen: set[float] = set()
    ident = ""

    def renewed() -> bool:
        nonlocal ident
        held = b.active_allocations()
        if held:
            ident = held[0].id
            seen.add(held[0].lease_expires_at)
        assert b.try_allocate(request, b.current_process_owner())[0] is None, "the lease lapsed"
        return len(seen) >= count

    wait_for(renewed, timeout=LEASE * (count + 6), what=f"{count} renewals")
    return ident


def test_the_python_agent_renews_its_leases(server_backend: Backend, config: Path, tmp_path: Path) -> None:
    from netra_rm import ResourceRequirements, create_resource_manager

    env = {"NETRA_RM_HOST_ID": "host-a", "XDG_STATE_HOME": str(tmp_path / "state-a")}
    with create_resource_manager(enable_monitoring=False, config=str(config), ledger=server_backend.location,
                                 env=env) as rm:
        ident = rm.allocate_resources("rig", "hil", ResourceRequirements())
        assert ident is not None
        assert observe_renewals(server_backend, config, tmp_path, 4) == ident
    b = engine(server_backend, config, tmp_path, "host-b")
    assert b.active_allocations() == []


def test_run_renews_the_lease_while_the_command_runs(cli, server_backend: Backend, config: Path,
                                                     tmp_path: Path) -> None:
    go = tmp_path / "go"
    env = {**os.environ, "NETRA_RM_LEDGER": server_backend.location, "NETRA_RM_CONFIG": str(config),
           "NETRA_RM_HOST_ID": "host-a", "XDG_STATE_HOME": str(tmp_path / "state-a")}
    wait_file = f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.02)\n"
    run = subprocess.Popen([sys.executable, "-m", "netra_rm", "run", "--layer", "rig", "--category", "hil", "--",
                            sys.executable, "-c", wait_file], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        observe_renewals(server_backend, config, tmp_path, 4)
    finally:
        go.touch()
    out, err = run.communicate(timeout=30)
    assert run.returncode == 0, err
    assert err == ""
    assert engine(server_backend, config, tmp_path, "host-b").active_allocations() == []


def test_allocate_owner_pid_leaves_a_keeper_that_releases_when_the_owner_ends(
        cli, server_backend: Backend, config: Path, tmp_path: Path) -> None:
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    env = {"NETRA_RM_LEDGER": server_backend.location, "NETRA_RM_CONFIG": str(config), "NETRA_RM_HOST_ID": "host-a",
           "XDG_STATE_HOME": str(tmp_path / "state-a")}
    began = time.monotonic()
    result = cli("allocate", "--layer", "rig", "--category", "hil", "--owner-pid", str(owner.pid), env=env)
    assert result.code == 0, result.stderr
    assert time.monotonic() - began < 10  # returned at once: the keeper is detached, stdout closed
    ident = result.stdout.strip()
    try:
        assert observe_renewals(server_backend, config, tmp_path, 4) == ident
    finally:
        owner.send_signal(signal.SIGTERM)
        owner.wait()
    b = engine(server_backend, config, tmp_path, "host-b")
    wait_for(lambda: b.active_allocations() == [], timeout=10, what="the keeper to release it")
    from netra_rm.core.verify import ledger_history

    assert ("release", ident) in [(e["event"], e.get("id")) for e in ledger_history(b)]


def test_a_waiter_on_a_vanished_host_leaves_the_queue_when_its_lease_lapses(server_backend: Backend,
                                                                            config: Path, tmp_path: Path) -> None:
    now = [1_900_000_000.0]
    a = engine(server_backend, config, tmp_path, "host-a", clock=lambda: now[0])
    b = engine(server_backend, config, tmp_path, "host-b", clock=lambda: now[0])
    request = a.resolve_request("rig", "hil")
    a.allocate(request, a.current_process_owner())
    _, waiter, _ = b.allocate_or_join(request, b.current_process_owner(), waiter_id="0000aaa1",
                                      waiter_owner=b.current_process_owner())
    assert waiter is not None and [w.id for w in a.queue()] == ["0000aaa1"]
    now[0] += LEASE / 2
    b.try_admit_waiter(waiter, b.current_process_owner())  # checks in: renewed
    now[0] += LEASE * 0.8
    assert [w.id for w in a.queue()] == ["0000aaa1"]
    now[0] += LEASE
    assert a.queue() == []  # host-b stopped checking in
