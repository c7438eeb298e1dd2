"""A fleet sharing one ledger: each pool counted one way everywhere, capacity held in
the ledger, named instances, ad-hoc pools, pool administration and priorities. Most run
on all three ledgers with several host ids; engines are called in-process, the CLI only
where what a user sees is the point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netra_rm.config import load_config
from netra_rm.core.conflicts import find_conflicts
from netra_rm.core.engine import Engine
from netra_rm.core.readiness import check_layer
from netra_rm.core.verify import verify_ledger
from netra_rm.errors import CapacityMismatchError, NoCapacityError, UsageError

from backends import Backend

FLEET = """
pools:
  licences: {{instances: {licences}, scope: global}}
  staging_db:
    scope: global
    instances:
      - {{name: db1, properties: {{url: "postgresql://ci:db1-S3cret@db1.ci/app", port: 5433}}}}
      - {{name: db2, properties: {{url: "postgresql://ci:db2-S3cret@db2.ci/app", port: 5434}}}}
layers:
  e2e:
    services: []
    pool: {{memory_mb: 1000, cpu_percent: 50, instances: 2}}
  lic:
    services: []
    pool: {{memory_mb: 1000, cpu_percent: 50, instances: 5}}
    uses: [licences]
  db:
    services: []
    pool: {{memory_mb: 1000, cpu_percent: 50, instances: 5}}
    uses: [staging_db]
  shared:
    services: []
    pool: {{memory_mb: 1000, cpu_percent: 50, instances: 2, scope: global}}
limits: {{max_memory_mb: 100000, max_cpu_percent: 1000, max_parallel_instances: 1000}}
machine: {{check_memory: false}}
"""


def make(backend: Backend, tmp_path: Path, host: str, *, licences: int = 1) -> Engine:
    path = tmp_path / f"fleet-{licences}.yaml"
    path.write_text(FLEET.format(licences=licences))
    env = {"NETRA_RM_HOST_ID": host, "XDG_STATE_HOME": str(tmp_path / f"state-{host}")}
    return Engine(load_config(path, env={}), backend.open(tmp_path / f"state-{host}"), env=env)


def take(e: Engine, layer: str | None, *, pools: tuple[str, ...] = (), instances: int | None = None,
         priority: int = 0):
    amounts = {"memory_mb": 10, "cpu_percent": 1} if layer is not None else {}
    request = e.resolve_request(layer, "t", pools=pools, instances=instances, priority=priority, **amounts)
    return e.try_allocate(request, e.owner())


# -- one accounting rule ---------------------------------------------------------------------------

def test_a_host_counts_only_what_counts_there(server_backend: Backend, tmp_path: Path) -> None:
    """Hosts B and D each hold an e2e slot (a per-host pool of 2); host C holds nothing:
    C's layer gate is ready, its status, conflicts and metrics show nothing held."""
    b, c, d = (make(server_backend, tmp_path, h) for h in ("hostB", "hostC", "hostD"))
    assert take(b, "e2e")[0] and take(d, "e2e")[0] and take(b, "e2e")[0]
    verdict = check_layer(c, "e2e")
    assert verdict.ready, verdict.pool_reasons + verdict.conflicts
    assert verdict.pool["active_instances"] == 0
    assert c.resource_status()["resource_pools"]["e2e"]["active_instances"] == 0
    assert b.resource_status()["resource_pools"]["e2e"]["active_instances"] == 2
    assert find_conflicts(c) == [] and find_conflicts(b) == []
    from netra_rm.render.openmetrics import render_openmetrics

    text = render_openmetrics(c.resource_status(), {"services": {}, "healthy_services": 0, "total_services": 0},
                              now=time.time(), version="test")
    assert 'netra_rm_pool_instances_active{layer="e2e"} 0' in text
    assert take(c, "e2e")[0] is not None  # and admission agrees with the gate
    # a global layer pool counts the fleet, everywhere
    assert take(b, "shared")[0] and take(d, "shared")[0]
    assert c.resource_status()["resource_pools"]["shared"]["active_instances"] == 2
    assert not check_layer(c, "shared").ready


