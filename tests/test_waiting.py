"""Waiting with real processes: admitted when a holder leaves, exit 3 on timeout, FIFO
order, no starvation of small requests, prompt wake-ups, dead waiters dropped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_run import wait_for

from conftest import _entry_point

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(small_config: Path, ledger_path: Path, home: Path) -> dict[str, str]:
    return {**os.environ, "NETRA_RM_CONFIG": str(small_config), "NETRA_RM_LEDGER": str(ledger_path)}


def allocate(env: dict[str, str], category: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*_entry_point(), "allocate", "--layer", "tiny", "--category", category, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def queue(ledger_path: Path) -> list[str]:
    return [w["category"] for w in json.loads(ledger_path.read_text())["waiters"]]


def test_admitted_when_a_holder_leaves(env: dict[str, str], cli, ledger_path: Path) -> None:
    held = cli("allocate", "--layer", "tiny", "--category", "big", "--memory-mb", "300", env=env)
    waiter = allocate(env, "w", "--memory-mb", "100", "--wait", "--timeout", "60")
    wait_for(lambda: queue(ledger_path) == ["w"], what="w queued")
    assert waiter.poll() is None
    assert cli("release", held.stdout.strip(), env=env).code == 0
    stdout, stderr = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, stderr
    assert len(stdout.strip()) == 12
    assert queue(ledger_path) == []
    grant = cli("history", "--json", env=env).json()["events"][-1]
    assert grant["event"] == "grant" and grant["id"] == stdout.strip() and grant["waited_seconds"] >= 0


def test_timeout_exits_3_and_leaves_the_queue(env: dict[str, str], cli, ledger_path: Path) -> None:
    cli("allocate", "--layer", "tiny", "--category", "big", "--memory-mb", "300", env=env)
    result = cli("allocate", "--layer", "tiny", "--category", "w", "--memory-mb", "100", "--timeout", "0.3", env=env)
    assert result.code == 3
    assert result.stdout == ""
    assert "after waiting 0.3s" in result.stderr and "layer tiny memory" in result.stderr
    assert queue(ledger_path) == []


def test_fifo_order_with_three_waiters(env: dict[str, str], cli, ledger_path: Path) -> None:
    """Each asks for the whole pool, so they can only go one by one: in arrival order."""
    held = cli("allocate", "--layer", "tiny", "--category", "holder", "--memory-mb", "300", env=env).stdout.strip()
    waiters = {}
    for name in ("first", "second", "third"):
        waiters[name] = allocate(env, name, "--memory-mb", "300", "--wait", "--timeout", "120")
        wait_for(lambda n=name: queue(ledger_path)[-1:] == [n], what=f"{name} queued")
    assert queue(ledger_path) == ["first", "second", "third"]
    current = held
    for name in ("first", "second", "third"):
        assert cli("release", current, env=env).code == 0
        stdout, stderr = waiters[name].communicate(timeout=60)
        assert waiters[name].returncode == 0, stderr
        current = stdout.strip()
    cli("release", current, env=env)
    grants = [e["category"] for e in cli("history", "--json", env=env).json()["events"] if e["event"] == "grant"]
    assert grants == ["holder", "first", "second", "third"]
    assert cli("verify", env=env).code == 0


def test_small_request_not_starved_unless_it_would_delay_the_head(env: dict[str, str], cli,
                                                                  ledger_path: Path) -> None:
    cli("allocate", "--layer", "tiny", "--category", "holder", "--memory-mb", "200", "--cpu-percent", "10",
        env=env)
    head = allocate(env, "head", "--memory-mb", "100", "--cpu-percent", "30", "--wait", "--timeout", "120")
    try:
        wait_for(lambda: queue(ledger_path) == ["head"], what="head queued")
        # fits now and beside the head later: goes past it at once, without waiting
        small = cli("allocate", "--layer", "tiny", "--category", "small", "--memory-mb", "100",
                    "--cpu-percent", "0", "--timeout", "30", env=env)
        assert small.code == 0, small.stderr
        # fits now too, but the head (30 % CPU) could not fit beside it: it must wait
        greedy = cli("allocate", "--layer", "tiny", "--category", "greedy", "--memory-mb", "0",
                     "--cpu-percent", "10", "--timeout", "0.3", env=env)
        assert greedy.code == 3
        assert "would delay number 1, head in layer tiny" in greedy.stderr
        assert queue(ledger_path) == ["head"]
    finally:
        head.kill()
        head.wait(timeout=30)


WAKE_WAITER = """
import sys, time
from netra_rm.core.engine import Engine
from netra_rm.core.waiting import allocate_waiting
engine = Engine.from_options(config_path=sys.argv[1], ledger=sys.argv[2], env={})
request = engine.resolve_request("tiny", "sleeper", memory_mb=100)
# the timer alone would not re-check for a minute: only a wake-up can admit it in time
allocation = allocate_waiting(engine, request, engine.owner(None), wait=True, timeout=120, first_pause=60,
                              max_pause=60)
print(allocation.id, flush=True)
"""


def test_a_release_wakes_the_waiter_at_once(env: dict[str, str], cli, small_config: Path, ledger_path: Path,
                                            tmp_path: Path) -> None:
    held = cli("allocate", "--layer", "tiny", "--category", "big", "--memory-mb", "300", env=env).stdout.strip()
    script = tmp_path / "waiter.py"
    script.write_text(WAKE_WAITER)
    proc = subprocess.Popen([sys.executable, str(script), str(small_config), str(ledger_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**env, "PYTHONPATH": str(ROOT)})
    wait_for(lambda: queue(ledger_path) == ["sleeper"], what="sleeper queued")
    released_at = time.monotonic()
    assert cli("release", held, env=env).code == 0
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert time.monotonic() - released_at < 30, "woken by the release, not by its 60 s timer"
    assert stdout.strip()


def test_a_dead_head_does_not_block_the_queue(env: dict[str, str], cli, ledger_path: Path) -> None:
    held = cli("allocate", "--layer", "tiny", "--category", "holder", "--memory-mb", "300", env=env).stdout.strip()
    head = allocate(env, "head", "--memory-mb", "300", "--wait", "--timeout", "120")
    wait_for(lambda: queue(ledger_path) == ["head"], what="head queued")
    second = allocate(env, "second", "--memory-mb", "300", "--wait", "--timeout", "120")
    wait_for(lambda: queue(ledger_path) == ["head", "second"], what="second queued")
    head.send_signal(signal.SIGKILL)
    head.wait(timeout=30)
    assert cli("release", held, env=env).code == 0
    stdout, stderr = second.communicate(timeout=60)
    assert second.returncode == 0, stderr
    assert queue(ledger_path) == []
    assert not list(ledger_path.with_name("ledger.json.wait").iterdir()), "FIFOs of dead waiters are removed"


def test_status_lists_waiters_with_wait_time(env: dict[str, str], cli, ledger_path: Path) -> None:
    cli("allocate", "--layer", "tiny", "--category", "holder", "--memory-mb", "300", env=env)
    waiter = allocate(env, "patient", "--memory-mb", "100", "--wait", "--timeout", "120")
    try:
        wait_for(lambda: queue(ledger_path) == ["patient"], what="patient queued")
        resources = cli("--json", "status", env=env).json()["resources"]
        (w,) = resources["waiters"]
        assert w["category"] == "patient" and w["position"] == 1 and w["memory_mb"] == 100
        assert w["waited_seconds"] >= 0 and w["owner"]["pid"] == waiter.pid
        human = cli("status", env=env)
        assert "Waiting (1)" in human.stdout and "patient" in human.stdout
    finally:
        waiter.kill()
        waiter.wait(timeout=30)
