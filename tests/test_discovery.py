"""Docker Compose discovery: the port forms and interpolations, the reader's `.env`,
choosing the Compose CLI (plugin, else standalone, by what each reports about itself),
the engine's `docker compose ps` (and its own error when it does not answer), matching
with sidecars left out, and the command line's use of what was found, against a real
Redis. How each answer compares with Compose's own is tests/test_compose_projects.py."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from netra_rm.config.service import ServiceSpec
from netra_rm.services.compose import (
    ComposeError,
    ComposeService,
    ComposeSettings,
    PublishedPort,
    discover,
    find_cli,
    interpolate,
    is_sidecar,
    match_services,
    parse_ports,
    parse_ps_output,
    read_dotenv,
    read_project,
    rewrite_url,
)

from compose_cli import NO_COMPOSE, NO_SUCH, base_env, ps_row, require_compose, stand_in_docker, standalone_env
from servers import PASSWORDS, REDIS_PASSWORD, free_port
from start_commands import config_text

PROJECTS = Path(__file__).resolve().parent / "compose_projects"


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
    ({"target": 80, "published": "8000-8010"}, [PublishedPort(80, None)]),  # as `docker compose config` prints it
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


def test_dotenv_is_read_with_compose_syntax(tmp_path: Path) -> None:
    """`${BASE}432`, a quoted value with a comment after it, `export`, a nested default:
    each read as Compose reads it (the environment first, then the lines above)."""
    (tmp_path / ".env").write_text("BASE=55\nPG_PORT=${BASE}432 # comment\nQUOTED='55433' # comment\n"
                                   "export NESTED=\"${MISSING:-${BASE}3}79\"\nLITERAL='${BASE}'\n")
    assert read_dotenv(tmp_path / ".env", {}) == {"BASE": "55", "PG_PORT": "55432", "QUOTED": "55433",
                                                  "NESTED": "55379", "LITERAL": "${BASE}"}
    assert read_dotenv(tmp_path / ".env", {"BASE": "44"})["PG_PORT"] == "44432"


def test_a_broken_dotenv_names_its_line(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("GOOD=1\nnot a setting\n")
    with pytest.raises(ComposeError, match=r"\.env: line 2 is not NAME=value"):
        read_dotenv(tmp_path / ".env", {})


def test_the_reader_merges_override_and_leaves_inactive_profiles_out(tmp_path: Path) -> None:
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
  test-db:
    image: postgres:16
    profiles: [test]
    ports: ["5434:5432"]
  web:
    build: .
""")
    (tmp_path / "compose.override.yml").write_text('services:\n  web:\n    ports: ["${WEB_PORT-8080}:80"]\n')
    (tmp_path / ".env").write_text("# project defaults\nREDIS_PORT=16379\nexport PG_PORT='15432'\n")
    files = [tmp_path / "compose.yaml", tmp_path / "compose.override.yml"]
    services = read_project(files, env={"PG_PORT": "25432"}).services
    assert services["db"] == ComposeService("db", "postgres:16-alpine", (PublishedPort(5432, 25432),))
    assert services["cache"].ports == (PublishedPort(6379, 16379, "127.0.0.1"),)  # from .env
    assert services["web"].ports == (PublishedPort(80, 8080),)  # from the override file
    assert "test-db" not in services
    assert "test-db" in read_project(files, env={"COMPOSE_PROFILES": "test"}).services


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


# -- matching ------------------------------------------------------------------------------------

@pytest.mark.parametrize("image", ["rediscommander/redis-commander:latest", "oliver006/redis_exporter:v1.62.0",
                                   "quay.io/prometheuscommunity/postgres-exporter", "dpage/pgadmin4",
                                   "redis/redisinsight:latest", "wrouesnel/postgres_exporter"])
def test_sidecar_images_are_not_servers(image: str) -> None:
    assert is_sidecar(image)


@pytest.mark.parametrize("image", ["postgres:16-alpine", "postgis/postgis:16", "bitnami/redis", "valkey/valkey:8",
                                   "clickhouse/clickhouse-server:24.8", "timescale/timescaledb-ha:pg16"])
def test_server_images_are_not_sidecars(image: str) -> None:
    assert not is_sidecar(image)


def test_a_sidecar_never_hides_the_server() -> None:
    compose = {"redis-commander": ComposeService("redis-commander", "rediscommander/redis-commander",
                                                 (PublishedPort(8081, 8081),)),
               "redis-exporter": ComposeService("redis-exporter", "oliver006/redis_exporter",
                                                (PublishedPort(9121, 9121),)),
               "cache": ComposeService("cache", "redis:7", (PublishedPort(6379, 6480),))}
    specs = {"redis": ServiceSpec("redis", "redis", "redis://localhost:6379/0")}
    assert match_services(specs, compose, {}).services == {"redis": "cache"}


