"""One resolution path: `layer`, `status` (tables, JSON, OpenMetrics), `up`, the monitor,
the pytest plugin's `netra_services` marker and the Python API all use the addresses
Compose discovery found, against a real Redis that only the compose project points at.
A compose project that cannot be read never turns a verdict into bad input: it is a
warning (also in the metrics) and the configured addresses stand; `config validate`
reports it as an error. Remediation names the real Compose service."""

from __future__ import annotations

from pathlib import Path

import pytest

from compose_cli import NO_COMPOSE, require_compose, stand_in_docker, standalone_env
from servers import PASSWORDS, REDIS_PASSWORD, free_port
from start_commands import config_text

pytest_plugins = ["pytester"]

LAYER = {"cache_layer": {"services": ["redis"], "pool": {"memory_mb": 64, "cpu_percent": 5, "instances": 2}}}


def discovery_config(write_config, port: int | None = None) -> Path:
    """Redis configured where nothing listens, with discovery on: only Compose finds it."""
    return write_config(config_text(
        {"redis": {"kind": "redis", "url": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port or free_port()}/0",
                   "url_env": "REDIS_URL"}},
        layers=LAYER, discovery={"compose": True}))


def compose_file(directory: Path, port: int) -> Path:
    path = directory / "compose.yaml"
    path.write_text(f"""
services:
  redis-commander:
    image: rediscommander/redis-commander
    ports: ["18081:8081"]
  dev-redis:
    image: redis:7-alpine
    ports: ["127.0.0.1:${{DEV_REDIS_PORT:-{port}}}:6379"]
  test-redis:
    image: redis:7-alpine
    profiles: [test]
    ports: ["{free_port()}:6379"]
""")
    return path


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for password in PASSWORDS:
            assert password not in text


