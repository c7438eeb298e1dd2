"""Docker Compose discovery: the port forms and interpolations of compose files, the
engine's `docker compose ps --format json`, and the path without Docker (said once, then
the compose file or the configured addresses). The checks then use what was found,
against a real Redis."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from netra_rm.services.compose import (
    ComposeError,
    ComposeService,
    ComposeSettings,
    PublishedPort,
    discover,
    interpolate,
    parse_ports,
    parse_ps_output,
    read_compose_file,
    rewrite_url,
)
from netra_rm.services.spec import ServiceSpec

from servers import PASSWORDS, REDIS_PASSWORD, free_port
from start_commands import config_text

NO_DOCKER = {"NETRA_RM_DOCKER": "netra-rm-test-no-such-docker"}


# -- compose files ------------------------------------------------------------------------------

@pytest.mark.parametrize("entry, expected", [
    ("5432", [PublishedPort(5432, None)]),
    (5432, [PublishedPort(5432, None)]),
    ("5433:5432", [PublishedPort(5432, 5433)]),
    ("127.0.0.1:8001:8001", [PublishedPort(8001, 8001, "127.0.0.1")]),
    ("127.0.0.1::5000", [PublishedPort(5000, None, "127.0.0.1")]),
    ("9090-9091:8080-8081", [PublishedPort(8080, 9090), PublishedPort(8081, 9091)]),
    ("3000-3001", [PublishedPort(3000, None), PublishedPort(3001, None)]),
    ("8000-9000:80", [PublishedPort(80, None)]),
    ("127.0.0.1:5000-5001:5000-5001", [PublishedPort(5000, 5000, "127.0.0.1"), PublishedPort(5001, 5001, "127.0.0.1")]),
    ("::1:6000:6000", [PublishedPort(6000, 6000, "::1")]),
    ("[::1]:6001:6001", [PublishedPort(6001, 6001, "::1")]),
    ("6060:6060/udp", [PublishedPort(6060, 6060, None, "udp")]),
    ({"target": 80, "published": "8080", "host_ip": "127.0.0.1", "protocol": "tcp", "mode": "host"},
     [PublishedPort(80, 8080, "127.0.0.1")]),
    ({"target": 6379, "published": 16379}, [PublishedPort(6379, 16379)]),
    ({"target": 6379}, [PublishedPort(6379, None)]),
])
def test_every_port_form(entry: object, expected: list[PublishedPort]) -> None:
    assert parse_ports([entry]) == expected


@pytest.mark.parametrize("entry, words", [
    ("abc:5432", "not a port number"),
    ("1-3:4-5", "differ in length"),
    ("70000:5432", "out of range"),
    ({"published": 80}, "needs `target`"),
])
def test_bad_ports_are_named(entry: object, words: str) -> None:
    with pytest.raises(ComposeError) as info:
        parse_ports([entry], where="compose.yaml: services.db.")
    assert "compose.yaml: services.db.ports[0]" in str(info.value) and words in str(info.value)


def test_interpolation_forms() -> None:
    env = {"SET": "5", "EMPTY": ""}
    assert interpolate("${SET:-1}/${UNSET:-2}/${EMPTY:-3}/${EMPTY-4}/${UNSET-5}", env) == "5/2/3//5"
    assert interpolate("$SET-${SET}-$$SET-${SET:+yes}-${EMPTY:+no}-${EMPTY+set}", env) == "5-5-$SET-yes--set"
    assert interpolate("${UNSET:-${SET:-9}}0", env) == "50"
    unset: list[str] = []
    assert interpolate("${NOPE}:1", env, unset=unset) == ":1" and unset == ["NOPE"]
    with pytest.raises(ComposeError, match="required variable PORT must be set"):
        interpolate("${PORT:?must be set}:5432", env)
    with pytest.raises(ComposeError, match="required variable EMPTY"):
        interpolate("${EMPTY:?}", env)
    assert interpolate("${EMPTY?}", env) == ""


def test_compose_file_with_override_dotenv_and_environment(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text("""
services:
  db:
    image: postgres:16-alpine
    ports: ["${PG_PORT:-5432}:5432"]
  cache:
    image: docker.io/library/redis:7
    ports:
      - target: 6379
        published: ${REDIS_PORT}
        host_ip: 127.0.0.1
  web:
    build: .
    ports: !reset []
