"""The Redis ledger's own guarantees, against real redis-server processes: the one-call
grant decides as admission does, lost replies lose nothing (a fault proxy on loopback,
and connections killed every 50 ms), fencing tokens never repeat, a server that may evict
keys is refused, time is the server's, a schema-1 ledger is upgraded, one wake per grant,
and each piece of the safety code has a test that fails without it."""

from __future__ import annotations

import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from netra_rm.config import load_config
from netra_rm.core.engine import Engine
from netra_rm.core.verify import ledger_history, verify_ledger
from netra_rm.core.waiting import allocate_waiting
from netra_rm.errors import LedgerError, WaitTimeoutError
from netra_rm.ledger import GrantPlan, Scope
from netra_rm.ledger import redis_scripts as scripts
from netra_rm.ledger.redis import RedisLedger
from netra_rm.ledger.redis_wire import Wire
from netra_rm.ledger.server import ServerOptions
from netra_rm.records import Allocation, Waiter

from backends import draw_request, ledger_name, random_admission_config
from conftest import _entry_point
from servers import PASSWORDS, RedisServer, ServerUnavailable, find_binary

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).with_name("workers") / "outage_worker.py"

CONFIG = """
layers:
  tiny:
    services: []
    pool: {memory_mb: 300, cpu_percent: 30, instances: 3, scope: global}
  rig:
    services: []
    pool: {memory_mb: 100, cpu_percent: 10, instances: 1, scope: global}
limits: {max_memory_mb: 100000, max_cpu_percent: 100, max_parallel_instances: 1000}
machine: {check_memory: false}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "netra-rm.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis server of this test's own (it is restarted or reconfigured), without persistence."""
    server = RedisServer()
    try:
        server.start()
    except ServerUnavailable as exc:
        server.close()
        pytest.skip(str(exc))
    yield server
    server.close()


def engine_on(location: str, config: Path, tmp_path: Path, host: str, *, options: ServerOptions | None = None,
              text: str | None = None) -> Engine:
    """An engine on ``host`` (its own state directory) over the Redis ledger at ``location``."""
    state = tmp_path / f"state-{host}"
    ledger = RedisLedger(location, state_dir=state, options=options)
    cfg = load_config(config, env={}) if text is None else load_config(_write(tmp_path / f"{host}.yaml", text),
                                                                        env={})
    return Engine(cfg, ledger, env={"NETRA_RM_HOST_ID": host, "XDG_STATE_HOME": str(state)})


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def redis_call(server: RedisServer, *args: object) -> object:
    wire = Wire(server.url, ServerOptions())
    try:
        return wire.call(*args)
    finally:
        wire.close()