# -- capacity held in the ledger ---------------------------------------------------------------------

def test_the_first_host_registers_a_global_pool_and_a_disagreeing_host_is_refused(backend: Backend,
                                                                                   tmp_path: Path) -> None:
    a = make(backend, tmp_path, "hostA", licences=1)
    b = make(backend, tmp_path, "hostB", licences=3)
    assert take(a, "lic")[0] is not None
    with pytest.raises(CapacityMismatchError) as info:
        take(b, "lic")
    text = str(info.value)
    assert "pool licences (global)" in text and "says 3 instance(s)" in text and "holds 1 instance(s)" in text
    assert any("netra-rm pool set licences --instances N" in step for step in info.value.remediation)
    assert a.resource_status()["shared_pools"]["licences"]["active_instances"] == 1


def test_pool_set_changes_capacity_for_everyone_and_verify_judges_by_the_capacity_of_the_time(
        backend: Backend, tmp_path: Path) -> None:
    a = make(backend, tmp_path, "hostA", licences=1)
    b = make(backend, tmp_path, "hostB", licences=3)
    first, _ = take(a, "lic")
    assert first is not None and take(a, "lic")[0] is None
    record = a.change_pool("licences", instances=3)
    assert record.capacity.instances == 3 and record.source == "admin"
    assert take(b, "lic")[0] is not None  # the ledger's figure wins over every configuration now
    assert take(a, "lic")[0] is not None
    assert take(b, "lic")[0] is None  # 3 of 3
    a.change_pool("licences", instances=1)  # shrink: the three run on, nothing new until under 1
    assert take(a, "lic")[0] is None
    report = verify_ledger(a)
    assert report.clean, report.findings
    pools = {p["name"]: p for p in b.pools()}
    assert pools["licences"]["max_parallel_instances"] == 1 and pools["licences"]["active_instances"] == 3
    assert any("licences" in c and "over its instance limit: 3 of 1" in c for c in find_conflicts(a))


def test_a_drained_pool_refuses_new_requests_with_exit_3_and_resumes(cli, backend: Backend, tmp_path: Path) -> None:
    config = tmp_path / "fleet.yaml"
    config.write_text(FLEET.format(licences=2))
    env = {"NETRA_RM_LEDGER": backend.location, "NETRA_RM_CONFIG": str(config)}
    held = cli("allocate", "--layer", "lic", "--category", "t", env=env)
    assert held.code == 0, held.stderr
    drained = cli("pool", "drain", "licences", env=env)
    assert drained.code == 0 and "draining" in drained.stdout
    refused = cli("allocate", "--layer", "lic", "--category", "t", env=env)
    assert refused.code == 3
    assert "pool licences (global) is draining" in refused.stderr and "netra-rm pool resume licences" in refused.stderr
    status = cli("status", "--json", env=env).json()["resources"]
    assert status["shared_pools"]["licences"]["drained"] is True
    assert "DRAINING" in cli("status", env={**env, "COLUMNS": "200"}).stdout
    assert [a["id"] for a in status["active_allocations"]] == [held.stdout.strip()]  # holders run on
    assert cli("pool", "resume", "licences", env=env).code == 0
    assert cli("allocate", "--layer", "lic", "--category", "t", env=env).code == 0
    shown = cli("pool", "show", "licences", "--json", env=env).json()["pools"]
    assert shown[0]["active_instances"] == 2 and shown[0]["drained"] is False
    history = cli("history", "--json", env=env).json()["events"]
    assert [e["action"] for e in history if e["event"] == "pool"] == ["register", "drain", "resume"]


