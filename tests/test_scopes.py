"""Pool scopes: a ``host`` pool counts one machine's allocations, a ``global`` pool the
whole fleet's; a layer may also draw from shared pools (``uses:``), all or nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from netra_rm.config import load_config
from netra_rm.config.model import SharedPool
from netra_rm.core.accounting import charges
from netra_rm.core.admission import admit
from netra_rm.core.engine import Engine
from netra_rm.core.model import Allocation, Owner, Request
from netra_rm.core.queue import Waiter, would_delay
from netra_rm.ledger import open_ledger
from netra_rm.records import Usage, cpu_units

from backends import Backend

FLEET = """
pools:
  staging_db: {instances: 2, scope: global, description: two slots on the staging database}
  gpu: {instances: 1}
layers:
  local:
    services: []
    pool: {memory_mb: 300, cpu_percent: 30, instances: 3}
  shared:
    services: []
    pool: {memory_mb: 300, cpu_percent: 30, instances: 3, scope: global}
  e2e:
    services: []
    pool: {memory_mb: 1000, cpu_percent: 90, instances: 4}
    uses: [staging_db]
limits: {max_memory_mb: 100000, max_cpu_percent: 1000, max_parallel_instances: 1000}
machine: {check_memory: false}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "netra-rm.yaml"
    path.write_text(FLEET)
    return path


def engine(backend: Backend, config: Path, tmp_path: Path, host: str) -> Engine:
    env = {"NETRA_RM_HOST_ID": host, "XDG_STATE_HOME": str(tmp_path / "state")}
    return Engine(load_config(config, env={}), backend.open(tmp_path / "state"), env=env)


def take(e: Engine, layer: str, n: int = 1) -> list[Allocation | None]:
    request = e.resolve_request(layer, "t", memory_mb=10, cpu_percent=1)
    return [e.try_allocate(request, e.owner())[0] for _ in range(n)]


def test_the_configuration_reads_scopes_and_shared_pools(config: Path) -> None:
    cfg = load_config(config, env={})
    assert cfg.layers["local"].pool.scope == "host"
    assert cfg.layers["shared"].pool.scope == "global"
    assert cfg.layers["e2e"].uses == ("staging_db",)
    assert cfg.pools["staging_db"] == SharedPool(name="staging_db", instances=2, scope="global",
                                                 description="two slots on the staging database")
    assert cfg.pools["gpu"].scope == "host"
    defaults = load_config(env={})
    assert {layer.pool.scope for layer in defaults.layers.values()} == {"host"}  # defaults unchanged
    assert defaults.pools == {}


@pytest.mark.parametrize("text, key", [
    ("layers: {x: {services: [], pool: {memory_mb: 1, cpu_percent: 1, instances: 1, scope: fleet}}}",
     "layers.x.pool.scope"),
    ("layers: {x: {services: [], pool: {memory_mb: 1, cpu_percent: 1, instances: 1}, uses: [nope]}}",
     "layers.x.uses[0]"),
    ("pools: {db: {scope: global}}", "pools.db.instances"),
    ("pools: {db: {instances: 2, colour: red}}", "pools.db.colour"),
])
def test_a_bad_scope_or_pool_name_is_a_config_error_naming_the_key(cli, write_config, text: str, key: str) -> None:
    result = cli("config", "validate", str(write_config(text)))
    assert result.code == 2
    assert key in result.stderr


def test_host_pools_count_each_host_global_pools_the_fleet(server_backend: Backend, config: Path,
                                                         tmp_path: Path) -> None:
    a, b = engine(server_backend, config, tmp_path, "a"), engine(server_backend, config, tmp_path, "b")
    assert all(take(a, "local", 3)) and all(take(b, "local", 3))  # 3 each: the pool is per host
    assert take(a, "local") == [None]
    assert all(take(a, "shared", 2))
    assert all(take(b, "shared", 1))
    assert take(b, "shared") == [None] and take(a, "shared") == [None]  # 3 across the fleet
    status = b.resource_status()
    assert status["resource_pools"]["local"]["active_instances"] == 3
    assert status["resource_pools"]["shared"]["active_instances"] == 3
    assert status["resource_pools"]["shared"]["scope"] == "global"