""")
    (tmp_path / "compose.override.yaml").write_text('services:\n  web:\n    ports: ["${WEB_PORT-8080}:80"]\n')
    (tmp_path / ".env").write_text("# project defaults\nREDIS_PORT=16379\nexport PG_PORT='15432'\n")
    services = read_compose_file(tmp_path / "compose.yaml", env={"PG_PORT": "25432"})
    assert services["db"] == ComposeService("db", "postgres:16-alpine", (PublishedPort(5432, 25432),))
    assert services["cache"].ports == (PublishedPort(6379, 16379, "127.0.0.1"),)  # from .env
    assert services["web"].ports == (PublishedPort(80, 8080),)  # from the override file


def test_engine_output_both_formats() -> None:
    row = {"Service": "db", "Image": "postgres:16", "Publishers": [
        {"URL": "0.0.0.0", "TargetPort": 5432, "PublishedPort": 55001, "Protocol": "tcp"},
        {"URL": "::", "TargetPort": 5432, "PublishedPort": 55001, "Protocol": "tcp"},
        {"URL": "", "TargetPort": 9187, "PublishedPort": 0, "Protocol": "tcp"}]}
    for text in (json.dumps(row) + "\n", json.dumps([row])):
        (db,) = parse_ps_output(text).values()
        assert [p.published for p in db.ports] == [55001, 55001] and db.ports[0].target == 5432


def test_discovered_port_keeps_credentials_and_database() -> None:
    assert rewrite_url("postgresql://app:pw@localhost:5432/app?sslmode=disable", 55001, "0.0.0.0") == \
        "postgresql://app:pw@localhost:55001/app?sslmode=disable"
    assert rewrite_url("redis://:pw@localhost:6379/2", 16379, "::1") == "redis://:pw@[::1]:16379/2"


def test_services_match_by_name_setting_or_image(tmp_path: Path) -> None:
    (tmp_path / "docker-compose.yml").write_text("""
services:
  database: {image: "postgis/postgis:16", ports: ["15432:5432"]}
  redis: {image: "bitnami/redis", ports: ["16379:6379"]}
  api: {image: "example/api", ports: ["18000:8000", "19000:9000"]}
  auth: {image: "example/auth", ports: ["18081:80"]}
""")
    specs = {
        "postgresql": ServiceSpec("postgresql", "postgresql", "postgresql://u:secret@localhost:5432/app"),
        "redis": ServiceSpec("redis", "redis", "redis://localhost:6379/0"),
        "backend": ServiceSpec("backend", "http", "http://localhost:9000"),
        "auth": ServiceSpec("auth", "http", "http://localhost:8081"),
        "frontend": ServiceSpec("frontend", "http", "http://localhost:3000"),
    }
    found = discover(specs, ComposeSettings(services={"backend": "api"}), env=NO_DOCKER, cwd=tmp_path / "sub")
    assert found.source == "file"
    assert found.urls == {"postgresql": "postgresql://u:secret@localhost:15432/app",  # by image
                          "redis": "redis://localhost:16379/0",  # by name
                          "backend": "http://localhost:19000",  # by setting, the configured port's mapping
                          "auth": "http://localhost:18081"}  # its only port
    assert "frontend" not in found.urls
    assert found.to_dict()["services"]["postgresql"]["url"] == "postgresql://u:***@localhost:15432/app"
    assert "Docker is not installed" in found.notes[0]


# -- through the command line, against a real Redis --------------------------------------------------

@pytest.fixture
def compose_project(home: Path, redis_server) -> Path:
    """A compose file in the directory `netra-rm` runs in, publishing the real Redis's port
    under another service name, through `${REDIS_PORT:-...}`."""
    (home / "compose.yaml").write_text(f"""
services:
  cache:
    image: redis:7-alpine
    ports:
      - "127.0.0.1:${{REDIS_PORT:-{redis_server.port}}}:6379"
