"""`netra-rm run` when its allocation is lost while CMD runs: CMD is stopped (SIGTERM, then
SIGKILL after --kill-after) and run exits 6 with one sentence naming the cause; with
--on-lost warn CMD goes on. Each cause is produced for real, by other processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_run import CHILD, TINY, read_env, start, wait_for

LOST = 6


@pytest.fixture
def child(tmp_path: Path) -> Path:
    path = tmp_path / "child.py"
    path.write_text(CHILD)
    return path


@pytest.fixture
def env(small_config: Path, ledger_path: Path, home: Path) -> dict[str, str]:
    return {**os.environ, "NETRA_RM_CONFIG": str(small_config), "NETRA_RM_LEDGER": str(ledger_path)}


def running(env: dict[str, str], child: Path, out: Path, *options: str) -> tuple[subprocess.Popen[str], dict]:
    proc = start(env, "run", *TINY, *options, "--", sys.executable, str(child), str(out))
    seen = wait_for(lambda: read_env(out), what="CMD to start")
    assert isinstance(seen, dict)
    return proc, seen


def finish(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str, str]:
    stdout, stderr = proc.communicate(timeout=timeout)
    return proc.returncode, stdout, stderr


def test_released_by_another_stops_cmd_at_once(env: dict[str, str], cli, child: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc, seen = running(env, child, out)
    ident = seen["NETRA_RM_ALLOCATION_ID"]
    began = time.monotonic()
    assert cli("release", ident, env=env).code == 0
    code, stdout, stderr = finish(proc)
    assert code == LOST, stderr
    assert time.monotonic() - began < 2.0 + 1.5, "the loss is noticed within max(2 s, a tenth of the lease)"
    assert stdout == ""
    assert stderr.count("\n") == 1, stderr
    assert f"allocation {ident} (tiny/runner) was lost while the command ran: it was released by another process" \
        in stderr
    assert "was stopped (it was sent SIGTERM)" in stderr
    assert (out.with_name("out.signal")).read_text() == "SIGTERM"
    events = cli("history", "--json", env=env).json()["events"]
    assert [e["event"] for e in events] == ["grant", "release", "lost"]
    assert events[-1]["reason"] == "released" and events[-1]["action"] == "term"


def test_reclaimed_by_cleanup_force(env: dict[str, str], cli, child: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc, _ = running(env, child, out)
    assert cli("cleanup", "--force", env=env).code == 0
    code, _, stderr = finish(proc)
    assert code == LOST
    assert "it was reclaimed by netra-rm cleanup --force" in stderr


def test_expired_while_run_was_stopped(env: dict[str, str], cli, child: Path, tmp_path: Path,
                                       ledger_path: Path) -> None:
    out = tmp_path / "out"
    proc, seen = running(env, child, out, "--duration-minutes", "0.02")  # a 1.2 s hold, renewed while it runs
    os.kill(proc.pid, signal.SIGSTOP)  # the wrapper cannot renew; CMD runs on
    try:
        def expired() -> bool:
            held = json.loads(ledger_path.read_text())["allocations"]
            return bool(held) and held[0]["expires_at"] < time.time()

        wait_for(expired, what="the hold time to pass")
        assert cli("cleanup", env=env).code == 0  # anyone's transaction drops it as expired
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    code, _, stderr = finish(proc)
    assert code == LOST
    assert f"allocation {seen['NETRA_RM_ALLOCATION_ID']} (tiny/runner) was lost while the command ran: it " \
           "expired" in stderr


IGNORES_TERM = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(sys.argv[1], "w").write(os.environ["NETRA_RM_ALLOCATION_ID"])
while True:
    time.sleep(1)
"""


def test_a_cmd_that_ignores_sigterm_is_killed_after_kill_after(env: dict[str, str], cli, tmp_path: Path) -> None:
    script = tmp_path / "stubborn.py"
    script.write_text(IGNORES_TERM)
    marker = tmp_path / "id"
    proc = start(env, "run", *TINY, "--kill-after", "0.5", "--", sys.executable, str(script), str(marker))
    wait_for(lambda: marker.exists() and marker.read_text(), what="CMD to start")
    assert cli("release", marker.read_text(), env=env).code == 0
    code, _, stderr = finish(proc)
    assert code == LOST
    assert "it was sent SIGKILL after --kill-after" in stderr


