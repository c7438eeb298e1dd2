"""The ledger on Redis and PostgreSQL, against real servers started by the test suite:
the same commands on every backend, passwords never shown, outages that exit 5 quickly
naming the backend, a Redis restart without persistence detected, and a backend stopped
in the middle of a contended run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netra_rm.config import load_config
from netra_rm.core.engine import Engine
from netra_rm.errors import LedgerError

from backends import Backend, ledger_name
from conftest import SMALL_CONFIG
from servers import PASSWORDS, RedisServer, ServerUnavailable, closed_port

WORKER = Path(__file__).with_name("workers") / "outage_worker.py"
GLOBAL_CONFIG = SMALL_CONFIG.replace("pool: {memory_mb: 300, cpu_percent: 30, instances: 3}",
                                     "pool: {memory_mb: 300, cpu_percent: 30, instances: 3, scope: global}")


def no_password_in(*texts: str) -> None:
    for text in texts:
        for password in PASSWORDS:
            assert password not in text


def engine_for(location: str, tmp_path: Path, *, host: str = "ci-runner-1", config: str = GLOBAL_CONFIG,
               state: str = "state") -> Engine:
    path = tmp_path / "netra-rm.yaml"
    path.write_text(config)
    env = {"NETRA_RM_HOST_ID": host, "XDG_STATE_HOME": str(tmp_path / state)}
    return Engine.from_options(config=load_config(path, env={}), ledger=location, env=env)


# -- the same commands on every backend ------------------------------------------------------

def test_allocate_status_release_work_the_same_on_every_backend(cli, backend: Backend, small_config: Path) -> None:
    env = {"NETRA_RM_LEDGER": backend.location}
    first = cli("--config", str(small_config), "allocate", "--layer", "tiny", "--category", "db", env=env)
    assert first.code == 0, first.stderr
    allocation_id = first.stdout.strip()
    assert len(allocation_id) == 12 and first.stderr == ""

    status = cli("--config", str(small_config), "status", "--json", env=env)
    assert status.code == 0, status.stderr
    resources = status.json()["resources"]
    assert [a["id"] for a in resources["active_allocations"]] == [allocation_id]
    assert resources["resource_pools"]["tiny"]["active_instances"] == 1
    table = cli("--config", str(small_config), "status", env={**env, "COLUMNS": "200"})
    assert table.code == 0 and allocation_id in table.stdout
    no_password_in(table.stdout, table.stderr)

    released = cli("release", allocation_id, "--json", env=env)
    assert (released.code, released.json()) == (0, {"schema_version": 1, "released": [allocation_id], "missing": []})
    again = cli("release", allocation_id, env=env)
    assert again.code == 4
    assert f"allocation {allocation_id} not found" in again.stderr
    no_password_in(first.stdout, first.stderr, status.stdout, status.stderr, released.stdout, again.stderr)


def test_verify_and_history_read_the_servers_journal(cli, server_backend: Backend, small_config: Path) -> None:
    env = {"NETRA_RM_LEDGER": server_backend.location}
    ids = [cli("--config", str(small_config), "allocate", "--layer", "tiny", "--category", f"c{i}", env=env)
           .stdout.strip() for i in range(3)]
    assert cli("release", ids[0], env=env).code == 0

    verified = cli("--config", str(small_config), "verify", "--json", env=env)
    assert verified.code == 0, verified.stdout + verified.stderr
    assert verified.json()["clean"] is True
    history = cli("history", "--json", env=env).json()["events"]
    assert [(e["event"], e["id"]) for e in history] == [("grant", ids[0]), ("grant", ids[1]), ("grant", ids[2]),
                                                       ("release", ids[0])]
    no_password_in(verified.stdout, verified.stderr)
    assert "***" in verified.json()["ledger"]


def test_waiters_on_a_server_ledger_are_woken_when_room_is_freed(cli, server_backend: Backend,
                                                                write_config) -> None:
    config = write_config(SMALL_CONFIG.replace("instances: 3", "instances: 1"))
    env = {**os.environ, "NETRA_RM_LEDGER": server_backend.location, "NETRA_RM_CONFIG": str(config)}
    held = cli("allocate", "--layer", "tiny", "--category", "first", env=env).stdout.strip()
    waiter = subprocess.Popen([sys.executable, "-m", "netra_rm", "allocate", "--layer", "tiny", "--category",
                               "second", "--wait", "--timeout", "30"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not cli("status", "--json", env=env).json()["resources"]["waiters"]:
        assert time.monotonic() < deadline, "the waiter never joined the queue"
        time.sleep(0.05)
    released_at = time.monotonic()
    assert cli("release", held, env=env).code == 0
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err
    assert len(out.strip()) == 12
    assert time.monotonic() - released_at < 5, "the waiter should be woken, not wait for its next poll"


# -- passwords and outages ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["redis", "postgresql"])
def test_an_unreachable_server_exits_5_quickly_naming_it_with_the_password_masked(cli, kind: str) -> None:
    port = closed_port()
    url = (f"redis://:{PASSWORDS[1]}@127.0.0.1:{port}/0" if kind == "redis"
           else f"postgresql://netra:{PASSWORDS[0]}@127.0.0.1:{port}/netra_test")
    began = time.monotonic()
    result = cli("--ledger", url, "allocate", "--layer", "fast_feedback", "--category", "x")
    assert result.code == 5
    assert time.monotonic() - began < 10
    name = "Redis" if kind == "redis" else "PostgreSQL"
    assert f"the {name} ledger at {kind}://" in result.stderr
    assert f"***@127.0.0.1:{port}" in result.stderr
    assert "cannot be reached" in result.stderr
    assert ("redis-cli" if kind == "redis" else "pg_isready") in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    no_password_in(result.stdout, result.stderr)


def test_a_server_that_never_answers_is_given_up_on_within_the_timeout(cli, silent_server) -> None:
    url = f"redis://:{PASSWORDS[1]}@127.0.0.1:{silent_server.port}/0?timeout=1"
    began = time.monotonic()
    result = cli("--ledger", url, "release", "abc")
    elapsed = time.monotonic() - began
    assert result.code == 5
    assert "did not answer within 1s" in result.stderr
    assert elapsed < 6
    no_password_in(result.stderr)


def test_wrong_credentials_are_named_as_such(cli, server_backend: Backend) -> None:
    url = server_backend.location.replace(PASSWORDS[0], "wrong-one").replace(PASSWORDS[1], "wrong-one")
    result = cli("--ledger", url, "status", "--json")
    assert result.code == 5
    assert "refused the credentials" in result.stderr or "password authentication failed" in result.stderr
    assert "wrong-one" not in result.stderr


def test_the_postgresql_tables_are_created_once_and_a_newer_schema_is_refused(pg_server, tmp_path: Path) -> None:
    import psycopg

    name = ledger_name()
    engine = engine_for(f"{pg_server.url}?ledger={name}", tmp_path)
    assert engine.active_allocations() == []
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'netra_rm_%'")}
        assert tables == {"netra_rm_meta", "netra_rm_ledgers", "netra_rm_pools", "netra_rm_allocations",
                          "netra_rm_waiters", "netra_rm_journal", "netra_rm_requests"}
        conn.execute("UPDATE netra_rm_meta SET value = '99' WHERE key = 'schema_version'")
        try:
            with pytest.raises(LedgerError) as failed:
                engine_for(f"{pg_server.url}?ledger={name}", tmp_path).active_allocations()
            assert "set up by a newer netra-rm (tables version 99" in failed.value.message
        finally:
            conn.execute("UPDATE netra_rm_meta SET value = '2' WHERE key = 'schema_version'")


def test_allocate_with_the_file_ledger_loads_no_server_driver(home: Path, tmp_path: Path) -> None:
    code = ("import sys, runpy\n"
            "sys.argv = ['netra-rm', 'allocate', '--layer', 'fast_feedback', '--category', 'x']\n"
            "try:\n    runpy.run_module('netra_rm', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in ('redis', 'psycopg', 'netra_rm.ledger.redis', 'netra_rm.ledger.postgres')"
            " if m in sys.modules), file=sys.stderr)\n")
    env = {**os.environ, "NETRA_RM_LEDGER": str(tmp_path / "ledger.json")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.stderr.strip().splitlines()[-1] == "[]"


# -- Redis restarted without persistence -----------------------------------------------------

@pytest.fixture
def own_redis():
    """A Redis server of this test's own (it is restarted), without persistence."""
    server = RedisServer()
    try:
        server.start()
    except ServerUnavailable as exc:
        server.close()
        pytest.skip(str(exc))
    yield server
    server.close()


