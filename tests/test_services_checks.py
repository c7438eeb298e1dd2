"""Each checker against a real server: healthy, wrong password, unknown database, stopped, silent.

The servers come from tests/servers.py (PostgreSQL, Redis and ClickHouse from the
machine's binaries; HTTP, WebSocket and silent stubs as real processes).
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netra_rm.services import ServiceResult, ServiceSpec, check_services
from netra_rm.services.rounds import check_one

from servers import PASSWORDS, Server, StubServer, closed_port

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parent.parent
STARTUP_ORDER = ["clickhouse", "postgresql", "redis", "auth", "backend", "frontend", "websocket"]
WRONG_PASSWORD = "Wr0ng-Passw0rd-xyz"


def changed(spec: ServiceSpec, **fields: object) -> ServiceSpec:
    return dataclasses.replace(spec, **fields)


def timed_check(spec: ServiceSpec) -> tuple[ServiceResult, float]:
    """Check one service through the rounds (so its timeout applies); return it and seconds."""
    started = time.monotonic()
    results = check_services({spec.name: changed(spec, depends_on=())})
    return results[spec.name], time.monotonic() - started


def assert_no_secret(*results: ServiceResult, extra: tuple[str, ...] = ()) -> None:
    text = json.dumps([r.to_dict() for r in results]) + repr(results)
    for secret in PASSWORDS + extra:
        assert secret not in text


@pytest.fixture()
def loading_redis() -> Iterator[Server]:
    server = StubServer("redis-loading")
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def bad_websocket() -> Iterator[Server]:
    server = StubServer("ws-bad-accept")
    server.start()
    yield server
    server.stop()


# --------------------------------------------------------------------------- healthy


def test_all_seven_healthy_in_startup_order(service_specs: dict[str, ServiceSpec]) -> None:
    results = check_services(service_specs)

    assert list(results) == STARTUP_ORDER
    for name, result in results.items():
        assert result.status == "healthy", (name, result.error)
        assert result.reason == "ok" and result.error is None and not result.terminal
        assert result.latency_ms is not None and 0 < result.latency_ms < 2000
        assert result.remediation == () and result.blocked_by == ()
    assert re.match(r"^\d+\.\d+", results["postgresql"].version or "")
    assert re.match(r"^\d+\.\d+\.\d+$", results["redis"].version or "")
    assert re.match(r"^\d+\.\d+", results["clickhouse"].version or "")
    assert results["backend"].version == "1.4.2"  # from the JSON answer of /health
    assert results["postgresql"].method == "psycopg"
    assert results["websocket"].method == "rfc6455"
    assert_no_secret(*results.values())


def test_clickhouse_reports_the_way_it_queried(service_specs: dict[str, ServiceSpec]) -> None:
    result = check_one(service_specs["clickhouse"])

    assert result.status == "healthy", result.error
    major, minor = (int(x) for x in (result.version or "0.0").split(".")[:2])
    # clickhouse-connect cannot talk to servers before 19.17 (Debian ships 18.16): plain HTTP
    assert result.method == ("http" if (major, minor) < (19, 17) else "clickhouse-connect")
    assert result.to_dict()["method"] == result.method


def test_clickhouse_falls_back_when_clickhouse_connect_fails(
        service_specs: dict[str, ServiceSpec], monkeypatch: pytest.MonkeyPatch) -> None:
    from netra_rm.services import clickhouse

    spec = service_specs["clickhouse"]
    base = spec.url.split("@")[-1].split("/")[0]
    # make the checker try clickhouse-connect on whatever server runs here
    monkeypatch.setattr(clickhouse, "CLICKHOUSE_CONNECT_MIN_VERSION", (0, 0))
    monkeypatch.setattr(clickhouse, "_too_old", set())
    result = check_one(spec)

    assert result.status == "healthy", result.error
    if result.method == "http":  # clickhouse-connect could not talk to it: remembered
        assert clickhouse._too_old == {f"http://{base}"}
    else:
        assert result.method == "clickhouse-connect"


def test_to_dict_has_the_contract_fields(service_specs: dict[str, ServiceSpec]) -> None:
    data = check_one(service_specs["redis"]).to_dict()

    assert {"status", "url", "latency_ms", "error", "depends_on", "blocked_by"} <= set(data)
    assert {"version", "terminal", "reason", "method", "remediation", "kind"} <= set(data)
    assert data["url"].startswith("redis://:***@127.0.0.1:")
    json.dumps(data)


def test_tcp_checker_connects(redis_server: Server) -> None:
    spec = ServiceSpec(name="cache-port", kind="tcp", url=f"tcp://127.0.0.1:{redis_server.port}")
    result = check_one(spec)
    assert result.status == "healthy" and result.method == "tcp"


def test_http_json_field_must_equal_the_value(service_specs: dict[str, ServiceSpec]) -> None:
    backend = service_specs["backend"]
    nested = check_one(changed(backend, json_field="checks.replicas.0.state", json_value="up"))
    wrong = check_one(changed(backend, json_field="status", json_value="up"))
    missing = check_one(changed(backend, json_field="checks.cache", json_value="up"))
    degraded = check_one(changed(backend, health_path="/degraded", json_field="status",
                                 json_value="ok"))
    not_json = check_one(changed(backend, health_path="/text", json_field="status",
                                 json_value="ok"))

    assert nested.status == "healthy"
    assert (wrong.status, wrong.reason) == ("unhealthy", "bad_body")
    assert "status is 'ok', expected 'up'" in (wrong.error or "")
    assert missing.reason == "bad_body" and "checks.cache" in (missing.error or "")
    assert degraded.reason == "bad_body" and "'degraded'" in (degraded.error or "")
    assert not_json.reason == "bad_body" and "not JSON" in (not_json.error or "")
    assert not any(r.terminal for r in (wrong, missing, degraded, not_json))


def test_http_status_judged_against_expect_status(service_specs: dict[str, ServiceSpec]) -> None:
    backend = service_specs["backend"]
    down = check_one(changed(backend, health_path="/down"))
    down_expected = check_one(changed(backend, health_path="/down", expect_status=(503,)))
    ok_not_expected = check_one(changed(backend, expect_status=(204,)))
    private = check_one(changed(backend, health_path="/private"))

    assert (down.status, down.reason, down.terminal) == ("unhealthy", "bad_status", False)
    assert "answered 503, expected 2xx" in (down.error or "")
    assert down_expected.status == "healthy"
    assert ok_not_expected.reason == "bad_status" and "expected 204" in (ok_not_expected.error or "")
    assert (private.reason, private.terminal) == ("auth", True)


# --------------------------------------------------------------------------- credentials


def test_postgresql_wrong_password_is_a_terminal_auth_failure(pg_server: Server,
                                                              service_specs: dict[str, ServiceSpec]) -> None:
    spec = changed(service_specs["postgresql"], url=pg_server.url_with(password=WRONG_PASSWORD))
    result, seconds = timed_check(spec)

    assert seconds < 2.0
    assert (result.status, result.reason, result.terminal) == ("unhealthy", "auth", True)
    assert "authentication failed for user 'netra'" in (result.error or "")
    steps = " ".join(result.remediation)
    assert "DATABASE_URL" in steps and "***" not in steps  # the masked password is never the fix
    assert_no_secret(result, extra=(WRONG_PASSWORD,))


def test_redis_wrong_password_is_a_terminal_auth_failure(redis_server: Server,
                                                         service_specs: dict[str, ServiceSpec]) -> None:
    spec = changed(service_specs["redis"], url=redis_server.url_with(password=WRONG_PASSWORD))
    result, seconds = timed_check(spec)

    assert seconds < 2.0
    assert (result.status, result.reason, result.terminal) == ("unhealthy", "auth", True)
    assert "WRONGPASS" in (result.error or "")
    assert "REDIS_URL" in " ".join(result.remediation)
    assert_no_secret(result, extra=(WRONG_PASSWORD,))


def test_redis_without_password_is_noauth(redis_server: Server,
                                          service_specs: dict[str, ServiceSpec]) -> None:
    spec = changed(service_specs["redis"], url=f"redis://127.0.0.1:{redis_server.port}/0")
    result, _ = timed_check(spec)

    assert (result.reason, result.terminal) == ("auth", True)
    assert "NOAUTH" in (result.error or "")
    assert "requires a password (its requirepass) and services.redis.url (or REDIS_URL) has none" in \
        " ".join(result.remediation)


def test_redis_loading_is_transient(loading_redis: Server) -> None:
    spec = ServiceSpec(name="redis", kind="redis", url=loading_redis.url + "/0")
    result, _ = timed_check(spec)

    assert (result.status, result.reason, result.terminal) == ("unhealthy", "loading", False)
    assert "LOADING" in (result.error or "")


def test_clickhouse_wrong_password_is_a_terminal_auth_failure(
        clickhouse_server: Server, service_specs: dict[str, ServiceSpec]) -> None:
    spec = changed(service_specs["clickhouse"],
                   url=clickhouse_server.url_with(password=WRONG_PASSWORD))
    result, seconds = timed_check(spec)

    assert seconds < 2.0
    assert (result.reason, result.terminal) == ("auth", True)
    assert "CLICKHOUSE_URL" in " ".join(result.remediation)
    assert_no_secret(result, extra=(WRONG_PASSWORD,))


def test_postgresql_unknown_database(pg_server: Server,
                                     service_specs: dict[str, ServiceSpec]) -> None:
    spec = changed(service_specs["postgresql"], url=pg_server.url_with(database="no_such_db"))
    result, _ = timed_check(spec)

    assert (result.reason, result.terminal) == ("unknown_database", True)
    assert "database 'no_such_db' does not exist" in (result.error or "")
    assert f"createdb -h 127.0.0.1 -p {pg_server.port} -U netra no_such_db" in " ".join(result.remediation)


def test_clickhouse_unknown_database(clickhouse_server: Server,
                                     service_specs: dict[str, ServiceSpec]) -> None:
    spec = changed(service_specs["clickhouse"],
                   url=clickhouse_server.url_with(database="no_such_db"))
    result, _ = timed_check(spec)

    assert (result.reason, result.terminal) == ("unknown_database", True)
    assert "CREATE DATABASE no_such_db" in " ".join(result.remediation)


# --------------------------------------------------------------------------- down and silent


def test_stopped_redis_is_refused_and_transient(redis_server: Server, stop_server,
                                                service_specs: dict[str, ServiceSpec]) -> None:
    stop_server(redis_server)
    result, seconds = timed_check(service_specs["redis"])

    assert seconds < 1.0
    assert (result.status, result.reason, result.terminal) == ("unhealthy", "refused", False)
    steps = " ".join(result.remediation)
    assert f"redis-server --port {redis_server.port}" in steps
    assert "docker compose up -d redis" not in steps  # only a compose service that exists is named
    assert "services.redis.url in the configuration (now redis://:***@127.0.0.1:" in steps
    assert "or set REDIS_URL" in steps
    assert_no_secret(result)


def test_stopped_postgresql_is_refused(pg_server: Server, stop_server,
                                       service_specs: dict[str, ServiceSpec]) -> None:
    stop_server(pg_server)
    result, _ = timed_check(service_specs["postgresql"])

    assert (result.reason, result.terminal) == ("refused", False)
    assert f"pg_ctl -D <datadir> -o \"-p {pg_server.port}\" start" in " ".join(result.remediation)


@pytest.mark.parametrize("kind,url", [("clickhouse", "http://u:p@127.0.0.1:{port}/default"),
                                      ("http", "http://127.0.0.1:{port}"),
                                      ("websocket", "ws://127.0.0.1:{port}/ws"),
                                      ("tcp", "tcp://127.0.0.1:{port}")])
def test_nothing_listening_is_refused(kind: str, url: str) -> None:
    spec = ServiceSpec(name="svc", kind=kind, url=url.format(port=closed_port()))
    result, seconds = timed_check(spec)

    assert seconds < 1.0
    assert (result.status, result.reason, result.terminal) == ("unhealthy", "refused", False)
    steps = " ".join(result.remediation)
    assert ("Start ClickHouse" if kind == "clickhouse" else "Start svc so that it listens on 127.0.0.1:") in steps
    assert "docker compose" not in steps  # no compose service named svc is known


@pytest.mark.parametrize("kind,scheme", [("postgresql", "postgresql://u:pw-silent@"),
                                         ("redis", "redis://:pw-silent@"),
                                         ("clickhouse", "http://u:pw-silent@"),
                                         ("http", "http://"), ("websocket", "ws://")])
def test_silent_server_is_bounded_by_the_timeout(kind: str, scheme: str,
                                                 silent_server: Server) -> None:
    spec = ServiceSpec(name=f"silent-{kind}", kind=kind,
                       url=f"{scheme}127.0.0.1:{silent_server.port}/x",
                       connect_timeout=0.5, timeout=0.6)
    result, seconds = timed_check(spec)

    assert 0.5 <= seconds < 1.2
    assert (result.status, result.reason, result.terminal) == ("unhealthy", "timeout", False)
    assert "accepts connections but did not answer within 0.6 s" in " ".join(result.remediation)
    assert "pw-silent" not in json.dumps(result.to_dict())


def test_seven_with_one_silent_cost_one_timeout(service_specs: dict[str, ServiceSpec],
                                                silent_server: Server) -> None:
    timeout = 1.0
    specs = dict(service_specs)
    specs["frontend"] = changed(specs["frontend"], url=silent_server.url, timeout=timeout)
    started = time.monotonic()
    results = check_services(specs)
    seconds = time.monotonic() - started

    assert timeout <= seconds < 2 * timeout
    assert results["frontend"].reason == "timeout"
    assert [n for n, r in results.items() if r.healthy] == STARTUP_ORDER[:5] + ["websocket"]


def test_seven_silent_services_take_one_timeout_not_seven(service_specs: dict[str, ServiceSpec],
                                                          silent_server: Server) -> None:
    timeout = 1.0
    schemes = {"postgresql": "postgresql://u:p@", "redis": "redis://", "clickhouse": "http://",
               "http": "http://", "websocket": "ws://"}
    specs = {name: changed(spec, url=f"{schemes[spec.kind]}127.0.0.1:{silent_server.port}/x",
                           timeout=timeout, connect_timeout=timeout)
             for name, spec in service_specs.items()}
    started = time.monotonic()
    results = check_services(specs)
    seconds = time.monotonic() - started

    assert seconds < 2 * timeout
    roots = {n for n, r in results.items() if r.status == "unhealthy"}
    assert roots == {"postgresql", "redis", "clickhouse"}
    assert all(r.reason in ("timeout", "blocked") for r in results.values())


def test_deadline_cuts_a_long_check(silent_server: Server) -> None:
    spec = ServiceSpec(name="slow", kind="http", url=silent_server.url, connect_timeout=30,
                       timeout=30)
    started = time.monotonic()
    result = check_services({"slow": spec}, deadline=0.5)["slow"]

    assert time.monotonic() - started < 1.5
    assert result.reason == "timeout" and "deadline" in (result.error or "")
    hung = [t for t in threading.enumerate() if t.name == "netra-rm-check-slow"]
    assert all(t.daemon for t in hung)


def test_a_hung_check_does_not_hold_up_interpreter_exit(silent_server: Server) -> None:
    script = (
        "from netra_rm.services import ServiceSpec, check_services\n"
        f"spec = ServiceSpec(name='s', kind='http', url='http://127.0.0.1:{silent_server.port}',"
        " connect_timeout=60, timeout=60)\n"
        "print(check_services({'s': spec}, deadline=0.3)['s'].reason)\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=30, check=False)
    assert done.stdout.strip() == "timeout", done.stderr
    assert time.monotonic() - started < 5


# --------------------------------------------------------------------------- handshakes, URLs


def test_clickhouse_kind_needs_ping_to_answer_ok(backend_server: Server) -> None:
    # an HTTP server that is not ClickHouse: its /ping is a 404, not "Ok."
    result = check_one(ServiceSpec(name="clickhouse", kind="clickhouse", url=backend_server.url))
    assert result.reason == "bad_reply" and "/ping answered 404" in (result.error or "")


def test_websocket_needs_a_correct_accept_key(bad_websocket: Server) -> None:
    result = check_one(ServiceSpec(name="ws", kind="websocket", url=bad_websocket.url + "/ws"))
    assert result.reason == "bad_handshake" and "Sec-WebSocket-Accept" in (result.error or "")


def test_websocket_against_plain_http_is_not_healthy(backend_server: Server) -> None:
    url = backend_server.url.replace("http://", "ws://") + "/ws"
    result = check_one(ServiceSpec(name="ws", kind="websocket", url=url))
    assert result.reason == "bad_status" and "not 101" in (result.error or "")


@pytest.mark.parametrize("kind,url", [
    ("postgresql", "postgresql://u:SecretInBadUrl@127.0.0.1:99999/db"),
    ("redis", "http://:SecretInBadUrl@127.0.0.1:6379/0"),
    ("http", "ftp://127.0.0.1/health"),
    ("websocket", "ws:///nohost"),
    ("tcp", "tcp://127.0.0.1"),
])
def test_malformed_url_is_terminal(kind: str, url: str) -> None:
    result = check_one(ServiceSpec(name="svc", kind=kind, url=url))
    assert (result.reason, result.terminal) == ("bad_url", True)
    assert "SecretInBadUrl" not in json.dumps(result.to_dict())


@pytest.mark.parametrize("kind,url", [
    ("postgresql", "postgresql://u:p@no-such-host.invalid:5432/db"),
    ("redis", "redis://no-such-host.invalid:6379/0"),
    ("http", "http://no-such-host.invalid:8000"),
])
def test_unresolvable_host_is_terminal(kind: str, url: str) -> None:
    result = check_one(ServiceSpec(name="svc", kind=kind, url=url))
    assert (result.reason, result.terminal) == ("dns", True), result.error


def test_unknown_kind_is_unknown() -> None:
    result = check_one(ServiceSpec(name="mq", kind="amqp", url="amqp://127.0.0.1"))
    assert (result.status, result.reason) == ("unknown", "unknown_kind")


def test_no_password_in_any_result(service_specs: dict[str, ServiceSpec], pg_server: Server,
                                   redis_server: Server, clickhouse_server: Server,
                                   silent_server: Server) -> None:
    specs = dict(service_specs)
    results = list(check_services(specs).values())
    results.append(check_one(changed(specs["postgresql"], url=pg_server.url_with(password=WRONG_PASSWORD))))
    results.append(check_one(changed(specs["redis"], url=redis_server.url_with(password=WRONG_PASSWORD))))
    results.append(check_one(changed(specs["clickhouse"],
                                     url=clickhouse_server.url_with(password=WRONG_PASSWORD))))
    results.append(check_one(changed(specs["postgresql"], url=pg_server.url_with(database="nope"))))
    silent = f"redis://:{WRONG_PASSWORD}@127.0.0.1:{silent_server.port}/0"
    results.extend(check_services({"redis": changed(specs["redis"], url=silent, timeout=0.3)}).values())

    assert {r.reason for r in results} >= {"ok", "auth", "unknown_database", "timeout"}
    assert_no_secret(*results, extra=(WRONG_PASSWORD,))


# --------------------------------------------------------------------------- import cost


def test_importing_services_loads_no_driver() -> None:
    script = (
        "import sys, netra_rm.services\n"
        "from netra_rm.services import ServiceSpec, check_services\n"
        "check_services({'t': ServiceSpec(name='t', kind='tcp', url='tcp://127.0.0.1:1')})\n"
        "print(sorted(m for m in ('psycopg', 'redis', 'httpx', 'clickhouse_connect') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                          timeout=30, check=False)
    assert done.stdout.strip() == "[]", done.stderr


# -- Unix sockets ---------------------------------------------------------------------------


def test_postgresql_and_redis_through_their_unix_sockets(pg_server: Server, redis_server: Server) -> None:
    specs = {
        "pg": ServiceSpec(name="pg", kind="postgresql", url=pg_server.socket_url),  # type: ignore[attr-defined]
        "cache": ServiceSpec(name="cache", kind="redis", url=redis_server.socket_url),  # type: ignore[attr-defined]
    }
    results = check_services(specs)
    assert results["pg"].status == "healthy", results["pg"].error
    assert results["cache"].status == "healthy", results["cache"].error
    assert results["pg"].version and results["cache"].version
    assert_no_secret(*results.values())


def test_a_unix_socket_nobody_listens_on_is_refused_naming_the_socket(tmp_path: Path) -> None:
    specs = {
        "pg": ServiceSpec(name="pg", kind="postgresql",
                          url=f"postgresql://netra:{WRONG_PASSWORD}@/db?host={tmp_path}&port=5499"),
        "cache": ServiceSpec(name="cache", kind="redis", url=f"unix://:{WRONG_PASSWORD}@{tmp_path}/none.sock"),
    }
    results = check_services(specs, deadline=10.0)
    pg, cache = results["pg"], results["cache"]
    assert (pg.status, pg.reason, pg.terminal) == ("unhealthy", "refused", False), pg.error
    assert f"{tmp_path}/.s.PGSQL.5499" in (pg.error or "")
    assert (cache.status, cache.reason, cache.terminal) == ("unhealthy", "refused", False), cache.error
    assert f"{tmp_path}/none.sock" in (cache.error or "")
    assert any(f"-k {tmp_path} -p 5499" in step for step in pg.remediation)
    assert any(f"--unixsocket {tmp_path}/none.sock" in step for step in cache.remediation)
    assert_no_secret(pg, cache, extra=(WRONG_PASSWORD,))


@pytest.mark.parametrize("url", ["unix://", "unix://:pw@", "postgresql://u@/db?host=relative/dir"])
def test_a_malformed_socket_url_is_a_terminal_bad_url(url: str) -> None:
    kind = "redis" if url.startswith("unix") else "postgresql"
    result = check_services({"s": ServiceSpec(name="s", kind=kind, url=url)})["s"]
    assert (result.reason, result.terminal) == ("bad_url", True), result.error