""")
    return home


@pytest.fixture
def redis_config(write_config) -> Path:
    """Redis configured on a port where nothing listens: only discovery finds it."""
    return write_config(config_text(
        {"redis": {"kind": "redis", "url": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0"}},
        layers={"cache_layer": {"services": ["redis"], "pool": {"memory_mb": 64, "cpu_percent": 5,
                                                                  "instances": 1}}}))


def fake_docker(tmp_path: Path, *, stdout: str = "", stderr: str = "", code: int = 0) -> str:
    """A `docker` that answers `docker compose ... ps --format json` as told."""
    script = tmp_path / "fake-docker"
    script.write_text(f"#!{sys.executable}\nimport sys\nassert 'ps' in sys.argv, sys.argv\n"
                      f"sys.stdout.write({stdout!r})\nsys.stderr.write({stderr!r})\nsys.exit({code})\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for password in PASSWORDS:
            assert password not in text


def test_without_docker_the_compose_file_gives_the_port(cli, compose_project: Path, redis_config: Path,
                                                        redis_server) -> None:
    result = cli("--config", str(redis_config), "up", "redis", "--discover", "compose", "--json", env=NO_DOCKER)
    assert result.code == 0, result.stderr
    data = result.json()
    assert data["discovery"]["source"] == "file"
    assert data["discovery"]["services"]["redis"] == {
        "compose_service": "cache", "url": f"redis://:***@127.0.0.1:{redis_server.port}/0"}
    (step,) = data["services"]
    assert step["action"] == "left_alone" and step["status"] == "healthy"
    assert result.stderr.count("Docker is not installed") == 1
    assert "reading the published ports from" in result.stderr
    assert_no_secret(result.stdout, result.stderr)


def test_without_discovery_the_configured_address_stands(cli, compose_project: Path, redis_config: Path) -> None:
    result = cli("--config", str(redis_config), "up", "redis", "--dry-run", "--json", env=NO_DOCKER)
    assert result.code == 1  # down, and no start command
    assert result.json()["discovery"] is None
    assert "Docker is not installed" not in result.stderr


def test_an_answering_engine_wins_over_the_file(cli, tmp_path: Path, compose_project: Path, redis_config: Path,
                                               redis_server) -> None:
    (compose_project / "compose.yaml").write_text(
        "services:\n  cache:\n    image: redis:7\n    ports: ['1:6379']\n")  # wrong in the file
    row = {"Service": "cache", "Image": "redis:7", "Publishers": [
        {"URL": "0.0.0.0", "TargetPort": 6379, "PublishedPort": redis_server.port, "Protocol": "tcp"}]}
    docker = fake_docker(tmp_path, stdout=json.dumps(row) + "\n")
    result = cli("--config", str(redis_config), "up", "redis", "--discover", "compose", "--json",
                 env={"NETRA_RM_DOCKER": docker})
    assert result.code == 0, result.stderr
    assert result.json()["discovery"]["source"] == "engine"
    assert result.json()["services"][0]["action"] == "left_alone"
    assert result.stderr == ""


def test_an_engine_that_does_not_answer_is_said_once(cli, tmp_path: Path, compose_project: Path,
                                                    write_config, redis_server) -> None:
    """Discovery from the configuration serves `layer` too; waiting with --timeout checks
    many times, and the missing engine is still said once."""
    docker = fake_docker(tmp_path, code=1, stderr="Cannot connect to the Docker daemon at "
                                                  "unix:///var/run/docker.sock. Is the docker daemon running?\n")
    closed = free_port()
    config = write_config(config_text(
        {"redis": {"kind": "redis", "url": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{closed}/0"},
         "clickhouse": {"kind": "clickhouse", "url": f"http://127.0.0.1:{closed}/default"}},
        layers={"cache_layer": {"services": ["redis", "clickhouse"],
                                "pool": {"memory_mb": 64, "cpu_percent": 5, "instances": 1}}},
        discovery={"compose": True}))
    result = cli("--config", str(config), "layer", "cache_layer", "--timeout", "1.5", "--json",
                 env={"NETRA_RM_DOCKER": docker})
    assert result.code == 1  # clickhouse is not in the compose project: its configured address is closed
    data = result.json()
    assert data["services"]["redis"]["status"] == "healthy"  # found through the compose file
    assert data["missing"] == ["clickhouse"] and data["attempts"] > 1
    assert result.stderr.count("no Docker engine answers") == 1
    assert "Cannot connect to the Docker daemon" in result.stderr
    assert_no_secret(result.stdout, result.stderr)


def test_no_compose_file_and_no_docker_keeps_configured_addresses(cli, home: Path, redis_config: Path) -> None:
    result = cli("--config", str(redis_config), "up", "redis", "--discover", "compose", "--dry-run", "--json",
                 env=NO_DOCKER)
    assert result.code == 1
    assert result.json()["discovery"]["source"] == "none"
    assert result.stderr.count("using the configured addresses") == 1


def test_an_address_from_the_environment_is_not_rediscovered(cli, compose_project: Path, write_config) -> None:
    closed = free_port()
    config = write_config(config_text({"redis": {"kind": "redis", "url": "redis://127.0.0.1:1/0",
                                                 "url_env": "REDIS_URL"}}))
    result = cli("--config", str(config), "up", "redis", "--discover", "compose", "--dry-run", "--json",
                 env={**NO_DOCKER, "REDIS_URL": f"redis://127.0.0.1:{closed}/0"})
    assert result.json()["services"][0]["url"] == f"redis://127.0.0.1:{closed}/0"
    assert "redis" not in result.json()["discovery"]["services"]


def test_a_required_variable_that_is_unset_is_a_usage_error(cli, home: Path, redis_config: Path) -> None:
    (home / "compose.yaml").write_text("services:\n  cache:\n    ports: ['${CACHE_PORT:?set CACHE_PORT}:6379']\n")
    result = cli("--config", str(redis_config), "up", "redis", "--discover", "compose", env=NO_DOCKER)
    assert result.code == 2
    assert "required variable CACHE_PORT set CACHE_PORT" in result.stderr
