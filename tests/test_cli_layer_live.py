"""The layer gate and `status` through the real entry point, against real servers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

from servers import HOST, PASSWORDS, wait_until

URL_VARIABLES = {"postgresql": "DATABASE_URL", "redis": "REDIS_URL", "clickhouse": "CLICKHOUSE_URL",
                 "backend": "BACKEND_URL", "auth": "AUTH_SERVICE_URL", "frontend": "FRONTEND_URL",
                 "websocket": "WEBSOCKET_URL"}


def live_env(live_servers) -> dict[str, str]:
    return {variable: live_servers[name].url + ("/ws" if name == "websocket" else "")
            for name, variable in URL_VARIABLES.items()}


def assert_no_password(*texts: str) -> None:
    for text in texts:
        for password in PASSWORDS:
            assert password not in text


def test_all_seven_healthy(cli, live_servers) -> None:
    env = live_env(live_servers)
    r = cli("--json", "status", "--strict", env=env)
    assert r.code == 0, r.stderr
    services = r.json()["services"]
    assert (services["healthy_services"], services["total_services"]) == (7, 7)
    assert services["services"]["postgresql"]["version"]
    assert services["services"]["postgresql"]["url"].count("***") == 1
    human = cli("status", env=env)
    assert "7 of 7 services healthy" in human.stdout
    assert cli("layer", "e2e_background", env=env).code == 0
    assert_no_password(r.stdout, r.stderr, human.stdout, human.stderr)


def test_redis_down_blocks_its_dependents(cli, live_servers, stop_server) -> None:
    env = live_env(live_servers)
    stop_server(live_servers["redis"])
    status = cli("--json", "status", env=env).json()["services"]["services"]
    assert status["redis"]["status"] == "unhealthy" and status["postgresql"]["status"] == "healthy"
    for dependent in ("auth", "backend", "frontend", "websocket"):
        assert status[dependent]["status"] == "blocked" and status[dependent]["blocked_by"] == ["redis"]
    core = cli("layer", "core_integration", env=env)
    assert core.code == 1
    assert "missing: redis" in core.stderr and "REDIS_URL" in core.stderr
    assert cli("layer", "fast_feedback", env=env).code == 0
    assert_no_password(core.stdout, core.stderr)


def test_wrong_password_is_terminal_and_stops_the_wait_early(cli, live_servers) -> None:
    env = {**live_env(live_servers), "DATABASE_URL": live_servers["postgresql"].url_with(password="wrong-pw-x")}
    started = time.monotonic()
    r = cli("--json", "layer", "core_integration", "--timeout", "60", env=env)
    assert r.code == 1
    assert time.monotonic() - started < 20
    data = r.json()
    assert data["missing"] == ["postgresql"] and data["services"]["postgresql"]["reason"] == "auth"
    assert "wrong-pw-x" not in r.stdout + r.stderr


def test_a_server_that_comes_up_during_the_wait(cli, live_servers, stop_server, ledger_path: Path) -> None:
    """Redis is down when `layer --timeout` starts; a spy on its port sees the first
    check, then the real server comes back and the gate opens."""
    redis = live_servers["redis"]
    env = {**os.environ, **live_env(live_servers), "NETRA_RM_LEDGER": str(ledger_path)}
    stop_server(redis)
    spy = socket.socket()
    spy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    spy.bind((HOST, redis.port))
    spy.listen(8)
    seen = threading.Event()

    def watch() -> None:
        conn, _ = spy.accept()
        conn.close()  # looks like a dying server to the checker
        seen.set()

    threading.Thread(target=watch, daemon=True).start()
    from conftest import _entry_point

    proc = subprocess.Popen([*_entry_point(), "--json", "layer", "core_integration", "--timeout", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    wait_until(seen.is_set, timeout=30, what="the first check of redis")
    spy.close()
    redis.start()
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    data = json.loads(out)
    assert data["ready"] is True and data["attempts"] >= 2