def test_a_redis_restart_without_persistence_is_reported_not_started_over(cli, own_redis, small_config: Path) -> None:
    env = {"NETRA_RM_LEDGER": f"{own_redis.url}?ledger=fleet", "NETRA_RM_CONFIG": str(small_config)}
    first = cli("allocate", "--layer", "tiny", "--category", "db", "--json", env=env)
    assert first.code == 0, first.stderr
    token = first.json()["fencing_token"]

    own_redis.restart()  # no persistence: the server comes back empty

    refused = cli("allocate", "--layer", "tiny", "--category", "db", env=env)
    assert refused.code == 5
    assert "lost its state" in refused.stderr and "restarted without persistence" in refused.stderr
    assert "cleanup --force" in refused.stderr and "appendonly yes" in refused.stderr
    assert refused.stdout == ""
    no_password_in(refused.stderr)
    assert cli("release", first.json()["id"], env=env).code == 5  # nothing is changed meanwhile

    reset = cli("cleanup", "--force", env=env)
    assert reset.code == 0, reset.stderr
    after = cli("allocate", "--layer", "tiny", "--category", "db", "--json", env=env)
    assert after.code == 0, after.stderr
    assert after.json()["fencing_token"] > token  # fencing continues above what was handed out


def test_another_host_that_remembers_the_ledger_refuses_it_too(own_redis, tmp_path: Path) -> None:
    url = f"{own_redis.url}?ledger=fleet"
    a = engine_for(url, tmp_path, host="a", state="state-a")
    b = engine_for(url, tmp_path, host="b", state="state-b")
    request = a.resolve_request("tiny", "db")
    a.allocate(request, a.owner())
    b.active_allocations()  # b has seen the ledger too
    own_redis.restart()
    fresh = engine_for(url, tmp_path, host="c", state="state-c")  # a host that never saw it
    fresh.allocate(request, fresh.owner())  # cannot know: it starts a new ledger
    with pytest.raises(LedgerError) as failed:
        b.active_allocations()
    assert "started again from scratch" in failed.value.message