def test_growing_a_pool_wakes_its_waiter(cli, backend: Backend, tmp_path: Path) -> None:
    config = tmp_path / "fleet.yaml"
    config.write_text(FLEET.format(licences=1))
    env = {**os.environ, "NETRA_RM_LEDGER": backend.location, "NETRA_RM_CONFIG": str(config)}
    assert cli("allocate", "--layer", "lic", "--category", "t", env=env).code == 0
    waiter = subprocess.Popen([sys.executable, "-m", "netra_rm", "allocate", "--layer", "lic", "--category", "w",
                               "--wait", "--timeout", "60"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not cli("status", "--json", env=env).json()["resources"]["waiters"]:
        assert time.monotonic() < deadline, "the waiter never joined the queue"
        time.sleep(0.05)
    grown = time.monotonic()
    assert cli("pool", "set", "licences", "--instances", "2", env=env).code == 0
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert time.monotonic() - grown < 4, "woken by the change, not by its next timer"


def test_pool_commands_refuse_what_they_cannot_do(cli, small_config: Path) -> None:
    unknown = cli("--config", str(small_config), "pool", "set", "nosuch", "--instances", "2")
    assert unknown.code == 2 and "pool nosuch is not known" in unknown.stderr
    nothing = cli("--config", str(small_config), "pool", "set", "tiny")
    assert nothing.code == 2 and "say what to change" in nothing.stderr
    bad = cli("--config", str(small_config), "pool", "set", "tiny", "--instances", "-1")
    assert bad.code == 2


# -- ad-hoc pools ------------------------------------------------------------------------------------

def test_an_ad_hoc_pool_is_a_fleet_wide_lock_with_no_configuration(backend: Backend, tmp_path: Path) -> None:
    a, b = make(backend, tmp_path, "hostA"), make(backend, tmp_path, "hostB")
    first, _ = take(a, None, pools=("deploy",), instances=1)
    assert first is not None and first.layer is None and first.charges == ("pool:deploy",)  # no memory: no caps
    second, decision = take(b, None, pools=("deploy",))
    assert second is None and decision.reasons == ("pool deploy (global) instances: all 1 in use.",)
    with pytest.raises(CapacityMismatchError, match="pool deploy"):
        take(b, None, pools=("deploy",), instances=2)
    with pytest.raises(UsageError, match="not known to the ledger"):
        take(b, None, pools=("never-seen",))
    a.release([first.id])
    assert take(b, None, pools=("deploy",))[0] is not None


def test_run_with_an_ad_hoc_pool_and_no_layer(cli, tmp_path: Path) -> None:
    script = tmp_path / "show.py"
    script.write_text("import os\nprint(os.environ['NETRA_RM_ALLOCATION_ID'], os.environ['NETRA_RM_LAYER'] or '-')\n")
    result = cli("run", "--pool", "deploy", "--instances", "1", "--category", "deploy", "--", sys.executable,
                 str(script))
    assert result.code == 0, result.stderr
    ident, layer = result.stdout.split()
    assert len(ident) == 12 and layer == "-"
    missing = cli("run", "--category", "deploy", "--", "true")
    assert missing.code == 2 and "--layer LAYER, or --pool NAME" in missing.stderr


# -- named instances -------------------------------------------------------------------------------

def test_named_instances_are_never_held_twice_whatever_the_layer(backend: Backend, tmp_path: Path) -> None:
    a, b = make(backend, tmp_path, "hostA"), make(backend, tmp_path, "hostB")
    one, _ = take(a, "db")
    two, _ = take(b, None, pools=("staging_db",))
    assert {one.instances["pool:staging_db"], two.instances["pool:staging_db"]} == {"db1", "db2"}
    assert take(a, "db")[0] is None
    a.release([one.id])
    three, _ = take(b, "db")
    assert three.instances["pool:staging_db"] == one.instances["pool:staging_db"]


def test_run_gives_cmd_its_named_instance_and_no_output_shows_the_password(cli, tmp_path: Path,
                                                                          ledger_path: Path) -> None:
    config = tmp_path / "fleet.yaml"
    config.write_text(FLEET.format(licences=1))
    script = tmp_path / "env.py"
    script.write_text("import json, os\nprint(json.dumps({k: v for k, v in os.environ.items() "
                      "if k.startswith('NETRA_RM_')}))\n")
    env = {"NETRA_RM_CONFIG": str(config)}
    held = cli("allocate", "--layer", "db", "--category", "t", "--json", env=env)
    assert held.code == 0 and held.json()["instances"] == {"staging_db": "db1"}
    ran = cli("run", "--layer", "db", "--category", "t", "--", sys.executable, str(script), env=env)
    assert ran.code == 0, ran.stderr
    seen = json.loads(ran.stdout)
    assert seen["NETRA_RM_INSTANCE"] == "db2" and seen["NETRA_RM_INSTANCE_PORT"] == "5434"
    assert seen["NETRA_RM_INSTANCE_URL"] == "postgresql://ci:db2-S3cret@db2.ci/app"
    assert seen["NETRA_RM_POOL_STAGING_DB_INSTANCE"] == "db2"
    outputs = [cli("status", "--json", env=env).stdout, cli("status", env={**env, "COLUMNS": "200"}).stdout,
               cli("pool", "show", "--json", env=env).stdout, cli("history", "--json", env=env).stdout,
               ledger_path.read_text(), ledger_path.with_name("ledger.json.journal").read_text()]
    for text in outputs:
        assert "S3cret" not in text
    assert "db1" in outputs[1]


# -- priorities ---------------------------------------------------------------------------------------

def test_higher_priority_waiters_are_served_first(backend: Backend, tmp_path: Path) -> None:
    e = make(backend, tmp_path, "hostA")
    me = e.current_process_owner()
    holder = e.allocate(e.resolve_request("shared", "holder", memory_mb=600, cpu_percent=1), me)
    low = e.resolve_request("shared", "pr", memory_mb=600, cpu_percent=1, priority=0)
    high = e.resolve_request("shared", "release", memory_mb=600, cpu_percent=1, priority=10)
    _, w_low, _ = e.allocate_or_join(low, me, waiter_id="00000000001a", waiter_owner=me)
    _, w_high, _ = e.allocate_or_join(high, me, waiter_id="00000000001b", waiter_owner=me)
    assert [w.id for w in e.queue()] == [w_high.id, w_low.id]  # the later one, by priority
    e.release([holder.id])  # hands the room to the first in rank, in the same transaction
    assert [a.id for a in e.active_allocations()] == [w_high.id]
    refused, decision = e.try_admit_waiter(w_low, me)
    assert refused is None and "600 of 1000 MB in use" in decision.reasons[0]
    granted, _ = e.try_admit_waiter(w_high, me)
    assert granted is not None and granted.category == "release"
    with pytest.raises(NoCapacityError, match="queued ahead"):  # a newcomer below the low waiter's rank
        e.allocate(e.resolve_request("shared", "newcomer", memory_mb=100, cpu_percent=1, priority=-1), me)


HAND_ON = """
layers:
  one: {services: [], pool: {memory_mb: 1000, cpu_percent: 50, instances: 1, scope: global}}
  side: {services: [], pool: {memory_mb: 1000, cpu_percent: 50, instances: 5}}
limits: {max_memory_mb: 100000, max_cpu_percent: 1000, max_parallel_instances: 1}
machine: {check_memory: false}
"""


def test_a_release_hands_on_only_to_a_waiter_whose_every_key_it_read(server_backend: Backend, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A waiter that joined after the release found which keys to lock (made here by
    locking only the released allocation's keys) is not granted on keys not read: host B
    runs as many allocations as its caps allow, and still does after the release."""
    from netra_rm.ledger import Scope

    path = tmp_path / "hand-on.yaml"
    path.write_text(HAND_ON)

    def engine(host: str) -> Engine:
        env = {"NETRA_RM_HOST_ID": host, "XDG_STATE_HOME": str(tmp_path / f"state-{host}")}
        return Engine(load_config(path, env={}), server_backend.open(tmp_path / f"state-{host}"), env=env)

    a, b = engine("hostA"), engine("hostB")
    held = a.allocate(a.resolve_request("one", "t", memory_mb=10, cpu_percent=1), a.owner())
    b.allocate(b.resolve_request("side", "t", memory_mb=10, cpu_percent=1), b.owner())
    me = b.current_process_owner()
    _, waiter, _ = b.allocate_or_join(b.resolve_request("one", "w", memory_mb=10, cpu_percent=1), me,
                                      waiter_id="0000000000b1", waiter_owner=me)
    assert waiter is not None
    monkeypatch.setattr(a, "_release_scope", lambda wanted: Scope(keys=frozenset(held.charges), ids=tuple(wanted)))
    a.release([held.id])
    assert sorted(x.category for x in b.active_allocations()) == ["t"]  # host B: 1 of 1, not 2
    granted, decision = b.try_admit_waiter(waiter, me)
    assert granted is None and "instance cap: all 1 in use" in " ".join(decision.reasons), decision.reasons


def test_the_wake_carries_the_allocation_handed_to_the_waiter(server_backend: Backend, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The commit that hands the room on wakes the waiter with the allocation's record:
    the waiter takes it without reading the ledger."""
    path = tmp_path / "hand-on.yaml"
    path.write_text(HAND_ON)
    env = {"NETRA_RM_HOST_ID": "hostA", "XDG_STATE_HOME": str(tmp_path / "state")}
    engine = Engine(load_config(path, env={}), server_backend.open(tmp_path / "state"), env=env)
    me = engine.current_process_owner()
    request = engine.resolve_request("one", "t", memory_mb=10, cpu_percent=1)
    held = engine.allocate(request, me)
    _, waiter, _ = engine.allocate_or_join(request, me, waiter_id="0000000000e1", waiter_owner=me)
    assert waiter is not None
    channel = engine.ledger.waiter_channel(waiter.id)
    try:
        engine.release([held.id])
        assert channel.wait(10) is True
        handed = channel.handed
        assert handed is not None and handed.id == waiter.id and handed.owner == me
        monkeypatch.setattr(engine, "_handed", lambda ident: pytest.fail("the ledger was read"))
        granted, decision = engine.try_admit_waiter(waiter, me, handed=handed)
        assert granted == handed and decision.admitted
    finally:
        channel.close()
    assert [a.id for a in engine.active_allocations()] == [waiter.id]


def test_a_wake_carries_only_the_allocation_of_its_own_waiter() -> None:
    from netra_rm.ledger.base import Changes, handed_in, wake_payloads
    from netra_rm.records import Allocation, Owner

    mine = Allocation(id="0000000000f1", layer="one", category="t", memory_mb=1, cpu_units=0, dedicated=False,
                      requires=(), created_at=1.0, expires_at=2.0, owner=Owner("h", "u"), fencing_token=3)
    changes = Changes(grants=[mine], wake=["0000000000f1", "0000000000f2"])
    assert wake_payloads(changes, limit=10_000) == [mine.json, "0000000000f2"]
    assert wake_payloads(changes, limit=10) == ["0000000000f1", "0000000000f2"]  # too long: a bare wake
    assert handed_in(mine.json, "0000000000f1") == mine
    assert handed_in(mine.json.encode(), "0000000000f1") == mine
    assert handed_in(mine.json, "0000000000f2") is None  # another waiter's
    assert handed_in("0000000000f1", "0000000000f1") is None and handed_in(b"!", "0000000000f1") is None
    assert handed_in('{"id": "0000000000f1"}', "0000000000f1") is None  # not a whole record