def test_on_lost_warn_keeps_cmd_running(env: dict[str, str], cli, child: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc, seen = running(env, child, out, "--on-lost", "warn")
    assert cli("release", seen["NETRA_RM_ALLOCATION_ID"], env=env).code == 0

    def journaled() -> bool:
        return any(e["event"] == "lost" for e in cli("history", "--json", env=env).json()["events"])

    wait_for(journaled, what="the loss to be journaled")
    assert proc.poll() is None and not out.with_name("out.signal").exists(), "CMD goes on"
    os.kill(proc.pid, signal.SIGINT)  # forwarded: CMD ends with 100 + 2
    code, _, stderr = finish(proc)
    assert code == 102
    assert "warning: allocation" in stderr and "released by another process" in stderr
    assert "The command goes on (--on-lost warn)." in stderr


def test_bad_on_lost_and_kill_after_are_usage_errors(cli, small_config: Path) -> None:
    bad = cli("--config", str(small_config), "run", *TINY, "--on-lost", "ignore", "--", "true")
    assert bad.code == 2 and "ignore" in bad.stderr
    negative = cli("--config", str(small_config), "run", *TINY, "--kill-after", "-1", "--", "true")
    assert negative.code == 2


# -- on a server ledger: a lapsed lease reclaimed by another host, and a ledger that lost its state --

LEASED_CONFIG = """
layers:
  tiny:
    services: []
    pool: {memory_mb: 300, cpu_percent: 30, instances: 3}
machine:
  check_memory: false
allocations:
  lease_seconds: 1
"""


def _redis_eval(server: object, script: str, *args: str) -> None:
    from servers import HOST, _resp

    host, port = HOST, server.port  # type: ignore[attr-defined]
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(_resp("AUTH", server.password) + _resp("EVAL", script, "0", *args))  # type: ignore[attr-defined]
        data = b""
        while data.count(b"\r\n") < 2:
            data += sock.recv(4096)


def test_lease_lapsed_and_slot_fenced_by_another_host(redis_server, cli, write_config, child: Path, tmp_path: Path,
                                                      home: Path) -> None:
    config = write_config(LEASED_CONFIG, name="leased.yaml")
    ledger = f"{redis_server.url}?ledger=lost{os.urandom(4).hex()}"
    here = {**os.environ, "NETRA_RM_CONFIG": str(config), "NETRA_RM_LEDGER": ledger, "NETRA_RM_HOST_ID": "host-a"}
    there = {"NETRA_RM_CONFIG": str(config), "NETRA_RM_LEDGER": ledger, "NETRA_RM_HOST_ID": "host-b"}
    out = tmp_path / "out"
    proc, seen = running(here, child, out)
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        def reclaimed() -> bool:
            return cli("cleanup", env=there).stdout.startswith(f"released {seen['NETRA_RM_ALLOCATION_ID']}")

        wait_for(reclaimed, what="host b to reclaim the lapsed lease")
        successor = cli("allocate", "--layer", "tiny", "--category", "next", "--json", env=there).json()
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    code, _, stderr = finish(proc)
    assert code == LOST, stderr
    assert "its lease lapsed without renewal and another host reclaimed it" in stderr
    assert f"slot 0 now belongs to allocation {successor['id']} (fencing token {successor['fencing_token']}" in stderr


def test_ledger_lost_by_the_server(redis_server, env: dict[str, str], child: Path, tmp_path: Path) -> None:
    name = f"lost{os.urandom(4).hex()}"
    here = {**env, "NETRA_RM_LEDGER": f"{redis_server.url}?ledger={name}"}
    out = tmp_path / "out"
    proc, _ = running(here, child, out)
    _redis_eval(redis_server, "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end "
                              "return 1", f"*{name}*")
    code, _, stderr = finish(proc)
    assert code == LOST, stderr
    assert "the ledger lost its state" in stderr


def test_allocate_owner_pid_keeper_terms_the_owner_on_loss(cli, small_config: Path) -> None:
    owner = subprocess.Popen(["sleep", "60"])
    try:
        base = ("--config", str(small_config))
        ident = cli(*base, "allocate", "--layer", "tiny", "--category", "kept", "--owner-pid", str(owner.pid),
                    "--on-lost", "term").stdout.strip()
        assert cli(*base, "release", ident).code == 0
        assert owner.wait(timeout=30) == -signal.SIGTERM
        lost = [e for e in cli(*base, "history", "--json").json()["events"] if e["event"] == "lost"]
        assert [(e["id"], e["reason"], e["action"]) for e in lost] == [(ident, "released", "term")]
    finally:
        owner.kill()
        owner.wait()


def test_on_lost_without_owner_pid_is_bad_input(cli, small_config: Path) -> None:
    result = cli("--config", str(small_config), "allocate", "--layer", "tiny", "--category", "c", "--on-lost", "term")
    assert result.code == 2 and "--on-lost needs --owner-pid" in result.stderr
