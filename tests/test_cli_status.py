"""`status`, `layer`, `graph`, `config` and the seed's flags, through the real entry point."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

SECRET = "hunter2-Zq9"
DOWN = "127.0.0.1:9"  # the discard port: nothing listens there
ENV_DOWN = {"DATABASE_URL": f"postgresql://app:{SECRET}@{DOWN}/app", "REDIS_URL": f"redis://:{SECRET}@{DOWN}/0",
            "CLICKHOUSE_URL": f"http://default:{SECRET}@{DOWN}/", "BACKEND_URL": f"http://{DOWN}",
            "AUTH_SERVICE_URL": f"http://{DOWN}", "FRONTEND_URL": f"http://{DOWN}", "WEBSOCKET_URL": f"ws://{DOWN}/ws"}


def test_status_json_has_the_contract_shape(cli) -> None:
    r = cli("status", "--json", env=ENV_DOWN)
    assert r.code == 0, r.stderr
    data = r.json()
    assert set(data) >= {"resources", "services"}
    resources, services = data["resources"], data["services"]
    assert set(resources) >= {"total_allocations", "resource_pools", "active_allocations", "system_metrics"}
    pool = resources["resource_pools"]["fast_feedback"]
    for key in ("max_memory_mb", "allocated_memory_mb", "available_memory_mb", "max_cpu_percent",
                "allocated_cpu_percent", "available_cpu_percent", "max_parallel_instances", "active_instances",
                "available_instances"):
        assert key in pool
    assert (pool["max_memory_mb"], pool["max_cpu_percent"], pool["max_parallel_instances"]) == (512, 50, 8)
    assert services["total_services"] == 7 and services["healthy_services"] == 0
    for s in services["services"].values():
        assert s["status"] in ("healthy", "unhealthy", "blocked", "unknown")
        assert set(s) >= {"status", "url", "latency_ms", "error", "depends_on", "blocked_by"}
    assert services["services"]["backend"]["status"] == "blocked"
    assert resources["system_metrics"]["capacity"]["memory_source"] in ("host", "cgroup v1", "cgroup v2")


def test_status_exits_0_but_strict_exits_1_when_a_service_is_down(cli) -> None:
    assert cli("status", env=ENV_DOWN).code == 0
    r = cli("status", "--strict", env=ENV_DOWN)
    assert r.code == 1


def test_seed_status_flag_is_the_status_command(cli) -> None:
    flag, command = cli("--status", "--json", env=ENV_DOWN), cli("--json", "status", env=ENV_DOWN)
    assert flag.code == command.code == 0
    assert set(flag.json()) == set(command.json())


def test_status_tables_show_pools_and_allocations(cli) -> None:
    aid = cli("allocate", "--layer", "core_integration", "--category", "db_tests").stdout.strip()
    r = cli("status", env={**ENV_DOWN, "NO_COLOR": "1"})
    assert r.code == 0
    for words in ("Pools", "core_integration", "Allocations (1)", aid, "db_tests", "UNHEALTHY", "BLOCKED",
                  "blocked by postgresql, redis"):
        assert words in r.stdout, words
    assert "\x1b[" not in r.stdout


def test_layer_without_services_is_ready(cli) -> None:
    r = cli("layer", "fast_feedback", "--json")
    assert r.code == 0, r.stderr
    data = r.json()
    assert (data["layer"], data["ready"], data["missing"]) == ("fast_feedback", True, [])
    assert data["pool"]["max_parallel_instances"] == 8 and data["services"] == {}
    assert cli("--layer", "fast_feedback").code == 0


def test_layer_with_a_service_down_exits_1_naming_it_and_the_fix(cli) -> None:
    r = cli("layer", "core_integration", env=ENV_DOWN)
    assert r.code == 1
    assert "NOT READY" in r.stdout
    assert "missing: postgresql" in r.stderr and "missing: redis" in r.stderr
    assert "DATABASE_URL" in r.stderr


def test_layer_json_shape_when_not_ready(cli) -> None:
    r = cli("--json", "layer", "service_integration", env=ENV_DOWN)
    assert r.code == 1
    data = r.json()
    assert set(data) >= {"layer", "ready", "missing", "services", "pool"}
    assert data["ready"] is False
    assert set(data["missing"]) == {"postgresql", "redis", "auth", "backend"}
    assert data["services"]["auth"]["blocked_by"] == ["postgresql", "redis"]


def test_full_pool_makes_the_layer_not_ready(cli, small_config: Path) -> None:
    cfg = ["--config", str(small_config)]
    cli(*cfg, "allocate", "--layer", "tiny", "--category", "c", "--dedicated")
    r = cli(*cfg, "--json", "layer", "tiny")
    assert r.code == 1 and r.json()["ready"] is False and r.json()["missing"] == []
    assert any("dedicated" in reason for reason in r.json()["pool"]["reasons"])


def test_password_appears_nowhere(cli, ledger_path: Path) -> None:
    outputs = [cli("status", env=ENV_DOWN), cli("--json", "status", env=ENV_DOWN),
               cli("layer", "e2e_background", env=ENV_DOWN), cli("--json", "layer", "core_integration", env=ENV_DOWN),
               cli("config", "show", env=ENV_DOWN), cli("--json", "config", "show", env=ENV_DOWN),
               cli("allocate", "--layer", "core_integration", "--category", "c", "--requires", "postgresql",
                   env=ENV_DOWN),
               cli("--json", "monitor", "--count", "1", "--interval", "0.5", env=ENV_DOWN),
               cli("--ledger", f"redis://u:{SECRET}@{DOWN}/0", "status", env=ENV_DOWN)]
    for r in outputs:
        assert SECRET not in r.stdout and SECRET not in r.stderr
    assert "***" in cli("config", "show", env=ENV_DOWN).stdout
    assert not ledger_path.exists() or SECRET not in ledger_path.read_text()


def test_graph_shows_the_startup_order(cli) -> None:
    r = cli("graph", "--json")
    assert r.code == 0
    data = r.json()
    assert data["levels"] == [["clickhouse", "postgresql", "redis"], ["auth"], ["backend"], ["frontend", "websocket"]]
    human = cli("graph")
    assert "startup order:" in human.stdout and "1. clickhouse, postgresql, redis" in human.stdout


def test_config_validate_good_and_bad(cli, write_config) -> None:
    good = write_config("limits:\n  max_parallel_instances: 4\n", "good.yaml")
    r = cli("config", "validate", str(good))
    assert r.code == 0 and "valid (4 layers, 7 services)" in r.stdout
    bad = write_config("layers:\n  x:\n    services: [nope]\n    pool: {memory_mb: 1, cpu_percent: 1, instances: 1}\n",
                       "bad.yaml")
    r = cli("config", "validate", str(bad))
    assert r.code == 2 and r.stdout == ""
    assert f"{bad}: layers.x.services[0]: unknown service 'nope'" in r.stderr
    r = cli("--config", str(bad), "status")
    assert r.code == 2 and "Traceback" not in r.stderr


def test_version_and_python_dash_m(cli) -> None:
    import subprocess
    import sys

    r = cli("--version")
    assert r.code == 0 and r.stdout.startswith("netra-rm ")
    m = subprocess.run([sys.executable, "-m", "netra_rm", "--version"], capture_output=True, text=True)
    assert m.stdout == r.stdout


@pytest.mark.parametrize("where", ["before", "after"])
def test_json_flag_before_or_after_the_command(cli, where: str) -> None:
    args = ["--json", "graph"] if where == "before" else ["graph", "--json"]
    assert "levels" in json.loads(cli(*args).stdout)


def test_monitor_prints_ndjson_when_not_a_terminal(cli) -> None:
    r = cli("monitor", "--interval", "0.5", "--count", "3")
    assert r.code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3
    samples = [json.loads(line) for line in lines]
    assert all({"timestamp", "system", "pools", "alerts"} <= set(s) for s in samples)
    assert samples[1]["system"]["disk"]["write_bytes_per_second"] is not None
    assert cli("--monitor", "--count", "1", "--interval", "0.5").stdout.count("\n") == 1


def test_monitor_interval_floor(cli) -> None:
    r = cli("monitor", "--interval", "0.1", "--count", "1")
    assert r.code == 2 and "0.5" in r.stderr


def test_monitor_carries_on_when_the_ledger_breaks_and_says_why(cli, ledger_path: Path) -> None:
    from conftest import _entry_point

    assert cli("allocate", "--layer", "fast_feedback", "--category", "watched").code == 0
    proc = subprocess.Popen([*_entry_point(), "monitor", "--interval", "0.5", "--count", "4",
                             "--services-interval", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "NETRA_RM_LEDGER": str(ledger_path)})
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())
    assert first["allocations"] == 1 and first["ledger_error"] is None
    ledger_path.write_text("{ not json")  # corrupt, from now on
    rest = [json.loads(line) for line in proc.stdout]
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert len(rest) == 3
    assert "corrupt" in (rest[-1]["ledger_error"] or "")
    assert rest[-1]["allocations"] == 1 and rest[-1]["pools"]  # the last ones read
    broken = cli("monitor", "--count", "1")
    assert broken.code == 5 and "corrupt" in broken.stderr  # unusable from the start


def test_monitor_services_interval(cli, monitor_until_services) -> None:
    quiet = cli("monitor", "--interval", "0.5", "--count", "2", "--services-interval", "0")
    assert quiet.code == 0, quiet.stderr
    for line in quiet.stdout.splitlines():
        sample = json.loads(line)
        assert sample["services"] == [] and sample["services_checked_at"] is None
    rows, _, err = monitor_until_services(env=ENV_DOWN)
    assert {s["name"] for s in rows} >= {"postgresql", "redis"}, err
    for bad in ("0.2", "-1"):
        refused = cli("monitor", "--count", "1", "--services-interval", bad)
        assert refused.code == 2 and "--services-interval" in refused.stderr and "Traceback" not in refused.stderr


def test_config_show_masks_secrets_in_start_commands(cli, write_config) -> None:
    path = write_config("services:\n  redis:\n    kind: redis\n    url: redis://:pw-In-Cmd-1@127.0.0.1:6390/0\n"
                        "    start: [redis-server, --port, '6390', --requirepass, pw-In-Cmd-1]\n"
                        "discovery:\n  compose: true\n")
    for args in (["config", "show"], ["--json", "config", "show"]):
        r = cli("--config", str(path), *args)
        assert r.code == 0, r.stderr
        assert "pw-In-Cmd-1" not in r.stdout and "redis-server" in r.stdout and "discovery" in r.stdout