def test_an_ambiguous_match_is_a_warning_naming_the_key_that_pins_it() -> None:
    compose = {name: ComposeService(name, "postgres:16", (PublishedPort(5432, port),))
               for name, port in (("main-db", 5433), ("replica-db", 5434))}
    specs = {"postgresql": ServiceSpec("postgresql", "postgresql", "postgresql://u@localhost:5432/app")}
    found = match_services(specs, compose, {})
    assert found.services == {}
    (warning,) = found.warnings
    assert "main-db, replica-db" in warning and "discovery.compose.services.postgresql" in warning
    assert match_services(specs, compose, {"postgresql": "replica-db"}).services == {"postgresql": "replica-db"}


def test_services_match_by_setting_image_or_name(tmp_path: Path) -> None:
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
    (tmp_path / "sub").mkdir()
    found = discover(specs, ComposeSettings(services={"backend": "api"}), env=base_env(**NO_COMPOSE),
                     cwd=tmp_path / "sub")
    assert found.source == "file"
    assert found.urls == {"postgresql": "postgresql://u:secret@localhost:15432/app",  # by image
                          "redis": "redis://localhost:16379/0",  # by image (and name)
                          "backend": "http://localhost:19000",  # by setting, the configured port's mapping
                          "auth": "http://localhost:18081"}  # by name, its only port
    assert "frontend" not in found.urls
    assert found.to_dict()["services"]["postgresql"]["url"] == "postgresql://u:***@localhost:15432/app"
    assert "no Docker Compose v2 CLI" in found.notes[0]


# -- which Compose CLI ----------------------------------------------------------------------------

SPECS = {"postgresql": ServiceSpec("postgresql", "postgresql", "postgresql://app@localhost:5432/app"),
         "redis": ServiceSpec("redis", "redis", "redis://localhost:6379/0")}


def test_the_plugin_is_used_when_the_docker_client_has_it(tmp_path: Path) -> None:
    binary = require_compose()
    docker = stand_in_docker(tmp_path, binary, ps_code=1, ps_stderr="Cannot connect to the Docker daemon\n")
    search = find_cli(base_env(NETRA_RM_DOCKER=docker, NETRA_RM_DOCKER_COMPOSE=NO_SUCH))
    assert search.cli is not None and search.cli.argv == (docker, "compose") and search.cli.version.startswith("v2")
    found = discover(SPECS, ComposeSettings(), env=base_env(NETRA_RM_DOCKER=docker, NETRA_RM_DOCKER_COMPOSE=NO_SUCH),
                     cwd=PROJECTS / "profiles")
    assert found.command == "docker compose" and found.source == "compose"
    assert found.compose_services == {"postgresql": "dev-postgres", "redis": "dev-redis"}


def test_the_standalone_is_tried_when_the_plugin_is_missing(tmp_path: Path) -> None:
    """Decided by what `docker compose version --format json` reports (here: an unknown
    command, as a Docker client without the plugin answers), not by its wording."""
    binary = require_compose()
    docker = stand_in_docker(tmp_path, binary, plugin=False)
    env = base_env(NETRA_RM_DOCKER=docker, NETRA_RM_DOCKER_COMPOSE=binary)
    search = find_cli(env)
    assert search.cli is not None and search.cli.argv == (binary,)
    found = discover(SPECS, ComposeSettings(), env=env, cwd=PROJECTS / "profiles", engine=False)
    assert (found.source, found.command) == ("compose", "docker-compose")
    assert found.compose_services["postgresql"] == "dev-postgres"


def test_a_compose_that_is_not_v2_leaves_it_to_the_reader(tmp_path: Path) -> None:
    old = tmp_path / "docker-compose"
    old.write_text(f"#!{sys.executable}\nprint('docker-compose version 1.29.2, build 5becea4c')\n")
    old.chmod(old.stat().st_mode | stat.S_IEXEC)
    env = base_env(NETRA_RM_DOCKER=NO_SUCH, NETRA_RM_DOCKER_COMPOSE=str(old))
    found = discover(SPECS, ComposeSettings(), env=env, cwd=PROJECTS / "profiles")
    assert found.source == "file" and found.compose_services["postgresql"] == "dev-postgres"
    assert "is not Compose v2" in found.notes[0]


def test_a_running_engine_gives_the_containers_ports(tmp_path: Path) -> None:
    """`8000-8010:80`-style or unpublished ports are only known once the container runs."""
    binary = require_compose()
    docker = stand_in_docker(tmp_path, binary, ps_stdout=ps_row("dev-postgres", "postgres:16-alpine", (5432, 49153)))
    found = discover(SPECS, ComposeSettings(), env=base_env(NETRA_RM_DOCKER=docker), cwd=PROJECTS / "profiles")
    assert found.source == "engine"
    assert found.urls == {"postgresql": "postgresql://app@localhost:49153/app",  # the running container
                          "redis": "redis://localhost:6380/0"}  # not running: what the project publishes
    assert found.notes == () and found.warnings == ()