def netra(env: dict[str, str], *args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    full = {**{k: v for k, v in os.environ.items() if not k.startswith("NETRA_RM_")}, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([*prefix, *_entry_point(), *args], capture_output=True, text=True, env=full, timeout=60)


def no_password_in(*texts: str) -> None:
    for text in texts:
        for password in PASSWORDS:
            assert password not in text


# -- one decision, in Lua and in Python ------------------------------------------------------------

@pytest.mark.parametrize("queue", ["grant only", "grant or join"])
def test_the_one_call_grant_decides_as_admission_does(redis_server, tmp_path: Path, queue: str) -> None:
    """Random requests (layers with dedicated runs, a shared pool, the caps, the machine
    check) go to Redis's one-call grant and to ``admit`` over the same usage: both admit
    the same requests, in the same instances. Given a queue entry, the call files it
    exactly when ``admit`` refuses (so the queue's rule, which only refuses more, would
    refuse too), whether others wait or not; with others waiting, a request that fits is
    left to the transaction (the queue's rule decides it); and it leaves the join to the
    transaction when the host it is asked to sweep holds anything."""

    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    agreed = admitted = 0
    for round_no in range(4):
        text = random_admission_config(rng)
        engine = engine_on(f"{redis_server.url}?ledger={ledger_name()}", tmp_path / f"r{round_no}", tmp_path,
                           f"ci-{round_no}", text=text)
        ledger = engine.ledger
        assert isinstance(ledger, RedisLedger)
        for name in ("a", "b", "db"):
            engine.change_pool(name)  # registered, as the first host to use it would
        held: list[str] = []
        other = json.dumps(Waiter(id="0000abcd", request=engine.resolve_request(None, "other", pools=("db",)),
                                  owner=engine.owner(), since=1.0, charges=("pool:elsewhere",)).to_dict())
        joined = 0
        for step in range(150):
            if held and rng.random() < 0.35:
                gone = held.pop(rng.randrange(len(held)))
                assert ledger.fast_release([gone]) is not None
                continue
            drawn = draw_request(engine, rng)
            if drawn is None:
                continue  # could never fit: refused before any ledger is asked
            request, found, machine, expected = drawn.request, drawn.charges, drawn.machine_free_mb, drawn.expected
            waiter, sweep, behind = None, None, False
            if queue != "grant only":
                behind = rng.random() < 0.4  # someone waits (on a pool of its own)
                if behind:
                    redis_call(redis_server, "HSET", ledger.key("waiters"), "0000abcd", other)
                waiter = Waiter(id=os.urandom(6).hex(), request=request, owner=engine.owner(), since=0.0,
                                charges=tuple(c.key for c in found))
                sweep = engine.host if rng.random() < 0.2 else None
            plan = GrantPlan(request=request, charges=tuple(found), owner=engine.owner(), host=engine.host,
                             lease_seconds=None, machine_free_mb=machine,
                             allocation_id=os.urandom(6).hex() if waiter is None else waiter.id,
                             request_id=os.urandom(8).hex(), waiter=waiter, waiter_lease_seconds=30.0,
                             sweep_host=sweep)
            granted = ledger.fast_grant(plan)
            if behind:  # gone again (and forgotten: a one-call release stands aside while someone waits)
                redis_call(redis_server, "HDEL", ledger.key("waiters"), "0000abcd")
                ledger.see_queue(False)
            where = f"seed {seed}, round {round_no}, step {step}: {request} -> {expected}"
            if isinstance(granted, Waiter):  # it joined the queue: only when admit refuses
                assert waiter is not None and not expected.admitted, where
                assert sweep is None or not held, where  # this host's holders would be looked at first
                assert (granted.id, granted.request, granted.charges) == (waiter.id, request, waiter.charges)
                assert granted.lease_expires_at == pytest.approx(granted.since + 30.0, abs=0.002)
                assert [w.id for w in ledger.read(Scope()).waiters if w.id == waiter.id] == [waiter.id]
                redis_call(redis_server, "HDEL", ledger.key("waiters"), waiter.id)
                ledger.see_queue(False)
                joined += 1
                agreed += 1
                continue
            if behind and expected.admitted:
                assert granted is None, where  # it fits, but the queue's rule decides: the transaction
                agreed += 1
                continue
            assert waiter is None or expected.admitted or (sweep and held), where  # no room: it joins
            assert (granted is not None) == expected.admitted or (sweep and held), where
            if granted is not None:
                assert dict(granted.slots) == dict(expected.slots), where
                # what the caller gets is what the ledger holds, field for field
                stored = redis_call(redis_server, "HGET", ledger.key("alloc"), granted.id)
                assert isinstance(stored, bytes)
                assert Allocation.from_dict(json.loads(stored)) == granted, where
                held.append(granted.id)
                admitted += 1
            agreed += 1
        assert verify_ledger(engine).findings == ()
    print(f"seed {seed}: {agreed} decisions agreed, {admitted} of them grants, {joined} joins")
    assert admitted > 20 and agreed - admitted > 20  # both verdicts were exercised
    assert (joined > 10) == (queue == "grant or join")


# -- lost replies ------------------------------------------------------------------------------------

class FaultProxy:
    """A TCP proxy on loopback in front of Redis that can lose one request's reply: it
    forwards the request and drops the connection once Redis has answered ("after"),
    drops it without forwarding ("before"), or drops the connection and forwards the
    request a moment later, on the same server connection ("late")."""

    def __init__(self, port: int) -> None:
        self.port_upstream = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.faults: list[tuple[bytes, str]] = []
        self.fired: list[str] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, password: str) -> str:
        return f"redis://:{password}@127.0.0.1:{self.port}/0"

    def lose(self, marker: bytes, how: str) -> None:
        """The next request containing ``marker`` loses its reply, ``how``."""
        with self.lock:
            self.faults.append((marker, how))

    def _take(self, data: bytes) -> str | None:
        with self.lock:
            for i, (marker, how) in enumerate(self.faults):
                if marker in data:
                    del self.faults[i]
                    self.fired.append(how)
                    return how
        return None

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.port_upstream))
        late: bytes | None = None
        try:
            while True:
                ready, _, _ = select.select([client, upstream], [], [], 10)
                if not ready:
                    return
                if client in ready:
                    data = client.recv(1 << 20)
                    if not data:
                        return
                    how = self._take(data)
                    if how == "before":
                        return
                    if how == "late":
                        late = data
                        return
                    upstream.sendall(data)
                    if how == "after":
                        upstream.recv(1 << 20)  # Redis has done it; its reply goes nowhere
                        return
                if upstream in ready:
                    data = upstream.recv(1 << 20)
                    if not data:
                        return
                    client.sendall(data)
        except OSError:
            return
        finally:
            client.close()
            if late is not None:
                threading.Thread(target=self._deliver_late, args=(upstream, late), daemon=True).start()
            else:
                upstream.close()

    @staticmethod
    def _deliver_late(upstream: socket.socket, data: bytes) -> None:
        time.sleep(0.5)  # the client has reconnected and asked by then
        try:
            upstream.sendall(data)
            upstream.settimeout(2)
            upstream.recv(1 << 20)
        except OSError:
            pass
        finally:
            upstream.close()

    def close(self) -> None:
        self.closed = True
        self.listener.close()


@pytest.fixture
def proxy(redis_server) -> Iterator[FaultProxy]:
    p = FaultProxy(redis_server.port)
    yield p
    p.close()


