"""The PostgreSQL ledger as tables, against a real server started by the test suite.

Disjoint pools never wait on each other; a schema-1 ledger (one JSON document) is
upgraded with its journal; a reply lost after the commit was sent is resolved by the
request id (a fault proxy on loopback cuts the connection), also under
``pg_terminate_backend`` storms and SIGKILL storms; fencing tokens never repeat for a
ledger name, a counter that went back is refused, a stalled holder's late commit is
refused; leases are judged by the server's clock; a release wakes exactly the waiters it
can serve; a transaction costs two round trips.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from netra_rm.config import load_config
from netra_rm.core.engine import Engine
from netra_rm.errors import LedgerError
from netra_rm.ledger import Scope
from netra_rm.records import Allocation, Owner, token_floor

from backends import draw_request, ledger_name, random_admission_config
from conftest import SMALL_CONFIG, _entry_point
from servers import PASSWORDS, TcpProxy, closed_port

ROOT = Path(__file__).resolve().parent.parent
WORKERS = Path(__file__).with_name("workers")
GLOBAL_CONFIG = SMALL_CONFIG.replace("pool: {memory_mb: 300, cpu_percent: 30, instances: 3}",
                                     "pool: {memory_mb: 300, cpu_percent: 30, instances: 3, scope: global}")


def engine_for(location: str, tmp_path: Path, *, host: str = "ci-runner-1", config: str = GLOBAL_CONFIG,
               state: str = "state") -> Engine:
    path = tmp_path / f"netra-rm-{abs(hash(config)) % 10**8}.yaml"
    path.write_text(config)
    env = {"NETRA_RM_HOST_ID": host, "XDG_STATE_HOME": str(tmp_path / state)}
    return Engine.from_options(config=load_config(path, env={}), ledger=location, env=env)


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    pause = 0.01
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def sql(url: str, query: str, params: object = None) -> list[tuple]:
    import psycopg

    with psycopg.connect(url, autocommit=True, application_name="netra-rm-test") as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def grant(txn, key: str, host: str = "h") -> Allocation:  # type: ignore[no-untyped-def]
    """Grant a bare allocation on ``key`` inside a ledger transaction."""
    allocation = Allocation(id=os.urandom(6).hex(), layer=None, category="t", memory_mb=1, cpu_units=0,
                            dedicated=False, requires=(), created_at=txn.now, expires_at=txn.now + 600,
                            owner=Owner(host, "u"), fencing_token=txn.next_token(), charges=(key,))
    txn.grant(allocation, {"time": round(txn.now, 3), "event": "grant", "id": allocation.id, "layer": None,
                           "memory_mb": 1, "cpu_percent": 0.0, "charges": [key], "slots": {}})
    return allocation


# -- locking -----------------------------------------------------------------------------------

def test_transactions_on_disjoint_pools_never_wait_on_each_other(pg_server, tmp_path: Path) -> None:
    from netra_rm.ledger.postgres import PostgresLedger
    from netra_rm.ledger.server import ServerOptions

    location = f"{pg_server.url}?ledger={ledger_name()}"
    holder = PostgresLedger(location, state_dir=tmp_path / "a")
    other = PostgresLedger(location, state_dir=tmp_path / "b", options=ServerOptions(lock_wait=1.0))
    with other.transaction(Scope(keys=frozenset({"layer:alpha", "layer:beta"}))):
        pass  # both rows exist
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with holder.transaction(Scope(keys=frozenset({"layer:alpha"}))) as txn:
            grant(txn, "layer:alpha")
            holding.set()
            done.wait(20)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holding.wait(20)
        began = time.monotonic()
        with other.transaction(Scope(keys=frozenset({"layer:beta"}))) as txn:  # the other pool: at once
            beta = grant(txn, "layer:beta")
        assert time.monotonic() - began < 0.9
        with pytest.raises(LedgerError) as busy:  # the same pool: waits for the holder (here: 1 s, then gives up)
            with other.transaction(Scope(keys=frozenset({"layer:alpha"}))):
                pass
        assert "is busy" in busy.value.message
    finally:
        done.set()
        thread.join(20)
    usage = other.read(Scope(keys=frozenset({"layer:alpha", "layer:beta"}))).usage
    assert (usage["layer:alpha"].instances, usage["layer:beta"].instances) == (1, 1)
    assert beta.id in other.read().known


def test_an_allocation_and_a_release_cost_one_round_trip_each(pg_server, tmp_path: Path) -> None:
    """Counted at a proxy: the messages after which the client waits for the server. One
    statement each while nobody waits; a grant in a transaction (the engine's, when the
    one statement stands aside) costs two."""
    with TcpProxy(pg_server.port) as proxy:
        engine = engine_for(proxy.url_for(f"{pg_server.url}?ledger={ledger_name()}"), tmp_path)
        request = engine.resolve_request("tiny", "db")
        for _ in range(6):  # connected, and every statement prepared
            engine.release([engine.allocate(request, engine.owner()).id])
        proxy.reset_counts()
        allocation = engine.allocate(request, engine.owner())
        assert (proxy.round_trips, proxy.sent < 4096) == (1, True)
        proxy.reset_counts()
        engine.release([allocation.id])
        assert (proxy.round_trips, proxy.sent < 4096) == (1, True)
        engine.ledger.fast_grant = lambda plan: None  # type: ignore[method-assign]
        for _ in range(6):
            engine.release([engine.allocate(request, engine.owner()).id])
        proxy.reset_counts()
        engine.allocate(request, engine.owner())
        assert (proxy.round_trips, proxy.sent < 4096) == (2, True)


def test_the_journal_starts_a_new_generation_with_a_checkpoint(pg_server, tmp_path: Path) -> None:
    from netra_rm.core.verify import ledger_history, verify_ledger
    from netra_rm.ledger.postgres import PostgresLedger
    from netra_rm.ledger.server import ServerOptions

    ledger = PostgresLedger(f"{pg_server.url}?ledger={ledger_name()}", state_dir=tmp_path,
                            options=ServerOptions(journal_max_lines=6))
    path = tmp_path / "netra-rm.yaml"
    path.write_text(GLOBAL_CONFIG)
    engine = Engine.from_options(config=load_config(path, env={}), ledger=ledger, env={"NETRA_RM_HOST_ID": "a"})
    request = engine.resolve_request("tiny", "db")
    held = engine.allocate(request, engine.owner())
    for _ in range(12):
        engine.release([engine.allocate(request, engine.owner()).id])
    snapshot, lines, names = ledger.journal_lines()
    checkpoints = [json.loads(line) for line in lines if b'"checkpoint"' in line]
    assert len(checkpoints) == 2 and checkpoints[-1]["reason"] == "rotate"  # older generations dropped
    assert held.id in [a["id"] for a in checkpoints[-1]["allocations"]]  # what was held at that point
    assert names == [f"{ledger.location} journal (previous generation)", f"{ledger.location} journal"]
    assert len(lines) <= 2 * 7
    assert verify_ledger(engine).findings == ()
    assert [e["seq"] for e in ledger_history(engine, limit=3)] == [snapshot.journal_seq - 2 + i for i in range(3)]


# -- schema versions -----------------------------------------------------------------------------

V1_TABLES = """
CREATE TABLE netra_rm_meta (key text PRIMARY KEY, value text NOT NULL);
INSERT INTO netra_rm_meta (key, value) VALUES ('schema_version', '1');
CREATE TABLE netra_rm_ledger (name text PRIMARY KEY, version bigint NOT NULL DEFAULT 0, doc jsonb, ledger_id text,
    origin text, journal_generation integer NOT NULL DEFAULT 0, journal_lines integer NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE netra_rm_journal (id bigserial PRIMARY KEY, name text NOT NULL, generation integer NOT NULL,
    line text NOT NULL);
CREATE INDEX netra_rm_journal_by_ledger ON netra_rm_journal (name, generation, id);
"""


def v1_allocation(ident: str, host: str, slot: int, token: int, now: float) -> dict:
    return {"id": ident, "layer": "tiny", "category": f"from-{host}", "memory_mb": 100, "cpu_percent": 10.0,
            "dedicated": False, "requires": [], "created_at": now - 60, "expires_at": now + 3600, "slot": slot,
            "fencing_token": token, "owner": {"host": host, "user": "ci", "pid": None, "start": None}}


@pytest.fixture
def v1_database(pg_server):
    """A database of its own holding the tables and ledgers of schema 1, as the old
    netra-rm wrote them."""
    name = "v1_" + os.urandom(4).hex()
    admin = pg_server.url_with(database="postgres")
    sql(admin, f'CREATE DATABASE "{name}"')
    url = pg_server.url_with(database=name)
    yield url
    sql(admin, f'DROP DATABASE "{name}" WITH (FORCE)')


def write_v1_ledger(url: str, name: str, now: float) -> list[dict]:
    import psycopg

    held = [v1_allocation("a1a1a1a1a1a1", "host-a", 0, 5, now), v1_allocation("b2b2b2b2b2b2", "host-b", 1, 7, now)]
    gone = v1_allocation("c3c3c3c3c3c3", "host-b", 2, 6, now)
    doc = {"schema_version": 1, "fencing_counter": 7, "journal_seq": 4, "waiters": [], "allocations": held}
    record = lambda kind, seq, a: {"seq": seq, "time": now - 50 + seq, "event": kind,  # noqa: E731
                                   **{k: a[k] for k in ("id", "layer", "category", "memory_mb", "cpu_percent",
                                                        "dedicated", "slot", "fencing_token", "owner")}}
    lines = [{"event": "checkpoint", "after": 0, "time": now - 55, "reason": "start", "fencing_counter": 4,
              "allocations": []},
             record("grant", 1, held[0]), record("grant", 2, gone), record("grant", 3, held[1]),
             record("release", 4, gone)]
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('netra_rm_meta')").fetchone()[0] is None:
            conn.execute(V1_TABLES)
        conn.execute("INSERT INTO netra_rm_ledger (name, version, doc, ledger_id, origin, journal_lines) "
                     "VALUES (%s, 9, %s::jsonb, %s, 'auto', %s)",
                     (name, json.dumps(doc), "0123456789abcdef0123456789abcdef", len(lines)))
        for line in lines:
            conn.execute("INSERT INTO netra_rm_journal (name, generation, line) VALUES (%s, 0, %s)",
                         (name, json.dumps(line, separators=(",", ":"))))
    return held


def test_a_schema_1_ledger_is_upgraded_with_its_journal(v1_database: str, tmp_path: Path) -> None:
    from netra_rm.core.verify import ledger_history, verify_ledger

    now = time.time()
    held = write_v1_ledger(v1_database, "fleet", now)
    write_v1_ledger(v1_database, "other", now)
    engine = engine_for(f"{v1_database}?ledger=fleet", tmp_path)
    # this host used the ledger before the upgrade: it is the same ledger, going on
    engine.ledger.memory.note("0123456789abcdef0123456789abcdef", 7)

    found = sorted(engine.active_allocations(), key=lambda a: a.id)
    assert [(a.id, a.charges, dict(a.slots)) for a in found] == [
        ("a1a1a1a1a1a1", ("layer:tiny", "caps@host-a"), {"layer:tiny": 0}),
        ("b2b2b2b2b2b2", ("layer:tiny", "caps@host-b"), {"layer:tiny": 1})]
    assert engine.pool_status("tiny")["active_instances"] == 2
    request = engine.resolve_request("tiny", "after-upgrade")
    fresh = engine.allocate(request, engine.owner())
    assert fresh.slot == 2 and fresh.fencing_token > 7
    assert engine.try_allocate(request, engine.owner())[0] is None  # 3 of 3: the old ones count

    events = ledger_history(engine)
    assert [(e["event"], e["id"]) for e in events if e["event"] in ("grant", "release")] == [
        ("grant", "a1a1a1a1a1a1"), ("grant", "c3c3c3c3c3c3"), ("grant", "b2b2b2b2b2b2"),
        ("release", "c3c3c3c3c3c3"), ("grant", fresh.id)]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5, 6]  # 5: the global pool registered
    report = verify_ledger(engine)
    assert report.findings == (), report.findings
    assert {a.id for a in engine.ledger.read().allocations} == {h["id"] for h in held} | {fresh.id}

    tables = {r[0] for r in sql(v1_database, "SELECT tablename FROM pg_tables WHERE tablename LIKE 'netra_rm_%'")}
    assert {"netra_rm_ledger_v1", "netra_rm_journal_v1", "netra_rm_ledgers"} <= tables  # "other" waits
    assert sql(v1_database, "SELECT value FROM netra_rm_meta")[0][0] == "4"  # through every step
    assert len(engine_for(f"{v1_database}?ledger=other", tmp_path, state="s2").active_allocations()) == 2
    tables = {r[0] for r in sql(v1_database, "SELECT tablename FROM pg_tables WHERE tablename LIKE 'netra_rm_%'")}
    assert not {"netra_rm_ledger_v1", "netra_rm_journal_v1"} & tables  # every ledger upgraded: gone


def test_a_corrupt_schema_1_document_is_reported_not_upgraded(v1_database: str, cli, tmp_path: Path,
                                                              small_config: Path) -> None:
    write_v1_ledger(v1_database, "fleet", time.time())
    sql(v1_database, "UPDATE netra_rm_ledger SET doc = jsonb_set(doc, '{allocations,0,memory_mb}', '\"lots\"')")
    result = cli("--config", str(small_config), "--ledger", f"{v1_database}?ledger=fleet", "status")
    assert result.code == 5, result.stderr
    assert "is corrupt" in result.stderr and "memory_mb" in result.stderr
    assert "Traceback" not in result.stderr and PASSWORDS[0] not in result.stderr
    assert sql(v1_database, "SELECT count(*) FROM netra_rm_ledger_v1")[0][0] == 1  # left as it was


# -- lost replies ------------------------------------------------------------------------------

class CommitCutter:
    """Decides, for a fault proxy, what happens to the next commits of a change: "after"
    (the COMMIT is forwarded, its reply lost) or "drop" (the change never reaches the
    server). A change is the call that carries a request id; its COMMIT may come in the
    same chunk or a later one."""

    def __init__(self) -> None:
        self.plan: list[str] = []
        self.change_sent = False

    def __call__(self, data: bytes) -> str:
        if not self.plan:
            return "pass"
        if b'"request":' in data:
            # a one-statement release or grant has no COMMIT of its own
            if self.plan[0] == "drop" or b'"ids":' in data or b'"alloc":' in data:
                return self.plan.pop(0)
            self.change_sent = True
        if self.change_sent and b"COMMIT\x00" in data:
            self.change_sent = False
            return self.plan.pop(0)
        return "pass"


def test_a_lost_reply_to_a_commit_is_resolved_by_its_request_id(pg_server, tmp_path: Path) -> None:
    from netra_rm.core.verify import verify_ledger

    location = f"{pg_server.url}?ledger={ledger_name()}"
    cutter = CommitCutter()
    with TcpProxy(pg_server.port, cut=cutter) as proxy:
        engine = engine_for(proxy.url_for(location), tmp_path)
        direct = engine_for(location, tmp_path, state="direct")
        request = engine.resolve_request("tiny", "db")
        assert engine.active_allocations() == []

        engine.ledger.fast_grant = lambda plan: None  # type: ignore[method-assign]  # grants commit
        cutter.plan = ["after"]  # committed, then the connection dropped: the grant is reported
        granted = engine.allocate(request, engine.owner())
        assert proxy.cuts == ["after"]
        assert [a.id for a in direct.active_allocations()] == [granted.id]

        cutter.plan = ["drop"]  # the commit never arrived: nothing was written, and we are told so
        with pytest.raises(LedgerError) as lost:
            engine.allocate(request, engine.owner())
        assert "nothing was written" in lost.value.message
        assert PASSWORDS[0] not in lost.value.message
        assert [a.id for a in direct.active_allocations()] == [granted.id]

        del engine.ledger.fast_grant  # grants in one statement again
        cutter.plan = ["after"]  # a grant in one statement: its reply lost, what it granted is reported
        second = engine.allocate(request, engine.owner())
        assert sorted(a.id for a in direct.active_allocations()) == sorted([granted.id, second.id])
        engine.release([second.id])
        cutter.plan = ["drop"]  # never arrived: the grant takes the transaction, and is granted once
        again = engine.allocate(request, engine.owner())
        assert sorted(a.id for a in direct.active_allocations()) == sorted([granted.id, again.id])
        engine.release([again.id])

        second = direct.allocate(request, direct.owner())
        cutter.plan = ["after"]  # a release in one step: its reply lost, what it released is reported
        assert [a.id for a in engine.release([granted.id]).released] == [granted.id]
        cutter.plan = ["drop"]  # never arrived: the release takes the transaction and is done
        assert [a.id for a in engine.release([second.id]).released] == [second.id]
        assert proxy.cuts == ["after", "drop", "after", "drop", "after", "drop"]
    assert direct.active_allocations() == []
    assert verify_ledger(direct).findings == ()


def test_allocate_prints_the_id_it_was_granted_when_the_reply_was_lost(pg_server, cli, tmp_path: Path,
                                                                       small_config: Path) -> None:
    location = f"{pg_server.url}?ledger={ledger_name()}"
    cutter = CommitCutter()
    with TcpProxy(pg_server.port, cut=cutter) as proxy:
        env = {"NETRA_RM_LEDGER": proxy.url_for(location), "NETRA_RM_CONFIG": str(small_config)}
        assert cli("status", env=env).code == 0  # the ledger exists
        cutter.plan = ["after"]
        result = cli("allocate", "--layer", "tiny", "--category", "db", env=env)
        assert proxy.cuts == ["after"]
    assert result.code == 0, result.stderr
    ident = result.stdout.strip()
    held = engine_for(location, tmp_path, config=SMALL_CONFIG).active_allocations()
    assert [a.id for a in held] == [ident]


def test_the_one_statement_grant_decides_as_admission_does(pg_server, tmp_path: Path) -> None:
    """Random requests (layers with dedicated runs, a shared pool, the caps, the machine
    check) go to ``netra_rm_grant`` and to ``admit`` over the same usage: both admit the
    same requests, in the same instances, and the ledger verifies clean."""
    from netra_rm.core.verify import verify_ledger
    from netra_rm.ledger import GrantPlan

    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    agreed = admitted = 0
    for round_no in range(3):
        text = random_admission_config(rng, most_in_a=12, most_on_host=14)
        engine = engine_for(f"{pg_server.url}?ledger={ledger_name()}", tmp_path, config=text, state=f"r{round_no}")
        ledger = engine.ledger
        for name in ("a", "b", "db"):
            engine.change_pool(name)  # registered, as the first host to use it would
        held: list[str] = []
        for step in range(120):
            if held and rng.random() < 0.35:
                gone = held.pop(rng.randrange(len(held)))
                assert ledger.fast_release([gone]) is not None
                continue
            drawn = draw_request(engine, rng)
            if drawn is None:
                continue  # could never fit: refused before any ledger is asked
            request, found, machine, expected = drawn.request, drawn.charges, drawn.machine_free_mb, drawn.expected
            plan = GrantPlan(request=request, charges=tuple(found), owner=engine.owner(), host=engine.host,
                             lease_seconds=None, machine_free_mb=machine, allocation_id=os.urandom(6).hex(),
                             request_id=os.urandom(8).hex())
            granted = ledger.fast_grant(plan)
            where = f"seed {seed}, round {round_no}, step {step}: {request} -> {expected}"
            assert (granted is not None) == expected.admitted, where
            if granted is not None:
                assert dict(granted.slots) == dict(expected.slots), where
                assert granted == ledger.read(Scope(ids=(granted.id,))).known[granted.id], where
                held.append(granted.id)
                admitted += 1
            agreed += 1
        assert verify_ledger(engine).findings == ()
    print(f"seed {seed}: {agreed} decisions agreed, {admitted} of them grants")
    assert admitted > 20 and agreed - admitted > 20  # both verdicts were exercised


def test_a_grant_in_one_statement_is_journaled_as_one_in_a_transaction(pg_server, tmp_path: Path) -> None:
    from netra_rm.core.verify import ledger_history

    location = f"{pg_server.url}?ledger={ledger_name()}"
    fast = engine_for(location, tmp_path)
    locked = engine_for(location, tmp_path, state="locked")
    locked.ledger.fast_grant = lambda plan: None  # type: ignore[method-assign]
    request = fast.resolve_request("tiny", "db")
    fast.release([fast.allocate(request, fast.owner()).id])  # the ledger known to this host
    one, two = fast.allocate(request, fast.owner()), locked.allocate(request, locked.owner())
    assert (one.fencing_token < two.fencing_token, {one.slot, two.slot}) == (True, {0, 1})
    events = {e["id"]: e for e in ledger_history(locked) if e["event"] == "grant"}
    strip = lambda e: {k: v for k, v in e.items() if k not in ("id", "seq", "time", "fencing_token", "slot", "slots")}  # noqa: E731
    assert strip(events[one.id]) == strip(events[two.id])
    assert events[one.id]["slots"] == {"layer:tiny": one.slot} and events[one.id]["limits"] == events[two.id]["limits"]
    stored = {a.id: a for a in locked.active_allocations()}
    assert stored[one.id] == one
    strip_a = lambda a: {k: v for k, v in a.to_dict().items()  # noqa: E731
                         if k not in ("id", "request_id", "created_at", "expires_at", "fencing_token", "slot", "slots")}
    assert strip_a(stored[one.id]) == strip_a(stored[two.id])


def test_a_release_in_one_step_agrees_with_a_release_in_a_transaction(pg_server, tmp_path: Path) -> None:
    from netra_rm.core.verify import ledger_history, verify_ledger

    location = f"{pg_server.url}?ledger={ledger_name()}"
    fast = engine_for(location, tmp_path)
    locked = engine_for(location, tmp_path, state="locked")
    locked.ledger.fast_release = lambda ids, events=None: None  # type: ignore[method-assign]
    request = fast.resolve_request("tiny", "db")
    one, two, three = (fast.allocate(request, fast.owner()) for _ in range(3))
    assert fast.try_allocate(request, fast.owner())[0] is None  # full
    measured = {"peak_memory_mb": 12, "cpu_seconds": 0.5}

    by_fast = fast.release([one.id, "0000000000aa"], measured=measured)
    by_lock = locked.release([two.id, "0000000000aa"], measured=measured)
    assert ([a.id for a in by_fast.released], by_fast.missing) == ([one.id], ["0000000000aa"])
    assert ([a.id for a in by_lock.released], by_lock.missing) == ([two.id], ["0000000000aa"])
    assert by_fast.released == [one]
    assert fast.release([one.id]).missing == [one.id]  # released once only
    assert fast.pool_status("tiny")["active_instances"] == 1
    again = locked.try_allocate(request, locked.owner())[0]
    assert again is not None and again.slot in (one.slot, two.slot)  # its instance is free again

    events = {e["id"]: e for e in ledger_history(locked) if e["event"] == "release"}
    strip = lambda e: {k: v for k, v in e.items() if k not in ("id", "seq", "time", "fencing_token", "slot", "slots")}  # noqa: E731
    assert strip(events[one.id]) == strip(events[two.id])
    assert events[one.id]["peak_memory_mb"] == 12 and events[one.id]["slots"] == {"layer:tiny": one.slot}
    assert verify_ledger(locked).findings == ()
    assert {a.id for a in fast.active_allocations()} == {three.id, again.id}


def run_terminate_storm(pg_server, tmp_path: Path, location: str, *, workers: int = 6,
                        iterations: int = 20) -> tuple[list[dict], int]:
    """Workers allocate and release while every netra-rm connection to the server is
    terminated every 50 ms; their events and how many connections were ended."""
    config = tmp_path / "netra-rm.yaml"
    config.write_text(GLOBAL_CONFIG)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_STATE_HOME": str(tmp_path / "state")}
    engine_for(location, tmp_path).active_allocations()  # the ledger exists
    procs = []
    for i in range(workers):
        log = tmp_path / f"worker{i}.log"
        procs.append((subprocess.Popen([sys.executable, str(WORKERS / "terminate_worker.py"), str(config), location,
                                        str(log), str(iterations), f"ci-runner-{i % 3}"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env), log))
    for proc, _ in procs:
        assert proc.stdout.readline().strip() == "ready"
    stop = threading.Event()
    ended = [0]

    def storm() -> None:
        import psycopg

        with psycopg.connect(pg_server.url, autocommit=True, application_name="netra-rm-storm") as conn:
            while not stop.wait(0.05):
                rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                    "WHERE application_name = 'netra-rm' AND pid <> pg_backend_pid()").fetchall()
                ended[0] += sum(1 for r in rows if r[0])

    killer = threading.Thread(target=storm)
    for proc, _ in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    killer.start()
    events: list[dict] = []
    try:
        for proc, log in procs:
            _, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err
            events += [json.loads(line) for line in log.read_text().splitlines()]
    finally:
        stop.set()
        killer.join(10)
    return events, ended[0]


def test_terminate_backend_storm_leaves_no_allocation_behind(pg_server, tmp_path: Path) -> None:
    from netra_rm.core.verify import verify_ledger

    location = f"{pg_server.url}?ledger={ledger_name()}"
    events, ended = run_terminate_storm(pg_server, tmp_path, location)
    print(f"{ended} connections ended; {sum(e['event'] == 'error' for e in events)} errors seen")
    assert ended > 20, "the storm should have ended connections"
    assert [e for e in events if e["event"] == "lie"] == []  # no release found its allocation gone
    grants = [e for e in events if e["event"] == "grant"]
    assert len(grants) == 6 * 20
    assert len({e["token"] for e in grants}) == len(grants)
    held, peak = set(), 0
    for e in sorted(events, key=lambda e: (e["t"], e["event"] != "release")):
        if e["event"] == "grant":
            held.add(e["id"])
            peak = max(peak, len(held))
        elif e["event"] == "release":
            held.discard(e["id"])
    assert peak <= 3
    auditor = engine_for(location, tmp_path, host="auditor", state="auditor")
    assert auditor.active_allocations() == []  # nothing left behind
    assert verify_ledger(auditor).findings == ()


STORM_CONFIG = """
layers:
  storm:
    services: []
    pool: {memory_mb: 400, cpu_percent: 40, instances: 4, scope: global}
limits: {max_memory_mb: 100000, max_cpu_percent: 100, max_parallel_instances: 1000}
machine: {check_memory: false}
"""


def test_kill_storm_on_postgresql(pg_server, tmp_path: Path) -> None:
    """Workers allocating, waiting, releasing and reclaiming, SIGKILLed at random moments:
    after every round verify finds the journal and the tables in agreement, and the next
    transaction drops what the dead held and nothing of the living."""
    location = f"{pg_server.url}?ledger={ledger_name()}&timeout=10"
    config = tmp_path / "storm.yaml"
    config.write_text(STORM_CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NETRA_RM_", "MAX_"))}
    env.update({"PYTHONPATH": str(ROOT), "NETRA_RM_CONFIG": str(config), "NETRA_RM_LEDGER": location,
                "XDG_STATE_HOME": str(tmp_path / "state")})

    def spawn(mode: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, str(WORKERS / "storm_worker.py"), str(config), location, mode],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    observer = Engine.from_options(config_path=str(config), ledger=location,
                                   env={"XDG_STATE_HOME": str(tmp_path / "observer")})

    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"kill storm seed {seed}")
    survivor = spawn("hold")
    kept = survivor.stdout.readline().strip()
    assert kept
    dead: set[int] = set()
    try:
        for round_no in range(5):
            orphan = spawn("orphan")
            orphan.communicate(timeout=60)
            dead.add(orphan.pid)
            workers = [spawn("wait" if i % 3 == 0 else "loop") for i in range(8)]
            for w in workers:
                assert w.stdout.readline().strip() == "started"
            rng.shuffle(workers)
            for w in workers:
                for _ in range(rng.randrange(0, 4)):
                    observer.ledger.read(Scope())
                w.send_signal(signal.SIGKILL)
            for w in workers:
                w.wait(timeout=60)
                dead.add(w.pid)
            check = subprocess.run([*_entry_point(), "verify", "--json"], capture_output=True, text=True, env=env,
                                   timeout=120)
            assert check.returncode == 0, f"round {round_no} (seed {seed}): {check.stdout}{check.stderr}"
            assert json.loads(check.stdout)["clean"] is True
            left = observer.active_allocations()
            assert [a.id for a in left] == [kept], f"round {round_no} (seed {seed})"
            assert not [w for w in observer.queue() if w.owner.pid in dead]
    finally:
        survivor.stdin.close()
        survivor.wait(timeout=60)
    final = subprocess.run([*_entry_point(), "verify", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert final.returncode == 0 and json.loads(final.stdout)["events_checked"] > 0


# -- fencing -------------------------------------------------------------------------------------

def test_tokens_never_repeat_after_the_ledger_was_lost(pg_server, cli, tmp_path: Path, small_config: Path) -> None:
    name = ledger_name()
    location = f"{pg_server.url}?ledger={name}"
    env = {"NETRA_RM_LEDGER": location, "NETRA_RM_CONFIG": str(small_config), "XDG_STATE_HOME": str(tmp_path / "a")}
    first = cli("allocate", "--layer", "tiny", "--category", "db", "--json", env=env)
    assert first.code == 0, first.stderr
    token = first.json()["fencing_token"]
    assert token >= token_floor(time.time() - 3600)  # from the clock, not from 1
    (ident,) = sql(pg_server.url, "SELECT id FROM netra_rm_ledgers WHERE name = %s", (name,))[0]
    for table in ("netra_rm_pools", "netra_rm_allocations", "netra_rm_journal", "netra_rm_requests"):
        sql(pg_server.url, f"DELETE FROM {table} WHERE ledger = %s", (ident,))
    sql(pg_server.url, "DELETE FROM netra_rm_ledgers WHERE id = %s", (ident,))
    sql(pg_server.url, f"DROP SEQUENCE netra_rm_tokens_{ident}")  # everything lost

    fresh = cli("allocate", "--layer", "tiny", "--category", "db", "--json",
                env={**env, "XDG_STATE_HOME": str(tmp_path / "fresh")})  # a host that never saw it
    assert fresh.code == 0, fresh.stderr
    assert fresh.json()["slot"] == first.json()["slot"] and fresh.json()["fencing_token"] > token

    refused = cli("allocate", "--layer", "tiny", "--category", "db", env=env)  # the host that saw it
    assert refused.code == 5
    assert "started again from scratch" in refused.stderr and "cleanup --force" in refused.stderr
    assert PASSWORDS[0] not in refused.stderr and refused.stdout == ""
    release = cli("release", first.json()["id"], env=env)  # the one-step release checks the ledger's id too
    assert release.code == 5 and "started again from scratch" in release.stderr
    assert cli("cleanup", "--force", env=env).code == 0
    after = cli("allocate", "--layer", "tiny", "--category", "db", "--json", env=env)
    assert after.code == 0 and after.json()["fencing_token"] > fresh.json()["fencing_token"]


def test_a_ledger_gone_is_refused_by_a_host_that_used_it(pg_server, tmp_path: Path) -> None:
    name = ledger_name()
    engine = engine_for(f"{pg_server.url}?ledger={name}", tmp_path)
    engine.allocate(engine.resolve_request("tiny", "db"), engine.owner())
    sql(pg_server.url, "DELETE FROM netra_rm_ledgers WHERE name = %s", (name,))
    again = engine_for(f"{pg_server.url}?ledger={name}", tmp_path)  # the same host, a new process
    with pytest.raises(LedgerError) as lost:
        again.allocate(again.resolve_request("tiny", "db"), again.owner())
    assert "lost its state" in lost.value.message
    assert sql(pg_server.url, "SELECT count(*) FROM netra_rm_ledgers WHERE name = %s", (name,))[0][0] == 0


def test_a_counter_restored_backwards_is_refused(pg_server, tmp_path: Path) -> None:
    name = ledger_name()
    engine = engine_for(f"{pg_server.url}?ledger={name}", tmp_path)
    request = engine.resolve_request("tiny", "db")
    engine.allocate(request, engine.owner())
    (ident,) = sql(pg_server.url, "SELECT id FROM netra_rm_ledgers WHERE name = %s", (name,))[0]
    sql(pg_server.url, f"SELECT setval('netra_rm_tokens_{ident}', %s)", (token_floor(time.time() - 3600),))
    with pytest.raises(LedgerError) as back:
        engine.allocate(request, engine.owner())
    assert "went backwards" in back.value.message
    with pytest.raises(LedgerError):
        engine_for(f"{pg_server.url}?ledger={name}", tmp_path).active_allocations()  # remembered across processes


def test_a_holder_stalled_past_its_lock_cannot_commit_late(pg_server, tmp_path: Path) -> None:
    """A holder that stops (SIGSTOP, a hung VM) loses its session after ``lock_ttl``: the
    others take the rows meanwhile, and its commit, when it comes, is refused."""
    from netra_rm.ledger.postgres import PostgresLedger
    from netra_rm.ledger.server import ServerOptions

    location = f"{pg_server.url}?ledger={ledger_name()}"
    stalled = PostgresLedger(location, state_dir=tmp_path / "a", options=ServerOptions(lock_ttl=0.5))
    other = PostgresLedger(location, state_dir=tmp_path / "b")
    scope = Scope(keys=frozenset({"layer:tiny"}))
    with pytest.raises(LedgerError) as late:
        with stalled.transaction(scope) as txn:
            mine = grant(txn, "layer:tiny")
            began = time.monotonic()
            with other.transaction(scope) as theirs:  # waits until the server ends the stalled session
                ours = grant(theirs, "layer:tiny")
            assert time.monotonic() - began < 10
    assert "nothing was written" in late.value.message
    assert set(other.read().known) == {ours.id} and mine.id != ours.id


@pytest.mark.parametrize("server", ["down", "silent"])
def test_a_wait_with_a_timeout_ends_in_time_when_the_server_does_not_answer(server: str, cli, silent_server,
                                                                            small_config: Path) -> None:
    """``--timeout`` bounds connecting too: libpq waits 2 s at least per attempt, and a
    waiting command connects twice (its wake-up channel, then its transaction)."""
    port = closed_port() if server == "down" else silent_server.port
    url = f"postgresql://netra:{PASSWORDS[0]}@127.0.0.1:{port}/netra_test"
    began = time.monotonic()
    result = cli("--config", str(small_config), "--ledger", url, "allocate", "--layer", "tiny", "--category", "x",
                 "--wait", "--timeout", "2")
    elapsed = time.monotonic() - began
    assert result.code == 5, result.stderr
    assert elapsed < 3.5, f"took {elapsed:.1f}s"  # 2 s, and the command's start
    assert "PostgreSQL ledger at postgresql://netra:***@" in result.stderr and PASSWORDS[0] not in result.stderr


HOLDER = """
import sys, time
from netra_rm.ledger import Scope
from netra_rm.ledger.postgres import PostgresLedger
ledger = PostgresLedger(sys.argv[1])
with ledger.transaction(Scope(keys=frozenset({"layer:tiny"}))):
    print("holding", flush=True)
    time.sleep(600)
"""


def test_a_holder_killed_mid_transaction_frees_its_rows_at_once(pg_server, tmp_path: Path) -> None:
    from netra_rm.ledger.postgres import PostgresLedger

    location = f"{pg_server.url}?ledger={ledger_name()}"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, location], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "holding"
        holder.kill()
        holder.wait(10)
        began = time.monotonic()
        with PostgresLedger(location, state_dir=tmp_path).transaction(Scope(keys=frozenset({"layer:tiny"}))) as txn:
            grant(txn, "layer:tiny")
        assert time.monotonic() - began < 3  # the server saw the connection close: no lock expiry to wait for
    finally:
        if holder.poll() is None:
            holder.kill()


# -- time and waking -------------------------------------------------------------------------

def test_leases_are_judged_by_the_servers_clock_not_a_fast_host(pg_server, cli, tmp_path: Path,
                                                                write_config) -> None:
    if not any(os.access(os.path.join(d, "faketime"), os.X_OK) for d in os.environ["PATH"].split(os.pathsep)):
        pytest.skip("faketime is not installed")
    config = write_config(GLOBAL_CONFIG.replace("instances: 3", "instances: 1")
                          + "allocations: {lease_seconds: 30}\n")
    location = f"{pg_server.url}?ledger={ledger_name()}"
    a = Engine.from_options(config_path=str(config), ledger=location,
                            env={"NETRA_RM_HOST_ID": "host-a", "XDG_STATE_HOME": str(tmp_path / "a")})
    held = a.allocate(a.resolve_request("tiny", "hil"), a.current_process_owner())  # renewed by nobody
    env = {"NETRA_RM_LEDGER": location, "NETRA_RM_CONFIG": str(config), "NETRA_RM_HOST_ID": "host-b",
           "XDG_STATE_HOME": str(tmp_path / "b")}
    fast = ["faketime", "-f", "+45s", *_entry_point()]  # host-b's clock runs 45 s ahead
    done = subprocess.run([*fast, "cleanup", "--json"], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)
    assert done.returncode == 0, done.stderr
    taken = subprocess.run([*fast, "allocate", "--layer", "tiny", "--category", "b"], capture_output=True, text=True,
                           env={**os.environ, **env}, timeout=60)
    assert taken.returncode == 3, taken.stdout + taken.stderr  # the slot is held: no room
    assert [x.id for x in a.active_allocations()] == [held.id]


def test_notify_wakes_exactly_the_waiters_named(pg_server, tmp_path: Path) -> None:
    from netra_rm.ledger.postgres import PostgresLedger

    ledger = PostgresLedger(f"{pg_server.url}?ledger={ledger_name()}", state_dir=tmp_path)
    ids = [os.urandom(6).hex() for _ in range(3)]
    channels = [ledger.waiter_channel(i) for i in ids]
    try:
        ledger.notify([ids[1]])
        assert channels[1].wait(10) is True
        assert channels[0].wait(0.3) is False and channels[2].wait(0.3) is False
    finally:
        for channel in channels:
            channel.close()


def test_each_release_wakes_one_waiter_of_eight(pg_server, cli, tmp_path: Path, write_config) -> None:
    """Eight processes wait for a one-slot pool; each release sends exactly one wake-up,
    to the waiter it lets in."""
    import psycopg

    from netra_rm.ledger.postgres.wake import channel_prefix

    name = ledger_name()
    config = write_config(GLOBAL_CONFIG.replace("instances: 3", "instances: 1"))
    env = {**os.environ, "NETRA_RM_LEDGER": f"{pg_server.url}?ledger={name}", "NETRA_RM_CONFIG": str(config),
           "XDG_STATE_HOME": str(tmp_path / "state")}
    held = cli("allocate", "--layer", "tiny", "--category", "first", env=env).stdout.strip()
    waiters = [subprocess.Popen([*_entry_point(), "allocate", "--layer", "tiny", "--category", f"w{i}", "--wait",
                                 "--timeout", "120"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for i in range(8)]
    try:
        def queued() -> list[str]:
            return [w["id"] for w in cli("status", "--json", env=env).json()["resources"]["waiters"]]

        wait_for(lambda: len(queued()) == 8, timeout=60, what="eight waiters in the queue")
        listener = psycopg.connect(pg_server.url, autocommit=True)
        for ident in queued():
            listener.execute(f'LISTEN "{channel_prefix(name)}{ident}"')
        finished: list[subprocess.Popen[str]] = []
        for round_no in range(8):
            assert cli("release", held, env=env).code == 0
            woken = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
            extra = [n.payload for n in listener.notifies(timeout=0.5)]
            assert len(woken) == 1 and extra == [], f"release {round_no}: woke {woken + extra}"
            wait_for(lambda n=round_no + 1: sum(p.poll() is not None for p in waiters) == n, timeout=30,
                     what="the woken waiter to be granted")
            proc = next(p for p in waiters if p.poll() is not None and p not in finished)
            finished.append(proc)
            out, err = proc.communicate()
            assert proc.returncode == 0, err
            held = out.strip()
        listener.close()
    finally:
        for proc in waiters:
            if proc.poll() is None:
                proc.kill()
            proc.wait()



# -- run: an allocation lost while the command runs ------------------------------------------

def test_run_stops_its_command_when_another_host_reclaims_the_lapsed_lease(pg_server, cli, write_config,
                                                                           tmp_path: Path, home: Path) -> None:
    from test_run import CHILD
    from test_run_lost import LEASED_CONFIG, LOST, finish, running

    child = tmp_path / "child.py"
    child.write_text(CHILD)
    config = write_config(LEASED_CONFIG, name="leased.yaml")
    ledger = f"{pg_server.url}?ledger={ledger_name()}"
    here = {**os.environ, "NETRA_RM_CONFIG": str(config), "NETRA_RM_LEDGER": ledger, "NETRA_RM_HOST_ID": "host-a"}
    there = {"NETRA_RM_CONFIG": str(config), "NETRA_RM_LEDGER": ledger, "NETRA_RM_HOST_ID": "host-b"}
    proc, seen = running(here, child, tmp_path / "out")
    os.kill(proc.pid, signal.SIGSTOP)  # its lease keeper stops renewing
    try:
        wait_for(lambda: cli("cleanup", env=there).stdout.startswith(f"released {seen['NETRA_RM_ALLOCATION_ID']}"),
                 timeout=30, what="host b to reclaim the lapsed lease")
        successor = cli("allocate", "--layer", "tiny", "--category", "next", "--json", env=there).json()
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    code, _, stderr = finish(proc)
    assert code == LOST, stderr
    assert "its lease lapsed without renewal and another host reclaimed it" in stderr
    assert f"slot 0 now belongs to allocation {successor['id']} (fencing token {successor['fencing_token']}" in stderr


def test_run_stops_its_command_when_the_server_lost_the_ledger(pg_server, small_config: Path, tmp_path: Path,
                                                               home: Path) -> None:
    from test_run import CHILD
    from test_run_lost import LOST, finish, running

    child = tmp_path / "child.py"
    child.write_text(CHILD)
    name = ledger_name()
    here = {**os.environ, "NETRA_RM_CONFIG": str(small_config), "NETRA_RM_LEDGER": f"{pg_server.url}?ledger={name}"}
    proc, _ = running(here, child, tmp_path / "out")
    sql(pg_server.url, "DELETE FROM netra_rm_ledgers WHERE name = %s", (name,))
    code, _, stderr = finish(proc)
    assert code == LOST, stderr
    assert "the ledger lost its state" in stderr


def test_a_release_while_others_wait_hands_on_and_wakes_in_two_round_trips(pg_server, tmp_path: Path) -> None:
    """The begin finds the keys of what is released and of the waiters sharing them, and
    the wake goes with the commit: the waiter is granted and woken in two round trips."""
    import psycopg

    from netra_rm.ledger.postgres.wake import channel_prefix

    name = ledger_name()
    with TcpProxy(pg_server.port) as proxy:
        engine = engine_for(proxy.url_for(f"{pg_server.url}?ledger={name}"), tmp_path,
                            config=GLOBAL_CONFIG.replace("instances: 3", "instances: 1"))
        request = engine.resolve_request("tiny", "db")
        me = engine.current_process_owner()
        for _ in range(6):  # connected, and every statement prepared
            engine.release([engine.allocate(request, me).id])
        held = engine.allocate(request, me)
        _, waiter, _ = engine.allocate_or_join(request, me, waiter_id="0000000000c1", waiter_owner=me)
        assert waiter is not None
        listener = psycopg.connect(pg_server.url, autocommit=True)
        listener.execute(f'LISTEN "{channel_prefix(name)}{waiter.id}"')
        proxy.reset_counts()
        engine.release([held.id])
        assert proxy.round_trips == 2
        payloads = [n.payload for n in listener.notifies(timeout=10, stop_after=1)]
        assert len(payloads) == 1 and json.loads(payloads[0])["id"] == waiter.id  # the allocation handed
        listener.close()
        assert [a.id for a in engine.active_allocations()] == [waiter.id]  # handed on in that transaction


@pytest.mark.parametrize("version", [2, 3])
def test_tables_of_version_2_or_3_are_brought_up_to_date(v1_database: str, tmp_path: Path, version: int) -> None:
    """Versions 3 and 4 changed the functions only: a database left at version 2 or 3 (its
    release begin not knowing how to find its own keys, say) gets them on first use."""
    from netra_rm.ledger.postgres import schema

    location = f"{v1_database}?ledger={ledger_name()}"  # a database of its own
    config = GLOBAL_CONFIG.replace("instances: 3", "instances: 1")
    first = engine_for(location, tmp_path, config=config)
    me = first.current_process_owner()
    request = first.resolve_request("tiny", "db")
    held = first.allocate(request, me)
    _, waiter, _ = first.allocate_or_join(request, me, waiter_id="0000000000d1", waiter_owner=me)
    first.ledger.close()
    sql(v1_database, f"UPDATE netra_rm_meta SET value = '{version}' WHERE key = 'schema_version'")
    sql(v1_database, "CREATE OR REPLACE FUNCTION netra_rm_begin(req jsonb) RETURNS text LANGUAGE sql "
                     "AS $$ SELECT NULL::text $$")  # stands in for version 2's, which would not widen

    later = engine_for(location, tmp_path, config=config, state="later")
    later.release([held.id])
    assert [a.id for a in later.active_allocations()] == [waiter.id]
    assert sql(v1_database, "SELECT value FROM netra_rm_meta")[0][0] == str(schema.TABLES_VERSION) == "4"
