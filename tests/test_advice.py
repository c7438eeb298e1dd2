"""Advice that is right: each service's remediation names where its address came from (the
variable that is set, the configuration file and key, the built-in defaults, or the
Compose service), never quotes a masked secret back as the fix, says when Redis wants a
password, and every `psql` and `redis-cli` line it suggests works against the real
servers the tests start."""

from __future__ import annotations

import re
import shlex
import subprocess
import urllib.parse
from dataclasses import replace
from pathlib import Path

import pytest

from netra_rm.config import load_config
from netra_rm.config.service import AddressOrigin, ComposeOrigin, ServiceSpec
from netra_rm.errors import ServiceCheckError
from netra_rm.services.probe import failed_result
from netra_rm.services.remediation import remediation_for
from netra_rm.services.rounds import check_one

from servers import PASSWORDS, find_binary

WRONG = "Wr0ng-Passw0rd-advice"


def joined(steps: tuple[str, ...] | list[str]) -> str:
    return "\n".join(steps)


def command(steps: tuple[str, ...] | list[str], program: str) -> list[str]:
    """The one `program ...` command the steps suggest, as an argument list."""
    (line,) = re.findall(rf"`({program} [^`]+)`", joined(steps))
    return shlex.split(line)


# -- where the address came from -------------------------------------------------------------------

def test_the_defaults_are_named_as_defaults_not_as_an_unset_variable() -> None:
    spec = load_config(env={}).services["postgresql"]
    steps = joined(remediation_for(spec, "refused"))
    assert "netra-rm's built-in default: DATABASE_URL is not set and no configuration file names postgresql" in steps
    assert "comes from DATABASE_URL" not in steps


def test_a_set_variable_is_named(tmp_path: Path) -> None:
    spec = load_config(env={"DATABASE_URL": "postgresql://app:s3cret-env@db.internal:5433/app"}).services["postgresql"]
    assert spec.origin == AddressOrigin("environment", variable="DATABASE_URL")
    steps = joined(remediation_for(spec, "refused"))
    assert "Its address comes from DATABASE_URL (now postgresql://app:***@db.internal:5433/app)" in steps
    assert "s3cret-env" not in steps


def test_the_configuration_file_and_key_are_named(tmp_path: Path) -> None:
    path = tmp_path / "ci.yaml"
    path.write_text("services:\n  postgresql:\n    kind: postgresql\n    url: postgresql://ci@127.0.0.1:5499/ci\n"
                    "    url_env: DATABASE_URL\n")
    config = load_config(path, env={})
    spec = config.services["postgresql"]
    steps = joined(remediation_for(spec, "refused"))
    assert f"Its address is services.postgresql.url in {path} (now postgresql://ci@127.0.0.1:5499/ci)" in steps
    assert "DATABASE_URL is not set" in steps
    # a service the file does not name still comes from the defaults
    assert "built-in default" in joined(remediation_for(config.services["redis"], "refused"))


def test_the_compose_service_is_named() -> None:
    origin = AddressOrigin("defaults", variable="DATABASE_URL",
                           compose=ComposeOrigin("dev-postgres", "/src/app/compose.yaml", "compose", "docker compose"))
    spec = ServiceSpec("postgresql", "postgresql", "postgresql://app:pw-x@localhost:5433/app", url_env="DATABASE_URL",
                       origin=origin)
    steps = joined(remediation_for(spec, "refused"))
    assert "`docker compose up -d dev-postgres`" in steps
    assert "came from Docker Compose: the port the compose service dev-postgres publishes" in steps
    assert "the user, password and database come from DATABASE_URL" in steps
    assert "docker compose up -d postgresql" not in steps and "pg_ctl" not in steps


# -- credentials, against the real servers -----------------------------------------------------------

@pytest.fixture
def pg_spec(pg_server) -> ServiceSpec:
    return ServiceSpec("postgresql", "postgresql", pg_server.url, url_env="DATABASE_URL",
                       origin=AddressOrigin("environment", variable="DATABASE_URL"))