def _held(engine: Engine) -> list[str]:
    return sorted(a.id for a in engine.ledger.read().allocations)


@pytest.mark.parametrize("how", ["after", "before", "late"])
def test_a_lost_reply_to_a_one_call_grant_or_release_loses_nothing(proxy: FaultProxy, redis_server, config: Path,
                                                                 tmp_path: Path, how: str) -> None:
    location = f"{proxy.url(redis_server.password)}?ledger={ledger_name()}"
    engine = engine_on(location, config, tmp_path, "ci-1")
    request = engine.resolve_request("tiny", "db")
    engine.release([engine.allocate(request, engine.owner()).id])  # the pool registered, the scripts loaded

    proxy.lose(scripts.FAST_GRANT.sha.encode(), how)
    granted = engine.allocate(request, engine.owner())
    assert proxy.fired == [how]
    time.sleep(0.8 if how == "late" else 0)  # a late copy of the request would have landed by now
    assert _held(engine) == [granted.id]  # granted once, and the caller holds what was granted

    proxy.lose(scripts.FAST_RELEASE.sha.encode(), how)
    released = engine.release([granted.id])
    assert ([a.id for a in released.released], released.missing) == ([granted.id], [])
    time.sleep(0.8 if how == "late" else 0)
    assert _held(engine) == []
    assert verify_ledger(engine).findings == ()