def test_a_layer_draws_from_its_pool_and_a_shared_one_all_or_nothing(server_backend: Backend, config: Path,
                                                                    tmp_path: Path) -> None:
    hosts = [engine(server_backend, config, tmp_path, h) for h in ("a", "b", "c")]
    first, second = take(hosts[0], "e2e")[0], take(hosts[1], "e2e")[0]
    assert first is not None and first.pools == ("staging_db",)
    assert second is not None
    request = hosts[2].resolve_request("e2e", "t", memory_mb=10, cpu_percent=1)
    refused, decision = hosts[2].try_allocate(request, hosts[2].owner())
    assert refused is None
    assert decision.reasons == ("pool staging_db (global) instances: all 2 in use.",)
    held = sorted(x.id for x in hosts[2].active_allocations())
    assert held == sorted([first.id, second.id])  # nothing half-taken
    assert hosts[2].resource_status()["shared_pools"]["staging_db"]["active_instances"] == 2
    hosts[0].release([first.id])
    assert take(hosts[2], "e2e")[0] is not None


def test_on_the_file_ledger_host_pools_count_every_allocation(tmp_path: Path, config: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.json")
    a = Engine(load_config(config, env={}), ledger, env={"NETRA_RM_HOST_ID": "a"})
    b = Engine(load_config(config, env={}), ledger, env={"NETRA_RM_HOST_ID": "b"})
    assert all(take(a, "local", 2)) and all(take(b, "local", 1))
    assert take(b, "local") == [None]  # one machine, one pool, whatever the host id says


def test_the_shared_pool_rules_are_pure(config: Path) -> None:
    cfg = load_config(config, env={})
    cfg.pools["db"] = SharedPool("db", instances=2, scope="global", memory_mb=150)
    cfg.pools["lic"] = SharedPool("lic", 5)
    request = Request(layer="e2e", category="t", memory_mb=100, cpu_units=cpu_units(5), pools=("db", "lic"))
    found = charges(request, cfg, "a")
    assert [c.key for c in found] == ["layer:e2e@a", "caps@a", "pool:db", "pool:lic@a"]
    capacity = {c.key: c.capacity for c in found}
    assert admit(request, found, capacity=capacity, usage={}, taken={}).admitted
    held = {"pool:db": Usage(100, cpu_units(5), 1, 0)}
    assert admit(request, found, capacity=capacity, usage=held, taken={"pool:db": {0}}).reasons == (
        "pool db (global) memory: 100 of 150 MB in use, 100 MB requested.",)


def test_a_waiter_on_another_host_is_not_delayed_by_this_hosts_use_of_a_host_pool(config: Path) -> None:
    cfg = load_config(config, env={})
    for layer, delayed in (("local", False), ("shared", True)):
        cfg.layers[layer] = cfg.layers[layer].__class__(**{**cfg.layers[layer].__dict__,
                                                           "pool": cfg.layers[layer].pool.__class__(
                                                               300, 30, 1, scope=cfg.layers[layer].pool.scope)})
        request = Request(layer=layer, category="t", memory_mb=10, cpu_units=cpu_units(1))
        theirs = charges(request, cfg, "b")
        waiting = Waiter(id="00000000000b", request=request, owner=Owner("b", "u", pid=1), since=0,
                         charges=tuple(c.key for c in theirs), capacity={c.key: c.capacity for c in theirs})
        mine = charges(request, cfg, "a")
        assert would_delay(request.usage, [c.key for c in mine], waiting) is delayed


def test_status_shows_shared_pools_in_its_tables(cli, config: Path, ledger_path: Path) -> None:
    granted = cli("--config", str(config), "allocate", "--layer", "e2e", "--category", "t", "--memory-mb", "10")
    assert granted.code == 0, granted.stderr
    shown = cli("--config", str(config), "status")
    assert shown.code == 0, shown.stderr
    text = shown.stdout
    assert "Shared pools" in text
    row = next(line for line in text.splitlines() if "staging_db" in line)
    assert "global" in row and "1/2" in row and "no limit" in row
    assert "gpu" in text and "0/1" in next(line for line in text.splitlines() if "gpu" in line)