# -- a backend stopped in the middle of a contended run ----------------------------------------

def run_through_outage(tmp_path: Path, location: str, stop, start, *, workers: int = 8,
                       iterations: int = 40) -> tuple[list[dict], float]:
    """Run workers on pretend hosts, stop the backend once they are going, start it again
    after a second; their events and how long the outage lasted."""
    config = tmp_path / "netra-rm.yaml"
    config.write_text(GLOBAL_CONFIG + "allocations:\n  lease_seconds: 2\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
           "XDG_STATE_HOME": str(tmp_path / "state")}
    procs = []
    for i in range(workers):
        log = tmp_path / f"worker{i}.log"
        procs.append((subprocess.Popen([sys.executable, str(WORKER), str(config), location, str(log),
                                        str(iterations), f"ci-runner-{i % 4}"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env), log))
    for proc, _ in procs:
        assert proc.stdout.readline().strip() == "ready"
    for proc, _ in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    watcher = Engine.from_options(config=load_config(config, env={}), ledger=location,
                                  env={"XDG_STATE_HOME": str(tmp_path / "watcher")})
    deadline = time.monotonic() + 30
    while watcher.ledger.read().journal_seq < workers * 3:
        assert time.monotonic() < deadline, "the workers did not get going"
        time.sleep(0.02)
    stop()
    down_at = time.monotonic()
    time.sleep(1.0)  # an outage that lasts: the workers see it
    start()
    outage = time.monotonic() - down_at
    events = []
    for proc, log in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        events += [json.loads(line) for line in log.read_text().splitlines()]
    return events, outage


def peak_held(events: list[dict]) -> int:
    held, peak = set(), 0
    for e in sorted(events, key=lambda e: (e["t"], e["event"] != "release")):
        if e["event"] == "grant":
            held.add(e["id"])
            peak = max(peak, len(held))
        elif e["event"] == "release":
            held.discard(e["id"])
    return peak


def test_postgresql_stopped_mid_run_and_restarted_grants_nothing_twice(pg_server, tmp_path: Path) -> None:
    location = f"{pg_server.url}?ledger={ledger_name()}"
    events, outage = run_through_outage(tmp_path, location, pg_server.stop, pg_server.start)
    outages = [e for e in events if e["event"] == "outage"]
    assert outages, "the workers should have seen the outage"
    assert max(e["seconds"] for e in outages) < 10  # each failed call gave up quickly
    assert all("PostgreSQL ledger at postgresql://netra:***@" in e["message"] for e in outages)
    assert not [e for e in events if e["event"] == "fenced"]
    assert sum(e["event"] == "grant" for e in events) == 8 * 40  # everyone finished after the restart
    assert peak_held(events) <= 3
    engine = engine_for(location, tmp_path, host="auditor", state="auditor")
    from netra_rm.core.verify import verify_ledger

    assert verify_ledger(engine).findings == ()


def test_redis_stopped_mid_run_without_persistence_fences_every_worker(own_redis, tmp_path: Path) -> None:
    location = f"{own_redis.url}?ledger=fleet"
    # more rounds than any worker can finish before the stop lands: each one meets the restart
    events, _ = run_through_outage(tmp_path, location, own_redis.stop, own_redis.start, iterations=100_000)
    fenced = [e for e in events if e["event"] == "fenced"]
    assert len(fenced) == 8, "every worker should stop: the ledger lost its state"
    assert all("lost its state" in e["message"] or "started again" in e["message"] for e in fenced)
    outages = [e for e in events if e["event"] == "outage"]
    assert max(e["seconds"] for e in outages) < 10
    assert peak_held(events) <= 3
    # nothing was granted on the empty server: the ledger was never started again
    after = engine_for(location, tmp_path, state="auditor").ledger.read()
    assert (after.ledger_id, after.counter, after.known) == (None, 0, {})


def test_redis_stopped_mid_run_with_persistence_carries_on(own_redis, tmp_path: Path) -> None:
    from netra_rm.ledger.redis_wire import Wire
    from netra_rm.ledger.server import ServerOptions

    Wire(own_redis.url, ServerOptions()).call("CONFIG", "SET", "save", "3600 1")  # saved on shutdown
    location = f"{own_redis.url}?ledger=fleet"
    events, _ = run_through_outage(tmp_path, location, own_redis.stop, own_redis.start)
    assert not [e for e in events if e["event"] == "fenced"]
    assert [e for e in events if e["event"] == "outage"]
    assert sum(e["event"] == "grant" for e in events) == 8 * 40
    assert peak_held(events) <= 3


def test_a_release_without_the_lock_agrees_with_a_release_under_it(redis_server, tmp_path: Path) -> None:
    """Redis releases in one call when nobody waits, journaled in the same step: the
    outcome, the journal and the capacity are those of a release in a transaction."""
    from netra_rm.core.verify import ledger_history, verify_ledger

    location = f"{redis_server.url}?ledger={ledger_name()}"
    fast = engine_for(location, tmp_path)
    locked = engine_for(location, tmp_path)
    locked.ledger.fast_release = lambda ids, events=None: None  # type: ignore[method-assign] - the transaction
    request = fast.resolve_request("tiny", "db")
    one, two, three = (fast.allocate(request, fast.owner()) for _ in range(3))
    assert fast.try_allocate(request, fast.owner())[0] is None  # full

    by_fast = fast.release([one.id, "nosuchid0000"])
    by_lock = locked.release([two.id, "nosuchid0000"])
    assert ([a.id for a in by_fast.released], by_fast.missing) == ([one.id], ["nosuchid0000"])
    assert ([a.id for a in by_lock.released], by_lock.missing) == ([two.id], ["nosuchid0000"])
    assert fast.release([one.id]).missing == [one.id]  # released once only
    assert locked.try_allocate(request, locked.owner())[0] is not None  # the room is there at once

    events = {e["id"]: e for e in ledger_history(locked) if e["event"] == "release"}
    strip = lambda e: {k: v for k, v in e.items() if k not in ("id", "seq", "time", "fencing_token", "slot", "slots")}  # noqa: E731
    assert strip(events[one.id]) == strip(events[two.id])
    assert verify_ledger(locked).findings == ()
    assert three.id in {a.id for a in fast.active_allocations()}


def test_a_hung_postgresql_server_is_given_up_on_within_the_timeout(pg_server, tmp_path: Path) -> None:
    """The server process serving our connection stops (SIGSTOP) mid-way: TCP stays up, so
    only netra-rm's own deadline ends the wait."""
    import signal

    from netra_rm.ledger import Scope
    from netra_rm.ledger.postgres import PostgresLedger
    from netra_rm.ledger.server import ServerOptions

    ledger = PostgresLedger(f"{pg_server.url}?ledger={ledger_name()}",
                            options=ServerOptions(io_timeout=1.0, lock_wait=1.0))
    with ledger.transaction(Scope()) as txn:
        txn.journal({"time": txn.now, "event": "note"})
    backend_pid = ledger._conn.info.backend_pid
    os.kill(backend_pid, signal.SIGSTOP)
    try:
        began = time.monotonic()
        with pytest.raises(LedgerError) as failed:
            with ledger.transaction(Scope(keys=frozenset({"layer:tiny"}))):
                pass
        assert time.monotonic() - began < 5
        assert "did not answer within 2s" in failed.value.message
        assert PASSWORDS[0] not in failed.value.message
    finally:
        os.kill(backend_pid, signal.SIGCONT)
    with ledger.transaction(Scope(keys=frozenset({"layer:tiny"}))) as txn:  # a new connection, and on it goes
        assert txn.usage("layer:tiny").instances == 0


@pytest.mark.parametrize("kind", ["redis", "postgresql"])
def test_a_server_ledger_through_its_unix_socket(kind: str, request: pytest.FixtureRequest, cli,
                                                 small_config: Path) -> None:
    server = request.getfixturevalue("redis_server" if kind == "redis" else "pg_server")
    location = f"{server.socket_url}&ledger=sock{os.urandom(4).hex()}"
    ledger = ["--config", str(small_config), "--ledger", location]
    granted = cli(*ledger, "allocate", "--layer", "tiny", "--category", "via-socket", "--memory-mb", "100")
    assert granted.code == 0, granted.stderr
    ident = granted.stdout.strip()
    status = cli(*ledger, "status", "--json")
    assert [a["id"] for a in status.json()["resources"]["active_allocations"]] == [ident]
    assert status.json()["resources"]["ledger"].startswith("unix://" if kind == "redis" else "postgresql://")
    assert cli(*ledger, "release", ident).code == 0
    for output in (granted.stdout + granted.stderr, status.stdout):
        assert server.password not in output


def test_a_unix_socket_ledger_nobody_listens_on_is_exit_5(cli, tmp_path: Path) -> None:
    missing = cli("--ledger", f"unix://:pw-Sock-9@{tmp_path}/none.sock", "allocate", "--layer", "fast_feedback",
                  "--category", "x")
    assert missing.code == 5, missing.stderr
    assert "cannot be reached" in missing.stderr and "none.sock" in missing.stderr
    assert "pw-Sock-9" not in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.parametrize("location", ["redis://:pw-Bad-7@h:abc/0", "redis://:pw-Bad-7@h/x", "unix://:pw-Bad-7@relative"])
def test_a_malformed_redis_ledger_url_is_bad_input(cli, location: str) -> None:
    result = cli("--ledger", location, "status")
    assert result.code == 2, result.stderr
    assert "malformed" in result.stderr and "redis://HOST" in result.stderr
    assert "pw-Bad-7" not in result.stderr and "Traceback" not in result.stderr and "bug" not in result.stderr