@pytest.mark.parametrize("how", ["after", "before", "late"])
def test_a_lost_reply_to_a_one_call_join_files_the_waiter_once(proxy: FaultProxy, redis_server, config: Path,
                                                               tmp_path: Path, how: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """No room: the waiter joins in the grant's call. Its reply lost, the waiter is in the
    queue exactly once, and the caller knows it is waiting."""
    location = f"{proxy.url(redis_server.password)}?ledger={ledger_name()}"
    a, b = engine_on(location, config, tmp_path, "ci-1"), engine_on(location, config, tmp_path, "ci-2")
    request = a.resolve_request("rig", "hil")
    b.release([b.allocate(request, b.owner()).id])  # the pool registered, the ledger known to b
    held = a.allocate(request, a.owner())
    b._last_sweep = time.monotonic()  # b looked at its own holders a moment ago (it holds none anyway)

    proxy.lose(scripts.FAST_GRANT.sha.encode(), how)
    if how == "after":  # it joined: the lookup finds it so, and no transaction joins it again
        monkeypatch.setattr(b.ledger, "_begin", lambda *args: pytest.fail("a transaction after the join"))
    allocation, waiter, _ = b.allocate_or_join(request, b.owner(), waiter_id="0000b0b2",
                                               waiter_owner=b.current_process_owner())
    monkeypatch.undo()
    assert proxy.fired == [how]
    time.sleep(0.8 if how == "late" else 0)  # a late copy of the request would have landed by now
    assert allocation is None and waiter is not None and waiter.id == "0000b0b2"
    assert [w.id for w in b.ledger.read().waiters] == ["0000b0b2"]
    a.release([held.id])  # handed to the waiter, which takes it
    granted, _ = b.try_admit_waiter(waiter, b.owner())
    assert granted is not None and _held(b) == [granted.id] and b.ledger.read().waiters == []
    assert verify_ledger(b).findings == ()


def test_a_waiter_that_joined_in_one_call_and_timed_out_says_why(redis_server, config: Path,
                                                                  tmp_path: Path) -> None:
    """The one-call join brings back no reasons; a wait that runs out says them all the same."""
    location = f"{redis_server.url}?ledger={ledger_name()}"
    a, b = engine_on(location, config, tmp_path, "ci-1"), engine_on(location, config, tmp_path, "ci-2")
    request = a.resolve_request("rig", "hil")
    b.release([b.allocate(request, b.owner()).id])
    held = a.allocate(request, a.owner())
    joins: list[object] = []
    ledger = b.ledger
    assert isinstance(ledger, RedisLedger)
    fast_grant = ledger.fast_grant
    ledger.fast_grant = lambda plan: joins.append(fast_grant(plan)) or joins[-1]  # type: ignore[method-assign]
    with pytest.raises(WaitTimeoutError) as caught:
        allocate_waiting(b, request, b.owner(), wait=True, timeout=0)  # no look after the join
    assert [type(j).__name__ for j in joins] == ["Waiter"]  # it joined in the one call
    assert "after waiting 0s: layer rig memory: 100 of 100 MB in use" in str(caught.value)
    assert b.ledger.read().waiters == [] and _held(a) == [held.id]


@pytest.mark.parametrize("how", ["after", "before", "late"])
def test_a_lost_reply_to_a_commit_reports_the_truth(proxy: FaultProxy, redis_server, config: Path, tmp_path: Path,
                                                    how: str) -> None:
    location = f"{proxy.url(redis_server.password)}?ledger={ledger_name()}"
    engine = engine_on(location, config, tmp_path, "ci-1")
    request = engine.resolve_request("tiny", "db")
    held = engine.allocate(request, engine.owner())
    before = engine.ledger.read().journal_seq

    proxy.lose(scripts.COMMIT.sha.encode(), how)
    assert engine.renew([held.id], hold_seconds=7200) == []  # a transaction: lock, read, commit
    assert proxy.fired == [how]
    time.sleep(0.8 if how == "late" else 0)
    after = engine.ledger.read()
    assert after.known[held.id].expires_at >= after.now + 7000  # the change is there
    assert after.journal_seq == before and after.counter == engine.ledger.memory.counter  # once, not twice
    assert verify_ledger(engine).findings == ()


def test_connections_killed_every_50ms_leave_no_allocation_behind(redis_server, config: Path, tmp_path: Path) -> None:
    """Eight workers on four hosts allocate and release while every client connection is
    killed (``CLIENT KILL``) every 50 ms: each finishes its rounds, and the ledger is empty."""
    location = f"{redis_server.url}?ledger={ledger_name()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_STATE_HOME": str(tmp_path / "state")}
    procs = []
    for i in range(8):
        log = tmp_path / f"worker{i}.log"
        procs.append((subprocess.Popen([sys.executable, str(WORKER), str(config), location, str(log), "60",
                                        f"ci-runner-{i % 4}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True, env=env), log))
    for proc, _ in procs:
        assert proc.stdout.readline().strip() == "ready"
    stop = threading.Event()
    killed = [0]

    def kill_every_50ms() -> None:
        wire = Wire(redis_server.url, ServerOptions())
        while not stop.wait(0.05):
            try:
                killed[0] += int(wire.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"))
            except Exception:  # noqa: BLE001
                wire.close()
        wire.close()

    killer = threading.Thread(target=kill_every_50ms, daemon=True)
    killer.start()
    try:
        for proc, _ in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        events = []
        for proc, log in procs:
            _, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err
            events += [json.loads(line) for line in log.read_text().splitlines()]
    finally:
        stop.set()
        killer.join(timeout=10)
    outages = [e for e in events if e["event"] == "outage"]
    print(f"{killed[0]} connections killed, {len(outages)} calls failed and were tried again")
    assert killed[0] > 20, "the storm should have killed connections"
    assert sum(e["event"] == "grant" for e in events) == 8 * 60
    assert not [e for e in events if e["event"] == "fenced"]
    auditor = engine_on(location, config, tmp_path, "auditor")
    assert auditor.ledger.read().allocations == []
    assert verify_ledger(auditor).findings == ()


# -- fencing, eviction, persistence ------------------------------------------------------------------

def test_a_restart_without_persistence_then_a_fresh_host_never_repeats_a_token(own_redis, config: Path,
                                                                               tmp_path: Path) -> None:
    location = f"{own_redis.url}?ledger=fleet"
    a = engine_on(location, config, tmp_path, "host-a")
    first = a.allocate(a.resolve_request("rig", "hil"), a.owner())
    own_redis.restart()  # no persistence: it comes back empty
    c = engine_on(location, config, tmp_path, "host-c")  # never used the ledger: cannot know
    second = c.allocate(c.resolve_request("rig", "hil"), c.owner())
    assert second.slot == first.slot == 0  # the same instance, handed out again by a ledger that forgot...
    assert second.fencing_token > first.fencing_token  # ...with a token the old holder's cannot equal
    with pytest.raises(LedgerError) as refused:
        a.allocate(a.resolve_request("rig", "hil"), a.owner())  # the host that remembers refuses
    assert "started again from scratch" in refused.value.message


def test_a_server_that_may_evict_keys_is_refused_naming_the_setting(own_redis, config: Path) -> None:
    redis_call(own_redis, "CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
    env = {"NETRA_RM_LEDGER": f"{own_redis.url}?ledger=fleet", "NETRA_RM_CONFIG": str(config)}
    refused = netra(env, "allocate", "--layer", "tiny", "--category", "db")
    assert refused.returncode == 5, refused.stderr
    assert "maxmemory-policy allkeys-lru" in refused.stderr and "noeviction" in refused.stderr
    assert refused.stdout == "" and "Traceback" not in refused.stderr
    no_password_in(refused.stderr)
    assert redis_call(own_redis, "KEYS", "netra-rm:*") == []  # nothing written
    redis_call(own_redis, "CONFIG", "SET", "maxmemory-policy", "noeviction")
    assert netra(env, "allocate", "--layer", "tiny", "--category", "db").returncode == 0


def test_a_server_without_persistence_is_a_warning_in_status(own_redis, config: Path) -> None:
    env = {"NETRA_RM_LEDGER": f"{own_redis.url}?ledger=fleet", "NETRA_RM_CONFIG": str(config), "COLUMNS": "200"}
    status = netra(env, "status", "--json")
    assert status.returncode in (0, 1), status.stderr
    warnings = json.loads(status.stdout)["resources"]["ledger_warnings"]
    assert len(warnings) == 1 and "keeps no persistence" in warnings[0] and "appendonly yes" in warnings[0]
    table = netra(env, "status")
    assert "keeps no persistence" in table.stdout
    no_password_in(status.stdout, table.stdout)
    redis_call(own_redis, "CONFIG", "SET", "appendonly", "yes")
    assert json.loads(netra(env, "status", "--json").stdout)["resources"]["ledger_warnings"] == []


def test_leases_are_judged_by_the_servers_clock_not_a_skewed_host(redis_server, config: Path, tmp_path: Path) -> None:
    """A host whose clock runs 45 s ahead (libfaketime) must not reclaim another host's
    allocation, whose 30 s lease is healthy by the server's clock."""
    faketime = find_binary("faketime")
    if faketime is None:
        pytest.skip("faketime is not installed")
    location = f"{redis_server.url}?ledger={ledger_name()}"
    a = engine_on(location, config, tmp_path, "host-a")
    held = a.allocate(a.resolve_request("rig", "hil"), a.current_process_owner())  # this process: alive
    assert held.lease_expires_at is not None and held.lease_expires_at - held.created_at == pytest.approx(30)
    env = {"NETRA_RM_LEDGER": location, "NETRA_RM_CONFIG": str(config), "NETRA_RM_HOST_ID": "host-b",
           "XDG_STATE_HOME": str(tmp_path / "state-b")}
    skewed = netra(env, "allocate", "--layer", "rig", "--category", "skewed", prefix=(faketime, "-f", "+45s"))
    assert skewed.returncode == 3, skewed.stdout + skewed.stderr  # no room: the rig is held
    status = netra(env, "status", "--json", prefix=(faketime, "-f", "+45s"))
    assert [x["id"] for x in json.loads(status.stdout)["resources"]["active_allocations"]] == [held.id]
    assert [e["event"] for e in ledger_history(a) if e.get("id") == held.id] == ["grant"]


# -- schema 1 ------------------------------------------------------------------------------------------

def test_a_schema_1_ledger_is_upgraded_in_one_step_and_keeps_its_journal(redis_server, config: Path,
                                                                        tmp_path: Path) -> None:
    """The old code's document, written here as it wrote it: one hash (doc, version, id,
    origin), its journal list, and a release it recorded without its lock."""
    name = ledger_name()
    prefix = f"netra-rm:{{{name}}}:"
    now = time.time()

    def v1_allocation(ident: str, slot: int, token: int, host: str) -> dict:
        return {"id": ident, "layer": "tiny", "category": "old", "memory_mb": 100, "cpu_percent": 10.0,
                "dedicated": False, "requires": [], "created_at": round(now - 60, 3),
                "expires_at": round(now + 3600, 3), "slot": slot, "fencing_token": token,
                "owner": {"host": host, "user": "ci", "pid": None, "start": None}}

    allocations = [v1_allocation("aaaaaaaa0001", 0, 5, "ci-1"), v1_allocation("aaaaaaaa0002", 1, 6, "ci-2"),
                   v1_allocation("aaaaaaaa0003", 2, 7, "ci-1")]
    head = {"schema_version": 1, "fencing_counter": 7, "journal_seq": 3, "waiters": []}
    doc = "\n".join(["#netra-rm-lines", json.dumps(head, separators=(",", ":")),
                     *(json.dumps(a, separators=(",", ":")) for a in allocations)])
    limits = {"pool": {"memory_mb": 300, "cpu_percent": 30, "instances": 3, "scope": "global"},
              "global": {"max_memory_mb": 100000, "max_cpu_percent": 100, "max_parallel_instances": 1000}}
    journal = [json.dumps({"seq": i + 1, "time": round(now - 60, 3), "event": "grant",
                           **{k: a[k] for k in ("id", "layer", "category", "memory_mb", "cpu_percent", "dedicated",
                                                "slot", "fencing_token", "owner")}, "limits": limits})
               for i, a in enumerate(allocations)]
    ledger_id = os.urandom(16).hex()
    redis_call(redis_server, "HSET", prefix + "ledger", "doc", doc, "version", "9", "id", ledger_id, "origin", "auto")
    redis_call(redis_server, "RPUSH", prefix + "journal", *journal)
    redis_call(redis_server, "RPUSH", prefix + "released", f"aaaaaaaa0003 {now - 1:.3f}")

    location = f"{redis_server.url}?ledger={name}"
    env = {"NETRA_RM_LEDGER": location, "NETRA_RM_CONFIG": str(config), "NETRA_RM_HOST_ID": "ci-1",
           "XDG_STATE_HOME": str(tmp_path / "state")}
    status = netra(env, "status", "--json")
    assert status.returncode in (0, 1), status.stderr
    resources = json.loads(status.stdout)["resources"]
    assert sorted(a["id"] for a in resources["active_allocations"]) == ["aaaaaaaa0001", "aaaaaaaa0002"]
    assert resources["resource_pools"]["tiny"]["active_instances"] == 2
    granted = netra(env, "allocate", "--layer", "tiny", "--category", "new", "--json")
    assert granted.returncode == 0, granted.stderr
    new = json.loads(granted.stdout)
    assert new["slot"] == 2 and new["fencing_token"] > 7  # beside the old holders, above their tokens
    verified = netra(env, "verify", "--json")
    assert json.loads(verified.stdout)["clean"] is True, verified.stdout
    history = json.loads(netra(env, "history", "--json").stdout)["events"]
    assert [(e["event"], e.get("id")) for e in history if e["event"] != "pool"] == [
        ("grant", "aaaaaaaa0001"), ("grant", "aaaaaaaa0002"), ("grant", "aaaaaaaa0003"),
        ("release", "aaaaaaaa0003"), ("grant", new["id"])]
    assert [e["seq"] for e in history][:4] == [1, 2, 3, 4]  # the old journal continues
    meta = redis_call(redis_server, "HGETALL", prefix + "meta")
    assert meta[meta.index(b"id") + 1].decode() == ledger_id  # hosts that knew it still do
    assert redis_call(redis_server, "EXISTS", prefix + "ledger") == 0
    assert redis_call(redis_server, "EXISTS", prefix + "ledger.schema1") == 1  # kept aside, not lost


# -- waking ----------------------------------------------------------------------------------------------

def test_a_release_wakes_only_the_waiter_it_can_serve(redis_server, config: Path, tmp_path: Path) -> None:
    location = f"{redis_server.url}?ledger={ledger_name()}"
    engine = engine_on(location, config, tmp_path, "ci-1")
    request = engine.resolve_request("rig", "hil")
    held = engine.allocate(request, engine.owner())
    owner = engine.current_process_owner()
    waiters = ["0000000" + str(i) for i in range(1, 5)]
    for waiter_id in waiters:
        allocation, waiter, _ = engine.allocate_or_join(request, engine.owner(), waiter_id=waiter_id,
                                                        waiter_owner=owner)
        assert allocation is None and waiter is not None
    ledger = engine.ledger
    assert isinstance(ledger, RedisLedger)

    def pending() -> list[str]:
        return [w for w in waiters if redis_call(redis_server, "LLEN", ledger.key(f"wake:{w}"))]

    assert pending() == []
    calls: list[object] = []
    ledger.notify = calls.append  # type: ignore[method-assign]
    engine.release([held.id])
    assert pending() == [waiters[0]]  # the head of the queue, and nobody else
    assert calls == []  # woken by the commit itself, not by a call after it
    channel = ledger.waiter_channel(waiters[0])
    assert channel.wait(5) is True and pending() == []
    channel.close()


# -- the password a server wants ----------------------------------------------------------------

def test_a_url_without_the_password_the_server_wants_says_so_and_how_to_check(redis_server, config: Path) -> None:
    env = {"NETRA_RM_LEDGER": f"redis://127.0.0.1:{redis_server.port}/0?ledger=fleet",
           "NETRA_RM_CONFIG": str(config)}
    result = netra(env, "allocate", "--layer", "tiny", "--category", "db")
    assert result.returncode == 5, result.stderr
    assert "wants a password" in result.stderr and "gives none" in result.stderr
    assert "Protocol error" not in result.stderr and "Traceback" not in result.stderr
    assert f"--ledger 'redis://:***@127.0.0.1:{redis_server.port}/0?ledger=fleet'" in result.stderr
    command = result.stderr.split("`redis-cli ", 1)[1].split("`", 1)[0].split()
    assert command == ["-h", "127.0.0.1", "-p", str(redis_server.port), "--askpass", "ping"]
    cli = find_binary("redis-cli") or pytest.fail("redis-cli is missing (it comes with redis-server)")
    right = subprocess.run([cli, *command], input=redis_server.password + "\n", capture_output=True, text=True,
                           timeout=30)
    assert right.stdout.strip() == "PONG"
    wrong = subprocess.run([cli, *command], input="not-it\n", capture_output=True, text=True, timeout=30)
    assert "PONG" not in wrong.stdout


# -- the safety code, each piece with a test that fails without it ------------------------------------

def _wait_until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_holder_stalled_past_the_locks_expiry_has_its_late_commit_refused(redis_server, config: Path,
                                                                           tmp_path: Path) -> None:
    """The commit's version check: a transaction that held the lock too long decided on a
    ledger that moved meanwhile (a one-call grant took the only instance); its grant must
    not be written over that."""
    location = f"{redis_server.url}?ledger={ledger_name()}"
    slow = engine_on(location, config, tmp_path, "host-a", options=ServerOptions(lock_ttl=0.3))
    quick = engine_on(location, config, tmp_path, "host-b")
    request = slow.resolve_request("rig", "hil")
    quick.release([quick.allocate(request, quick.owner()).id])  # the pool registered
    found = slow.charges(request)
    ledger = slow.ledger
    assert isinstance(ledger, RedisLedger)
    with pytest.raises(LedgerError) as refused:
        with slow.transaction(Scope(keys=frozenset(c.key for c in found))) as (txn, _):
            decision = slow._decide(txn, request, found)
            assert decision.admitted
            _wait_until(lambda: redis_call(redis_server, "EXISTS", ledger.key("holder")) == 0, timeout=10,
                        what="the stalled holder's lock to expire")
            taken = quick.allocate(request, quick.owner())  # nobody holds the lock now
            slow._grant(txn, request, slow.owner(), found, decision)
    assert "changed while this process held its lock" in refused.value.message
    assert [a.id for a in quick.active_allocations()] == [taken.id]  # one holder of the one instance
    assert verify_ledger(quick).findings == ()


def test_a_fencing_counter_restored_backwards_is_refused(redis_server, config: Path, tmp_path: Path) -> None:
    location = f"{redis_server.url}?ledger={ledger_name()}"
    a = engine_on(location, config, tmp_path, "host-a")
    request = a.resolve_request("tiny", "db")
    first = a.allocate(request, a.owner())
    ledger = a.ledger
    assert isinstance(ledger, RedisLedger)
    redis_call(redis_server, "HSET", ledger.key("meta"), "counter", first.fencing_token - 10)  # an older copy
    for attempt in (lambda: a.allocate(request, a.owner()), lambda: a.release([first.id]), a.active_allocations):
        with pytest.raises(LedgerError) as refused:
            attempt()
        assert "went backwards" in refused.value.message
    assert [x.id for x in engine_on(location, config, tmp_path, "fresh-host").active_allocations()] == [first.id]


HOLD_THE_LOCK = """
import sys, time
from netra_rm.config import load_config
from netra_rm.core.engine import Engine
from netra_rm.ledger import Scope
from netra_rm.ledger.redis import RedisLedger
from netra_rm.ledger.server import ServerOptions
ledger = RedisLedger(sys.argv[2], options=ServerOptions(lock_ttl=1.0))
engine = Engine(load_config(sys.argv[1], env={}), ledger, env={"NETRA_RM_HOST_ID": "doomed"})
with engine.transaction(Scope(keys=frozenset({"layer:rig"}))):
    print("holding", flush=True)
    time.sleep(600)
"""


def test_a_killed_lock_holders_lock_is_taken_within_its_expiry(redis_server, config: Path, tmp_path: Path) -> None:
    """The lock holder's name expires: a process SIGKILLed while it holds the lock blocks
    the others for at most its lock_ttl (1 s here)."""
    location = f"{redis_server.url}?ledger={ledger_name()}"
    other = engine_on(location, config, tmp_path, "host-b", options=ServerOptions(lock_wait=20))
    request = other.resolve_request("rig", "hil")
    other.release([other.allocate(request, other.owner()).id])
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(config), location], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "holding"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    began = time.monotonic()
    other.release([other.allocate(request, other.owner()).id])  # waits for the lock: its holder is dead
    assert time.monotonic() - began < 1.0 + 3.0


def test_a_one_call_release_or_grant_on_a_ledger_this_host_does_not_know_is_refused(
        redis_server, config: Path, tmp_path: Path) -> None:
    """The ledger-id check of the one-call paths: after the ledger was lost and started
    again by a host that never saw it, a host that remembers the old one must neither
    release the new one's allocations nor grant from it."""
    location = f"{redis_server.url}?ledger={ledger_name()}"
    b = engine_on(location, config, tmp_path, "host-b")
    request = b.resolve_request("tiny", "db")
    b.release([b.allocate(request, b.owner()).id])  # b knows the ledger
    ledger = b.ledger
    assert isinstance(ledger, RedisLedger)
    for key in redis_call(redis_server, "KEYS", ledger.prefix.replace("{", "\\{").replace("}", "\\}") + "*"):
        redis_call(redis_server, "DEL", key)  # the state is lost...
    c = engine_on(location, config, tmp_path, "host-c")
    theirs = c.allocate(request, c.owner())  # ...and a fresh host starts the ledger again
    with pytest.raises(LedgerError) as refused:
        b.release([theirs.id])
    assert "started again from scratch" in refused.value.message
    with pytest.raises(LedgerError) as refused:
        b.allocate(request, b.owner())
    assert "started again from scratch" in refused.value.message
    assert [a.id for a in c.active_allocations()] == [theirs.id]


# -- a kill storm ----------------------------------------------------------------------------------------

STORM = """
layers:
  storm:
    services: []
    pool: {memory_mb: 400, cpu_percent: 40, instances: 4}
limits: {max_memory_mb: 100000, max_cpu_percent: 100, max_parallel_instances: 1000}
machine: {check_memory: false}
"""


def test_kill_storm_on_redis(redis_server, tmp_path: Path) -> None:
    """Rounds of workers allocating, waiting, releasing and reclaiming, SIGKILLed at
    random moments (inside a script, holding the lock, between two calls): after each
    round the journal verifies clean, and the next transaction drops what the dead held
    (and their places in the queue), and nothing of the living."""
    config = _write(tmp_path / "storm.yaml", STORM)
    location = f"{redis_server.url}?ledger={ledger_name()}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("NETRA_RM_")}, "PYTHONPATH": str(ROOT),
           "NETRA_RM_HOST_ID": "storm-host", "XDG_STATE_HOME": str(tmp_path / "state")}
    worker = Path(__file__).with_name("workers") / "storm_worker.py"

    def spawn(mode: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, str(worker), str(config), location, mode], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env=env)

    def auditor() -> Engine:
        ledger = RedisLedger(location, state_dir=tmp_path / "state-auditor", options=ServerOptions(lock_ttl=0.5))
        return Engine(load_config(config, env={}), ledger, env={"NETRA_RM_HOST_ID": "storm-host"})

    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    survivor = spawn("hold")
    kept = survivor.stdout.readline().strip()
    assert kept
    dead: set[int] = set()
    try:
        for round_no in range(4):
            orphan = spawn("orphan")
            orphan.communicate(timeout=60)
            dead.add(orphan.pid)
            workers = [spawn("wait" if i % 3 == 0 else "loop") for i in range(9)]
            for w in workers:
                assert w.stdout.readline().strip() == "started"
            victims = workers[:]
            rng.shuffle(victims)
            for w in victims:
                for _ in range(rng.randrange(0, 6)):
                    auditor().ledger.read(Scope())  # random moments
                w.send_signal(signal.SIGKILL)
            for w in workers:
                w.wait(timeout=60)
                dead.add(w.pid)
            report = verify_ledger(auditor())
            assert report.findings == (), f"round {round_no} (seed {seed}): {report.findings}"
            print(f"round {round_no}: {report.events} events, notes: {report.notes}")
            left = auditor().active_allocations()
            assert [a.id for a in left] == [kept], f"round {round_no} (seed {seed})"
            assert not [w for w in auditor().queue() if w.owner.pid in dead]
            assert verify_ledger(auditor()).findings == ()
    finally:
        survivor.stdin.close()
        survivor.wait(timeout=60)
    assert redis_call(redis_server, "EXISTS", f"netra-rm:{{{location.rsplit('=', 1)[1]}}}:journal.1") == 1, \
        "the storm should have rotated the journal"


@pytest.mark.parametrize("where", ["silent", "closed"])
def test_allocate_wait_timeout_2_with_the_server_unanswering_ends_within_3s(config: Path, where: str,
                                                                           request: pytest.FixtureRequest) -> None:
    """``--timeout`` bounds connecting, every reply and the lock wait: a server that takes
    the connection and never answers, or a port nobody listens on."""
    from servers import closed_port

    port = request.getfixturevalue("silent_server").port if where == "silent" else closed_port()
    env = {"NETRA_RM_LEDGER": f"redis://:{PASSWORDS[1]}@127.0.0.1:{port}/0?ledger=fleet",
           "NETRA_RM_CONFIG": str(config)}
    began = time.monotonic()
    result = netra(env, "allocate", "--layer", "tiny", "--category", "db", "--wait", "--timeout", "2")
    elapsed = time.monotonic() - began
    assert result.returncode == 5, result.stderr
    assert elapsed < 3 + 1.5, elapsed  # the command's start (a second or so on a busy machine) aside
    assert "did not answer" in result.stderr or "cannot be reached" in result.stderr
    no_password_in(result.stdout, result.stderr)


def test_the_one_call_paths_stand_aside_while_someone_waits(redis_server, config: Path, tmp_path: Path) -> None:
    """Hosts that have not seen the queue: a release wakes the waiter (the transaction,
    not the one-call path), and a newcomer does not take the room the waiter is owed."""
    location = f"{redis_server.url}?ledger={ledger_name()}"
    a, b, c = (engine_on(location, config, tmp_path, host) for host in ("host-a", "host-b", "host-c"))
    request = a.resolve_request("rig", "hil")
    held = a.allocate(request, a.owner())
    allocation, waiter, _ = b.allocate_or_join(request, b.owner(), waiter_id="0000b0b1",
                                               waiter_owner=b.current_process_owner())
    assert allocation is None and waiter is not None
    ledger = a.ledger
    assert isinstance(ledger, RedisLedger)
    a.release([held.id])
    assert redis_call(redis_server, "LLEN", ledger.key("wake:0000b0b1")) == 1  # woken
    newcomer, decision = c.try_allocate(request, c.owner())
    assert newcomer is None and "queued ahead" in " ".join(decision.reasons)
    granted, _ = b.try_admit_waiter(waiter, b.owner())
    assert granted is not None


def test_a_process_allocating_and_releasing_for_long_does_not_grow(redis_server, config: Path,
                                                                   tmp_path: Path) -> None:
    """A long-lived process (a test session under the plugin, an agent) allocates and
    releases thousands of times: what it keeps of the records it was given goes when they
    are released (before, each pair left about a kilobyte behind until 50,000 piled up)."""
    import tracemalloc

    engine = engine_on(f"{redis_server.url}?ledger={ledger_name()}", config, tmp_path, "ci-long")
    request = engine.resolve_request("rig", "hil")
    owner = engine.owner()
    for _ in range(200):
        engine.release([engine.allocate(request, owner).id])
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(2000):
            result = engine.release([engine.allocate(request, owner).id])
            assert len(result.released) == 1
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 200_000, f"{grown:,} bytes more after 2,000 allocate+release pairs"
