"""`--requires` is a gate: on allocate, run, the Python API and the plugin, the named services
and what they depend on must be healthy (the checks `layer` runs), else exit 1 with the
remediation and nothing allocated; with --wait they are waited for within --timeout."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest

from servers import StubServer

CLOSED = "127.0.0.1:9"  # the discard port: nothing listens there


def held(ledger_path: Path) -> list[dict]:
    return json.loads(ledger_path.read_text())["allocations"] if ledger_path.exists() else []


def test_allocate_refuses_with_the_service_down(cli, ledger_path: Path) -> None:
    result = cli("allocate", "--layer", "fast_feedback", "--category", "c", "--requires", "clickhouse",
                 env={"CLICKHOUSE_URL": f"http://{CLOSED}/default"})
    assert result.code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("netra-rm: error: service clickhouse is unavailable:")
    assert "\n  - " in result.stderr, "the remediation steps follow"
    assert held(ledger_path) == []


def test_run_refuses_and_never_starts_cmd_when_a_dependency_is_down(cli, ledger_path: Path, pg_server, redis_server,
                                                                     tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    env = {"DATABASE_URL": pg_server.url, "REDIS_URL": redis_server.url,
           "AUTH_SERVICE_URL": f"http://{CLOSED}", "BACKEND_URL": f"http://{CLOSED}"}
    result = cli("run", "--layer", "fast_feedback", "--category", "c", "--requires", "backend", "--",
                 sys.executable, "-c", f"open({str(marker)!r}, 'w')", env=env)
    assert result.code == 1
    assert "service auth is unavailable" in result.stderr, "the root cause: backend depends on auth"
    assert "Also not ready: backend." in result.stderr
    assert not marker.exists() and held(ledger_path) == []


def test_run_goes_ahead_when_the_services_are_healthy(cli, pg_server, redis_server) -> None:
    env = {"DATABASE_URL": pg_server.url, "REDIS_URL": redis_server.url}
    result = cli("run", "--layer", "fast_feedback", "--category", "c", "--requires", "redis", "--requires",
                 "postgresql", "--", "true", env=env)
    assert (result.code, result.stderr) == (0, "")


def test_wait_gives_up_at_the_timeout(cli, ledger_path: Path) -> None:
    began = time.monotonic()
    result = cli("allocate", "--layer", "fast_feedback", "--category", "c", "--requires", "backend", "--wait",
                 "--timeout", "1.5", env={"BACKEND_URL": f"http://{CLOSED}", "AUTH_SERVICE_URL": f"http://{CLOSED}",
                                          "DATABASE_URL": f"postgresql://u@{CLOSED}/d",
                                          "REDIS_URL": f"redis://{CLOSED}/0"})
    assert result.code == 1
    assert 1.0 <= time.monotonic() - began < 20
    assert "(waited 1s)" in result.stderr or "(waited 2s)" in result.stderr
    assert held(ledger_path) == []


def test_wait_admits_once_the_service_comes_up(cli, ledger_path: Path, pg_server, redis_server) -> None:
    auth = StubServer("http", name="auth-late")
    auth.start()
    url = auth.url
    auth.stop()  # down now, on a port that is known; up again in a second
    timer = threading.Timer(1.0, auth.start)
    timer.start()
    began = time.monotonic()
    try:
        result = cli("allocate", "--layer", "fast_feedback", "--category", "c", "--requires", "auth", "--wait",
                     "--timeout", "30", env={"AUTH_SERVICE_URL": url, "DATABASE_URL": pg_server.url,
                                             "REDIS_URL": redis_server.url})
    finally:
        timer.join()
        auth.stop()
    assert result.code == 0, result.stderr
    assert time.monotonic() - began >= 1.0
    assert [a["id"] for a in held(ledger_path)] == [result.stdout.strip()]


def test_python_api_raises_service_unavailable(tmp_path: Path, home: Path) -> None:
    from netra_rm import ResourceRequirements, ServiceUnavailableError, create_resource_manager

    ledger = str(tmp_path / "api.json")
    with create_resource_manager(enable_monitoring=False, ledger=ledger,
                                 env={"CLICKHOUSE_URL": f"http://{CLOSED}/default", "HOME": str(home)}) as rm:
        with pytest.raises(ServiceUnavailableError) as raised:
            rm.allocate_resources("fast_feedback", "c", ResourceRequirements(requires_clickhouse=True))
        assert raised.value.service_name == "clickhouse" and raised.value.remediation_steps
        assert rm.allocate_resources("fast_feedback", "c", ResourceRequirements()) is not None
