"""`netra-rm up` and `netra-rm down` as a user runs them, against real PostgreSQL and Redis
that netra-rm itself starts with their configured start commands (temp dirs, free ports)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from servers import (
    PASSWORDS,
    REDIS_PASSWORD,
    free_port,
    port_accepts,
)
from start_commands import PgCluster, RedisCommands, app_service, config_text

pytestmark = pytest.mark.services


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for password in PASSWORDS:
            assert password not in text


def test_up_starts_the_layer_in_order_then_leaves_it_alone_and_down_stops_it(
        cli, write_config, pg: PgCluster, redis: RedisCommands) -> None:
    app_port = free_port()
    config = write_config(config_text(
        {"postgresql": pg.service(), "redis": redis.foreground(),
         "app": app_service(pg.port, redis.port, app_port)},
        layers={"stack": {"services": ["app"], "pool": {"memory_mb": 512, "cpu_percent": 50, "instances": 2}}}))
    assert not pg.running() and not redis.running() and not port_accepts(app_port)

    # both down at first: --dry-run says what it would start, and starts nothing
    plan = cli("--config", str(config), "up", "core_integration", "--dry-run", "--json")
    assert plan.code == 0, plan.stderr
    actions = {s["name"]: s["action"] for s in plan.json()["services"]}
    assert actions == {"postgresql": "would_start", "redis": "would_start"}
    assert not pg.running() and not redis.running()

    first = cli("--config", str(config), "up", "core_integration", "--json")
    assert first.code == 0, first.stderr
    data = first.json()
    assert data["ok"] is True and data["failed"] is None
    assert sorted(data["started"]) == ["postgresql", "redis"]
    steps = {s["name"]: s for s in data["services"]}
    assert steps["postgresql"]["status"] == "healthy" and steps["redis"]["status"] == "healthy"
    assert steps["postgresql"]["exit_code"] == 0 and steps["postgresql"]["running"] is False  # pg_ctl returned
    assert steps["redis"]["running"] is True  # redis-server stays in the foreground
    assert "--requirepass ***" in steps["redis"]["command"]
    assert pg.running() and redis.running()
    assert "starting postgresql" in first.stderr and "starting redis" in first.stderr
    assert_no_secret(first.stdout, first.stderr)

    # the layer's own check agrees, and status says who started what
    assert cli("--config", str(config), "layer", "core_integration").code == 0
    services = cli("--config", str(config), "status", "--json").json()["services"]["services"]
    assert services["postgresql"]["started_by_netra_rm"] is True and services["redis"]["restart_count"] == 0
    assert services["clickhouse"]["started_by_netra_rm"] is False

    # a second `up` starts nothing
    again = cli("--config", str(config), "up", "core_integration", "--json")
    assert again.code == 0, again.stderr
    assert again.json()["started"] == []
    assert {s["action"] for s in again.json()["services"]} == {"left_alone"}
    assert "starting" not in again.stderr

    # a dependent is started only once its dependencies are healthy (it exits 3 otherwise)
    stack = cli("--config", str(config), "up", "stack")
    assert stack.code == 0, stack.stderr
    assert "app" in stack.stdout and "started" in stack.stdout
    assert port_accepts(app_port)

    # down SERVICE stops it and what was started on top of it, dependents first
    down = cli("--config", str(config), "down", "redis", "--json")
    assert down.code == 0, down.stderr
    assert [(s["name"], s["method"]) for s in down.json()["services"]] == [("app", "signal"), ("redis", "signal")]
    assert not redis.running() and not port_accepts(app_port) and pg.running()
    # down stops the rest with its stop command, and checks it no longer answers
    rest = cli("--config", str(config), "down", "--json")
    assert rest.code == 0, rest.stderr
    assert [(s["name"], s["action"], s["method"]) for s in rest.json()["services"]] == [
        ("postgresql", "stopped", "command")]
    assert not pg.running()
    assert_no_secret(down.stdout, down.stderr, rest.stdout, rest.stderr)

    nothing = cli("--config", str(config), "down")
    assert nothing.code == 0 and "nothing to stop" in nothing.stdout


def test_up_with_a_daemonizing_start_and_a_stop_command(cli, write_config, redis: RedisCommands) -> None:
    config = write_config(config_text({"redis": redis.daemonized()}))
    result = cli("--config", str(config), "up", "redis")
    assert result.code == 0, result.stderr
    assert redis.running()
    assert "started" in result.stdout
    assert_no_secret(result.stdout, result.stderr)

    down = cli("--config", str(config), "down", "redis", "--json")
    assert down.code == 0, down.stderr
    (step,) = down.json()["services"]
    assert step["action"] == "stopped" and step["method"] == "command" and step["exit_code"] == 0
    assert "-a ***" in step["command"]
    assert not redis.running()
    assert_no_secret(down.stdout, down.stderr)


def test_a_failing_start_command_stops_the_run_naming_service_command_code_and_output(
        cli, write_config, redis: RedisCommands) -> None:
    app_port = free_port()
    failing = {"kind": "redis", "url": redis.url, "shell": True,
               "start": f"echo 'loading config'; echo 'FATAL: cannot open port, password {REDIS_PASSWORD}' >&2; "
                        f"exit 3"}
    config = write_config(config_text(
        {"redis": failing, "postgresql": {"kind": "tcp", "url": f"tcp://127.0.0.1:{free_port()}",
                                          "start": ["true"]},
         "app": app_service(1, 1, app_port)},
        layers={"stack": {"services": ["app"], "pool": {"memory_mb": 512, "cpu_percent": 50, "instances": 2}}}))
    result = cli("--config", str(config), "up", "stack", "--timeout", "10")
    assert result.code == 1
    first_line = next(line for line in result.stderr.splitlines() if "error:" in line)
    assert "redis" in first_line and "exited with code 3" in first_line
    assert "echo 'loading config'" in first_line
    assert "FATAL: cannot open port" in result.stderr and "loading config" in result.stderr
    assert "last output of redis" in result.stderr
    assert_no_secret(result.stdout, result.stderr)
    # the run stopped: the dependent was never started
    assert not port_accepts(app_port)
    json_run = cli("--config", str(config), "up", "stack", "--timeout", "10", "--json")
    assert json_run.code == 1
    data = json_run.json()
    steps = {s["name"]: s for s in data["services"]}
    assert data["failed"] == "redis" and steps["redis"]["exit_code"] == 3
    assert any("FATAL" in line for line in steps["redis"]["output_tail"])
    assert steps["app"]["action"] == "not_reached"
    assert_no_secret(json_run.stdout, json_run.stderr)


def test_a_service_that_never_becomes_healthy_fails_at_the_deadline(cli, write_config, tmp_path: Path) -> None:
    port = free_port()
    pid_file = tmp_path / "server.pid"
    # a "server" that runs in the foreground but never listens
    config = write_config(config_text({
        "redis": {"kind": "redis", "url": f"redis://127.0.0.1:{port}/0", "shell": True,
                  "start": f"echo $$ > {pid_file}; echo 'warming up'; exec sleep 120"}}))
    began = time.monotonic()
    result = cli("--config", str(config), "up", "redis", "--timeout", "2")
    elapsed = time.monotonic() - began
    assert result.code == 1
    assert 2.0 <= elapsed < 8.0
    error = next(line for line in result.stderr.splitlines() if "error:" in line)
    assert "redis did not become healthy within the 2 s deadline" in error
    assert "exec sleep 120" in error and "still running and has been stopped" in error
    assert "warming up" in result.stderr
    # the command that was still running was stopped again
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the start command was left running")
    # nothing is recorded as started: down has nothing to do
    assert "nothing to stop" in cli("--config", str(config), "down").stdout


def test_a_down_service_without_a_start_command_fails_naming_it_and_its_dependents(
        cli, write_config, redis: RedisCommands) -> None:
    closed = free_port()
    config = write_config(config_text({
        "redis": redis.foreground(),
        "postgresql": {"kind": "postgresql", "url": f"postgresql://u:pw-secret-1@127.0.0.1:{closed}/db"}}))
    result = cli("--config", str(config), "up", "backend", "--dry-run")
    assert result.code == 1
    error = next(line for line in result.stderr.splitlines() if "error:" in line)
    assert "postgresql is down" in error and "has no start command" in error
    assert "auth" in error and "backend" in error  # what depends on it
    assert "services.postgresql.start" in result.stderr
    assert "pw-secret-1" not in result.stderr + result.stdout
    # the real run fails the same way, before starting anything
    real = cli("--config", str(config), "up", "backend", "--json")
    assert real.code == 1
    assert real.json()["failed"] == "postgresql"
    assert not redis.running()


def test_unknown_target_is_a_usage_error(cli) -> None:
    result = cli("up", "no_such_thing")
    assert result.code == 2
    assert "unknown layer or service 'no_such_thing'" in result.stderr
    assert "core_integration" in result.stderr and "postgresql" in result.stderr


def test_up_and_down_have_help_with_an_example(cli) -> None:
    for command in ("up", "down"):
        result = cli(command, "--help")
        assert result.code == 0
        assert "Example:" in result.stdout
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "netra-rm up" in readme and "netra-rm down" in readme