def test_an_engine_that_does_not_answer_is_reported_with_its_own_error(tmp_path: Path) -> None:
    binary = require_compose()
    stderr = ('time="2025-01-01T00:00:00Z" level=warning msg="/x/compose.yaml: the attribute `version` is '
              'obsolete, it will be ignored"\n'
              "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?\n")
    docker = stand_in_docker(tmp_path, binary, ps_stderr=stderr, ps_code=1)
    found = discover(SPECS, ComposeSettings(), env=base_env(NETRA_RM_DOCKER=docker), cwd=PROJECTS / "profiles")
    assert found.source == "compose" and found.urls["postgresql"] == "postgresql://app@localhost:5433/app"
    (note,) = found.notes
    assert "Cannot connect to the Docker daemon at unix:///var/run/docker.sock" in note
    assert "obsolete" not in note


def test_a_broken_project_is_a_compose_error_with_composes_own_message() -> None:
    binary = require_compose()
    with pytest.raises(ComposeError, match="unterminated quoted value"):
        discover(SPECS, ComposeSettings(), env=standalone_env(binary), cwd=PROJECTS / "broken_dotenv")
    with pytest.raises(ComposeError, match=r"\.env: line 1 is not NAME=value"):
        discover(SPECS, ComposeSettings(), env=base_env(**NO_COMPOSE), cwd=PROJECTS / "broken_dotenv")


# -- through the command line, against a real Redis --------------------------------------------------

@pytest.fixture
def compose_project(home: Path, redis_server) -> Path:
    """A compose file in the directory `netra-rm` runs in, publishing the real Redis's port
    under another service name, through `${REDIS_PORT:-...}`, beside a redis-commander."""
    (home / "compose.yaml").write_text(f"""
services:
  commander:
    image: rediscommander/redis-commander
    ports: ["18081:8081"]
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
        {"redis": {"kind": "redis", "url": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0",
                   "url_env": "REDIS_URL"}},
        layers={"cache_layer": {"services": ["redis"], "pool": {"memory_mb": 64, "cpu_percent": 5,
                                                                  "instances": 1}}}))


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for password in PASSWORDS:
            assert password not in text


def test_without_a_compose_cli_the_compose_file_gives_the_port(cli, compose_project: Path, redis_config: Path,
                                                               redis_server) -> None:
    result = cli("--config", str(redis_config), "up", "redis", "--discover", "compose", "--json", env=NO_COMPOSE)
    assert result.code == 0, result.stderr
    data = result.json()
    assert data["discovery"]["source"] == "file"
    assert data["discovery"]["services"]["redis"] == {
        "compose_service": "cache", "url": f"redis://:***@127.0.0.1:{redis_server.port}/0"}
    (step,) = data["services"]
    assert step["action"] == "left_alone" and step["status"] == "healthy"
    assert result.stderr.count("no Docker Compose v2 CLI") == 1
    assert "read " in result.stderr and "itself" in result.stderr
    assert_no_secret(result.stdout, result.stderr)


def test_without_discovery_the_configured_address_stands(cli, compose_project: Path, redis_config: Path) -> None:
    result = cli("--config", str(redis_config), "up", "redis", "--dry-run", "--json", env=NO_COMPOSE)
    assert result.code == 1  # down, and no start command
    assert result.json()["discovery"] is None
    assert "Compose" not in result.stderr


def test_an_engine_that_does_not_answer_is_said_once(cli, tmp_path: Path, compose_project: Path,
                                                    write_config, redis_server) -> None:
    """Discovery from the configuration serves `layer` too; waiting with --timeout checks
    many times, and the engine's error is still said once."""
    binary = require_compose()
    docker = stand_in_docker(tmp_path, binary, ps_code=1, ps_stderr="Cannot connect to the Docker daemon at "
                                                                    "unix:///var/run/docker.sock.\n")
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
    assert data["services"]["redis"]["status"] == "healthy"  # found through `docker compose config`
    assert data["discovery"]["source"] == "compose" and data["discovery"]["services"]["redis"]["compose_service"] \
        == "cache"
    assert data["missing"] == ["clickhouse"] and data["attempts"] > 1
    assert result.stderr.count("no Docker engine answered") == 1
    assert "Cannot connect to the Docker daemon" in result.stderr
    assert_no_secret(result.stdout, result.stderr)


def test_no_compose_file_keeps_configured_addresses(cli, home: Path, redis_config: Path) -> None:
    result = cli("--config", str(redis_config), "up", "redis", "--discover", "compose", "--dry-run", "--json",
                 env=NO_COMPOSE)
    assert result.code == 1
    assert result.json()["discovery"]["source"] == "none"
    assert result.stderr.count("using the configured addresses") == 1


def test_an_address_from_the_environment_is_not_rediscovered(cli, compose_project: Path, write_config) -> None:
    closed = free_port()
    config = write_config(config_text({"redis": {"kind": "redis", "url": "redis://127.0.0.1:1/0",
                                                 "url_env": "REDIS_URL"}}))
    result = cli("--config", str(config), "up", "redis", "--discover", "compose", "--dry-run", "--json",
                 env={**NO_COMPOSE, "REDIS_URL": f"redis://127.0.0.1:{closed}/0"})
    assert result.json()["services"][0]["url"] == f"redis://127.0.0.1:{closed}/0"
    assert "redis" not in result.json()["discovery"]["services"]