@pytest.fixture(params=["reader", "compose"])
def compose_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Discovery without a Compose CLI (netra-rm's reader), and with the real one."""
    if request.param == "reader":
        return dict(NO_COMPOSE)
    return {"NETRA_RM_DOCKER": "netra-rm-test-no-such-program",
            "NETRA_RM_DOCKER_COMPOSE": require_compose()}


# -- every command sees the discovered address --------------------------------------------------

def test_layer_status_and_monitor_use_the_discovered_address(cli, home: Path, write_config, redis_server,
                                                             compose_env: dict[str, str],
                                                             monitor_until_services) -> None:
    compose_file(home, redis_server.port)
    config = discovery_config(write_config)
    layer = cli("--config", str(config), "layer", "cache_layer", "--json", env=compose_env)
    assert layer.code == 0, layer.stdout + layer.stderr
    data = layer.json()
    assert data["services"]["redis"]["url"] == f"redis://:***@127.0.0.1:{redis_server.port}/0"
    assert data["discovery"]["services"]["redis"]["compose_service"] == "dev-redis"  # not the commander

    status = cli("--config", str(config), "status", "--json", env=compose_env)
    assert status.code == 0
    services = status.json()["services"]
    assert services["services"]["redis"]["status"] == "healthy"
    assert services["discovery"]["warnings"] == []

    rows, lines, err = monitor_until_services("--config", str(config), env=compose_env)
    checked = {row["name"]: row for row in rows}
    assert checked["redis"]["status"] == "healthy", (checked, err)
    assert_no_secret(layer.stdout, layer.stderr, status.stdout, status.stderr, *lines, err)


def test_the_python_api_uses_the_discovered_address(home: Path, write_config, redis_server, ledger_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    compose_file(home, redis_server.port)
    config = discovery_config(write_config)
    monkeypatch.chdir(home)
    for name, value in NO_COMPOSE.items():
        monkeypatch.setenv(name, value)
    from netra_rm import create_resource_manager

    with create_resource_manager(enable_monitoring=False, config=str(config), ledger=str(ledger_path)) as rm:
        assert rm.ensure_layer_services("cache_layer") == (True, [])
        status = rm.get_service_status()
        assert status["services"]["redis"]["status"] == "healthy"
        assert status["discovery"]["services"]["redis"]["compose_service"] == "dev-redis"


MARKED = """
import pytest

@pytest.mark.netra_services("redis")
def test_needs_redis():
    pass
"""


def test_the_marker_uses_the_discovered_address(pytester: pytest.Pytester, write_config, redis_server,
                                                home: Path, ledger_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The layer is ready through discovery, so the marked test runs: it is not skipped as
    refused on the configured port."""
    compose_file(pytester.path, redis_server.port)
    config = discovery_config(write_config)
    monkeypatch.setenv("NETRA_RM_CONFIG", str(config))
    monkeypatch.setenv("NETRA_RM_LEDGER", str(ledger_path))
    for name, value in NO_COMPOSE.items():
        monkeypatch.setenv(name, value)
    pytester.makepyfile(test_marked=MARKED)
    for args in ((), ("--netra-layer", "cache_layer")):  # without and with the session's engine
        result = pytester.runpytest_subprocess(*args, "-rs", "-p", "no:cacheprovider")
        result.assert_outcomes(passed=1)


# -- a broken project is a warning, never bad input ----------------------------------------------

def broken_project(directory: Path) -> None:
    (directory / "compose.yaml").write_text("services:\n  cache:\n    image: redis:7\n"
                                            "    ports: ['${REDIS_PORT}:6379']\n")
    (directory / ".env").write_text('REDIS_PORT="6379\n')  # an unterminated quote


def test_a_broken_dotenv_is_a_warning_in_layer_status_and_the_metrics(cli, home: Path, write_config, redis_server,
                                                                      compose_env: dict[str, str]) -> None:
    broken_project(home)
    config = discovery_config(write_config, redis_server.port)  # the configured address is right
    layer = cli("--config", str(config), "layer", "cache_layer", env=compose_env)
    assert layer.code == 0, layer.stderr  # a verdict, from the configured address
    assert layer.stderr.count("Compose discovery failed, so the configured addresses are used") == 1
    assert ".env" in layer.stderr and "line " in layer.stderr

    status = cli("--config", str(config), "status", "--json", env=compose_env)
    assert status.code == 0
    discovery = status.json()["services"]["discovery"]
    assert discovery["source"] == "failed" and ".env" in discovery["error"]
    assert len(discovery["warnings"]) == 1

    metrics = home / "metrics" / "netra-rm.prom"
    metrics.parent.mkdir()
    written = cli("--config", str(config), "status", "--format", "openmetrics", "--output", str(metrics),
                  env=compose_env)
    assert written.code == 0, written.stderr
    text = metrics.read_text()
    assert 'netra_rm_discovery_warnings{source="failed"} 1' in text
    assert 'netra_rm_service_up{service="redis",kind="redis"} 1' in text
    assert text.endswith("# EOF\n")
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    parsed = {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}
    assert parsed["netra_rm_discovery_warnings"] == 1

    validate = cli("--config", str(config), "config", "validate", env=compose_env)
    assert validate.code == 2
    assert ".env" in validate.stderr and "line " in validate.stderr and "Traceback" not in validate.stderr
    assert_no_secret(layer.stdout, layer.stderr, status.stdout, validate.stderr)


def test_an_unset_required_variable_is_a_warning_for_up(cli, home: Path, write_config) -> None:
    (home / "compose.yaml").write_text("services:\n  cache:\n    image: redis:7\n"
                                       "    ports: ['${CACHE_PORT:?set CACHE_PORT}:6379']\n")
    config = discovery_config(write_config)
    result = cli("--config", str(config), "up", "redis", "--dry-run", "--json", env=NO_COMPOSE)
    assert result.code == 1  # down and no start command: a verdict, not exit 2
    assert result.json()["discovery"]["source"] == "failed"
    assert "required variable CACHE_PORT set CACHE_PORT" in result.stderr


# -- remediation names the Compose service ---------------------------------------------------------

def test_remediation_names_the_compose_service_and_says_where_the_address_came_from(
        cli, home: Path, tmp_path: Path, write_config) -> None:
    binary = require_compose()
    closed = free_port()
    compose_file(home, closed)
    docker = stand_in_docker(tmp_path, binary, ps_code=1, ps_stderr="Cannot connect to the Docker daemon\n")
    config = discovery_config(write_config)
    result = cli("--config", str(config), "layer", "cache_layer", env={"NETRA_RM_DOCKER": docker})
    assert result.code == 1
    assert "`docker compose up -d dev-redis`" in result.stderr
    assert f"(redis://:***@127.0.0.1:{closed}/0) came from Docker Compose" in result.stderr
    assert "the user, password and database come from REDIS_URL" not in result.stderr  # REDIS_URL is unset
    assert f"services.redis.url in {config}" in result.stderr
    assert "docker compose up -d redis`" not in result.stderr

    up = cli("--config", str(config), "up", "redis", "--dry-run", env={"NETRA_RM_DOCKER": docker})
    assert up.code == 1
    assert "`services.redis.start: [docker, compose, up, -d, dev-redis]`" in up.stderr
    assert_no_secret(result.stdout, result.stderr, up.stdout, up.stderr)


def test_with_the_standalone_cli_the_command_is_docker_compose(cli, home: Path, write_config) -> None:
    binary = require_compose()
    compose_file(home, free_port())
    config = discovery_config(write_config)
    result = cli("--config", str(config), "layer", "cache_layer", env=standalone_env(binary))
    assert result.code == 1
    assert "`docker-compose up -d dev-redis`" in result.stderr