def run(argv: list[str], *, env: dict[str, str] | None = None, input: str | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(argv, capture_output=True, text=True, timeout=30, input=input,
                          env={**os.environ, **(env or {})}, check=False)


def test_a_wrong_postgresql_password_is_not_answered_with_a_masked_one(pg_server, pg_spec: ServiceSpec) -> None:
    spec = replace(pg_spec, url=pg_server.url_with(password=WRONG))
    result = check_one(spec)
    assert result.reason == "auth"
    steps = joined(result.remediation)
    assert "rejected user 'netra' and the password that DATABASE_URL gives" in steps
    assert "put the right password (and user) in DATABASE_URL" in steps
    assert "***" not in steps  # nothing masked is offered as the fix
    assert WRONG not in steps and all(p not in steps for p in PASSWORDS)

    psql = find_binary("psql", pg=True)
    assert psql is not None
    argv = command(result.remediation, "psql")
    argv[0] = psql
    assert argv[1:] == ["-h", "127.0.0.1", "-p", str(pg_server.port), "-U", "netra", "-d", pg_server.database,
                        "-c", "SELECT 1"]
    right = run(argv, env={"PGPASSWORD": pg_server.password, "PGCONNECT_TIMEOUT": "5"})
    assert right.returncode == 0 and "1 row" in right.stdout, right.stderr
    wrong = run(argv, env={"PGPASSWORD": WRONG, "PGCONNECT_TIMEOUT": "5"})
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr


def test_a_postgresql_url_without_a_password_says_so(pg_server, pg_spec: ServiceSpec) -> None:
    no_password = pg_server.url_with(password="").replace(":@", "@")
    spec = replace(pg_spec, url=no_password)
    result = check_one(spec)
    assert result.reason == "auth"
    steps = joined(result.remediation)
    assert "wants a password for user 'netra' and DATABASE_URL has none" in steps
    assert "`netra:` then the password" in steps


@pytest.fixture
def redis_spec(redis_server) -> ServiceSpec:
    return ServiceSpec("redis", "redis", redis_server.url + "/0", url_env="REDIS_URL",
                       origin=AddressOrigin("environment", variable="REDIS_URL"))


def test_a_redis_that_wants_a_password_says_so_and_its_check_works(redis_server, redis_spec: ServiceSpec) -> None:
    spec = replace(redis_spec, url=f"redis://127.0.0.1:{redis_server.port}/0")
    result = check_one(spec)
    assert (result.reason, result.terminal) == ("auth", True)
    steps = joined(result.remediation)
    assert f"Redis at 127.0.0.1:{redis_server.port} requires a password (its requirepass) and REDIS_URL has none" \
        in steps
    argv = command(result.remediation, "redis-cli")
    assert argv[1:] == ["-h", "127.0.0.1", "-p", str(redis_server.port), "--askpass", "ping"]
    argv[0] = find_binary("redis-cli") or pytest.fail("redis-cli is missing (it comes with redis-server)")
    assert run(argv, input=redis_server.password + "\n").stdout.strip() == "PONG"
    assert "PONG" not in run(argv, input=WRONG + "\n").stdout  # the check tells a wrong one


def test_a_wrong_redis_password_is_not_answered_with_a_masked_one(redis_server, redis_spec: ServiceSpec) -> None:
    spec = replace(redis_spec, url=redis_server.url_with(password=WRONG) + "/0")
    result = check_one(spec)
    assert result.reason == "auth"
    steps = joined(result.remediation)
    assert "rejected the password that REDIS_URL gives" in steps and "***" not in steps
    argv = command(result.remediation, "redis-cli")
    argv[0] = find_binary("redis-cli") or pytest.fail("redis-cli is missing")
    assert run(argv, input=redis_server.password + "\n").stdout.strip() == "PONG"


def test_a_password_that_is_also_a_word_does_not_break_the_commands() -> None:
    """`postgres:postgres`, as in countless CI files: the user name stays in `createdb -U
    postgres`; only the URL's password is masked."""
    spec = ServiceSpec("postgresql", "postgresql", "postgresql://postgres:postgres@127.0.0.1:5432/app",
                       url_env="DATABASE_URL", origin=AddressOrigin("environment", variable="DATABASE_URL"))
    result = failed_result(spec, ServiceCheckError("database \"app\" does not exist", reason="unknown_database",
                                                   terminal=True))
    steps = joined(result.remediation)
    assert "`createdb -h 127.0.0.1 -p 5432 -U postgres app`" in steps
    assert "-U ***" not in steps


def test_a_socket_url_gets_socket_commands(pg_server) -> None:
    directory = urllib.parse.parse_qs(urllib.parse.urlsplit(pg_server.socket_url).query)["host"][0]
    spec = ServiceSpec("postgresql", "postgresql", pg_server.socket_url.replace(
        urllib.parse.quote(pg_server.password, safe=""), WRONG), url_env="DATABASE_URL")
    result = check_one(spec)
    assert result.reason == "auth"
    argv = command(result.remediation, "psql")
    argv[0] = find_binary("psql", pg=True) or ""
    assert argv[1:3] == ["-h", directory]
    done = run(argv, env={"PGPASSWORD": pg_server.password})
    assert done.returncode == 0, done.stderr
