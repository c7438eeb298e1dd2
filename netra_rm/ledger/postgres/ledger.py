"""The PostgreSQL ledger: ``--ledger postgresql://USER[:PASSWORD]@HOST[:PORT]/DB[?ledger=NAME]``.

The ledger is tables (see :mod:`netra_rm.ledger.postgres.schema`): a row per pool key
with its usage kept current, a row per allocation, the queue, the journal. A transaction
is a PostgreSQL transaction in two round trips, each one statement on the server (the
functions of the schema, their arguments and results one JSON document):

1. *begin* (``BEGIN`` and ``netra_rm_begin``): lock the rows of the pool keys it decides
   over, in key order (so two transactions on disjoint pools never wait on each other,
   and never deadlock), and read what the :class:`Snapshot` holds: the ledger's row, the
   server's clock, a fencing token from the ledger's sequence (taken after the row
   locks, so tokens only grow per pool), the queue, the allocations it names, those due
   to be reclaimed (from the expiry and lease indexes) and, when it sweeps, this host's
   (from the host index);
2. *commit* (``netra_rm_commit``, a ``NOTIFY`` for the waiters it serves, and ``COMMIT``):
   every change (rows inserted, deleted or updated, usage moved by its deltas, journal
   lines numbered by the server under the ledger row's lock, the request id); the
   waiters hear of it once it is committed, and only then.

A release while others wait takes such a transaction (it may hand the room on); its
begin finds the pool keys it needs itself (those of the allocations it releases and of the
waiters sharing them), so the release is these two round trips.

A read is one statement (its snapshot is consistent), and so is a release while nobody
waits (:meth:`PostgresLedger.fast_release`). Nothing a transaction reads or writes grows
with the number of active allocations.

Lost replies. Each change carries a request id, committed with it. When the connection
drops after the commit was sent, the ledger connects again, terminates the server
process of the lost connection and waits until it is gone (it can commit no more), then
asks whether its request id was committed, and tells the truth: the change happened (the
command carries on) or it did not (exit 5: nothing was written).

Time is the server's (``clock_timestamp()``): expiries and leases are judged by it.
psycopg is imported only when a PostgreSQL ledger is used.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from netra_rm import deadline
from netra_rm.errors import LedgerError, LedgerLostError
from netra_rm.ledger.base import (
    EVERYTHING,
    GRANT_FILLED,
    Changes,
    GrantPlan,
    Scope,
    SlotBitmap,
    Snapshot,
    Txn,
    grant_template,
    wake_payloads,
    whole_amounts,
)
from netra_rm.ledger.journal import allocation_record, checkpoint_record, encode_line, limits_record
from netra_rm.ledger.postgres import schema
from netra_rm.ledger.postgres.session import BackendId, Watchdog, connect, end_backend, first_line, ms
from netra_rm.ledger.postgres.wake import (
    NOTIFY,
    NOTIFY_PAYLOAD_LIMIT,
    Listeners,
    PostgresWakeChannel,
    channel_prefix,
    notify_params,
)
from netra_rm.ledger.server import ServerLedger, ServerOptions
from netra_rm.records import Allocation, PoolRecord, RecordError, Usage, is_id, token_floor

#: Committed request ids are kept at least this long (seconds) for clients that lost a reply.
REQUEST_MEMORY = 3600.0

_HELLO = ("SELECT (SELECT value FROM netra_rm_meta WHERE key = 'schema_version'), "
          "(SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()), "
          "(SELECT id FROM netra_rm_ledgers WHERE name = %s), "
          f"to_regclass('{schema.V1_DOCUMENTS}') IS NOT NULL")
#: the server's side of a transaction and of a read (see schema.FUNCTIONS): one statement each
_BEGIN = "SELECT netra_rm_begin(%s::jsonb)"
_COMMIT = "SELECT netra_rm_commit(%s::jsonb)"
_READ = "SELECT netra_rm_read(%s::jsonb)"
_RELEASE = "SELECT netra_rm_release(%s::jsonb)"
_GRANT = "SELECT netra_rm_grant(%s::jsonb)"
_NEXT_TOKEN = "SELECT nextval(%s::regclass)"
_RAISE_COUNTER = ("SELECT setval(%(s)s::regclass, %(n)s) "
                  "WHERE %(n)s > coalesce(pg_sequence_last_value(%(s)s::regclass), 0)")
_ALL = "SELECT doc FROM netra_rm_allocations WHERE ledger = %(l)s"
_ASKED = "SELECT coalesce(outcome, '[]') FROM netra_rm_requests WHERE ledger = %s AND id = %s"
_FORGET_REQUESTS = ("DELETE FROM netra_rm_requests WHERE ledger = %s "
                    f"AND committed_at < extract(epoch FROM clock_timestamp())::float8 - {REQUEST_MEMORY}")


class _Retry(Exception):
    """The begin found the ledger other than it thought (created, re-created, a pool row
    missing): roll back and begin again."""


@dataclass
class _Begun:
    """What the begin read besides the snapshot."""

    snapshot: Snapshot
    ledger: int
    token: int | None
    locked: set[str]
    #: (new ledger id, origin) when this transaction starts the ledger afresh (a reset)
    identity: tuple[str, str] | None = None


class PostgresLedger(ServerLedger):
    """A ledger in a PostgreSQL database, shared by every host that reaches it."""

    backend = "PostgreSQL"
    widens = True  # netra_rm_begin finds a release's keys as it locks
    wakes_at_commit = True  # a NOTIFY sent in the transaction is delivered when it commits

    def __init__(self, url: str, *, state_dir: Path | None = None, options: ServerOptions | None = None,
                 group_shared: bool = False, clock: Callable[[], float] | None = None) -> None:
        super().__init__(url, state_dir=state_dir, options=options, group_shared=group_shared)
        #: stands in for the server's clock (tests move time with it); None: ``clock_timestamp()``
        self.clock = clock
        self._conn: Any = None
        self._pipe: Any = None  # the main connection stays in pipeline mode (see _batch)
        # leaving pipeline mode, also when the process exits with the ledger still open
        self._pipe_exit = ExitStack()
        weakref.finalize(self, _close_quietly, self._pipe_exit)
        self._backend: BackendId | None = None
        self._ledger: int | None = None  # the row id of this ledger, once known
        self._keys: set[str] = set()  # pool keys known to have a row
        self._v1 = False
        self._in_transaction = False
        self._lock = threading.RLock()
        me = weakref.ref(self)  # the watchdog must not keep a dropped ledger alive
        self._watchdog = Watchdog(lambda: getattr(me(), "_conn", None))
        self.channel = channel_prefix(self.name)
        self._listeners = Listeners(partial(connect, self.server_url, self.options))
        self._grant_cache: dict[Any, tuple[dict[str, Any], dict[str, Any], Any, list[dict[str, Any]]]] = {}

    # -- connections and errors ----------------------------------------------------------

    def connect(self) -> Any:
        """A new connection with every bound set (see :mod:`netra_rm.ledger.postgres.session`)."""
        return connect(self.server_url, self.options)

    def _connection(self) -> Any:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._open()
        return self._conn

    def _open(self) -> None:
        """Connect, make sure the tables are this version's, find the ledger's row, and
        put the connection in pipeline mode for good (see :meth:`_batch`)."""
        import psycopg

        if self._conn is not None:
            self._drop()  # closed by the server: let go of it properly
        conn = self.connect()
        self._conn = conn
        try:
            row = conn.execute(_HELLO, (self.name,)).fetchone()
        except psycopg.errors.UndefinedTable:
            row = None
        if row is None or row[0] is None or int(row[0]) != schema.TABLES_VERSION:
            schema.ensure_tables(conn, self.location)
            row = conn.execute(_HELLO, (self.name,)).fetchone()
        self._backend = BackendId(conn.info.backend_pid, row[1])
        self._set_ledger(row[2])
        self._v1 = bool(row[3])  # ledgers of version 1 wait to be upgraded
        self._enter_pipeline()

    def _set_ledger(self, ident: int | None) -> None:
        if ident != self._ledger:
            self._keys = set()
        self._ledger = ident

    @contextmanager
    def _errors(self, *, waits_for_lock: bool = False) -> Iterator[None]:
        """Turn every psycopg error into a :class:`LedgerError` naming this ledger, and
        bound the calls inside: past the reply timeout (plus the lock wait, when they
        wait for row locks) the connection is cut, even if the server hangs."""
        import psycopg

        seconds = deadline.remaining(self.options.io_timeout + (self.options.lock_wait if waits_for_lock else 0.0))
        self._watchdog.arm(max(seconds, 0.05))
        try:
            yield
        except LedgerError:
            self._drop()
            raise
        except RecordError as exc:
            self._drop()
            raise self.error(str(exc), corrupt=True) from None
        except (psycopg.Error, OSError) as exc:
            self._drop()
            raise self._translate(exc, seconds) from None
        finally:
            self._watchdog.disarm()

    def _translate(self, exc: BaseException, seconds: float) -> LedgerError:
        import psycopg

        if isinstance(exc, psycopg.errors.LockNotAvailable):
            return self.error(f"is busy: its row locks were held by others for {self.options.lock_wait:g}s.",
                              remediation=["Try again; if it persists, look for a stuck netra-rm process "
                                           "(pg_stat_activity shows who holds the locks)."])
        if isinstance(exc, psycopg.errors.QueryCanceled):
            return self.error("did not answer in time; this command changed nothing.", remediation=self._reach_steps())
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            return self.error(f"refused: {first_line(exc)}.",
                              remediation=["Grant the user CREATE on the database (netra-rm creates its tables "
                                           "there on first use), or create them as another user."])
        if self._watchdog.fired:
            return self.error(f"did not answer within {seconds:g}s; this command changed nothing.",
                              remediation=self._reach_steps())
        if isinstance(exc, OSError):
            return self.error(f"cannot be reached: {exc.strerror or exc}.", remediation=self._reach_steps())
        text = first_line(exc)
        if isinstance(exc, psycopg.OperationalError):
            if "password authentication failed" in text or "no password supplied" in text:
                return self.error(f"refused the credentials: {text}.",
                                  remediation=["Check the user and password in the ledger URL."])
            return self.error(f"cannot be reached: {text}.", remediation=self._reach_steps())
        return self.error(f"failed: {exc.__class__.__name__}: {text}.", remediation=self._reach_steps())

    def _reach_steps(self) -> list[str]:
        return [f"Check that the PostgreSQL server is running and reachable from this host: pg_isready -d "
                f"'{self.location}'", "Or use another ledger: --ledger PATH|URL or NETRA_RM_LEDGER."]

    def persistence_advice(self) -> list[str]:
        return ["Keep fsync on in the PostgreSQL server so that a crash keeps committed allocations."]

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._in_transaction = False
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
        self._leave_pipeline()

    def _enter_pipeline(self) -> None:
        self._pipe = self._pipe_exit.enter_context(self._conn.pipeline())

    def _leave_pipeline(self) -> None:
        self._pipe = None
        _close_quietly(self._pipe_exit)

    def close(self) -> None:
        with self._lock:
            self._drop()
        self._listeners.close()

    def _batch(self, statements: Sequence[tuple[str, Any]]) -> list[Any]:
        """Send ``statements`` at once, then a Sync, and read every result: one round trip.

        The connection stays in pipeline mode between batches: leaving it (or fetching a
        result on its own) makes the driver send a Flush after the Sync, and a server
        that receives one does not start its ``idle_in_transaction_session_timeout``
        again, so a holder that stalls between its two batches would keep its row locks.
        """
        conn = self._conn
        cursors = [conn.execute(query, params, prepare=None if params is not None else False)
                   for query, params in statements]
        self._pipe.sync()
        return cursors

    @contextmanager
    def _plain(self) -> Iterator[Any]:
        """The connection out of pipeline mode, for a few statements (creating tables or a
        ledger), then back in it."""
        self._leave_pipeline()
        try:
            yield self._conn
        finally:
            if self._conn is not None and not self._conn.closed:
                self._enter_pipeline()

    def _now(self) -> dict[str, float]:
        return {} if self.clock is None else {"now": float(self.clock())}

    # -- the ledger's row ------------------------------------------------------------------

    def _fenced(self, *, exists: bool, ledger_id: str | None, origin: str | None,
                counter: int) -> LedgerLostError | None:
        """The error to raise when the ledger as read is not the one this host knows (see
        :meth:`ServerLedger.fencing_problem`), or None."""
        problem = self.fencing_problem(exists=exists, ledger_id=ledger_id, origin=origin, counter=counter)
        return None if problem is None else LedgerLostError(self.scrub(problem[0]), remediation=problem[1])

    def _create(self, *, reset: bool, reading: bool = False) -> None:
        """Create the ledger on first use, or upgrade the version-1 document that holds
        it. A ledger this host used that is gone is refused (unless ``reset``: it starts
        afresh, its tokens above any seen); a read creates nothing."""
        problem = self._fenced(exists=False, ledger_id=None, origin=None, counter=0)
        fresh = not reading and (problem is None or reset)
        if not fresh and not self._v1:
            if problem is not None and not reading:
                raise problem
            return
        origin, floor = ("reset", self.memory.counter) if problem is not None else ("new", 0)
        with self._plain() as conn:
            ident = schema.create_ledger(conn, self.name, origin=origin, floor=floor, scope_of=self.scope_of,
                                         fresh=fresh, v1=self._v1)
        if ident is None:
            if problem is not None and not reading:
                raise problem
            return
        if problem is not None and fresh:
            self.memory.forget()
        self._set_ledger(ident)

    # -- transactions -----------------------------------------------------------------------

    @contextmanager
    def transaction(self, scope: Scope, *, reset: bool = False) -> Iterator[Txn]:
        """Lock the pool rows ``scope`` needs, read, let the engine decide, apply its
        changes at once (see the module docstring)."""
        with self._lock:
            # what this host remembers is loaded before the ledger is read: seen after, another
            # process's note could make a ledger created meanwhile look lost
            self.memory.load()
            begun = self._begin(scope, reset=reset)
            txn = Txn(begun.snapshot, tokens=self._token_source(begun))
            txn.changes.request_id = os.urandom(8).hex()
            try:
                yield txn
            except BaseException:
                self._abort()
                raise
            if txn.changes or begun.identity is not None:
                self._commit(txn, begun)
            else:
                self._end()
            ledger_id = begun.identity[0] if begun.identity is not None else begun.snapshot.ledger_id
            self.memory.note(ledger_id, txn.counter)
            self.see_queue(bool(txn.waiters))  # as this transaction leaves it
        self.memory.flush()

    def _begin(self, scope: Scope, *, reset: bool) -> _Begun:
        import psycopg

        for _ in range(5):
            reused = self._conn is not None and not self._conn.closed
            try:
                with self._errors(waits_for_lock=True):
                    self._connection()
                    if self._ledger is None:
                        self._create(reset=reset)
                    try:
                        return self._lock_and_read(scope, reset=reset)
                    except psycopg.OperationalError:
                        if not reused or self._watchdog.fired or (self._conn is not None and not self._conn.closed):
                            raise
                        # the connection died while idle (a server restart): once more on a new one
                        self._drop()
                        continue
            except _Retry:
                continue
        raise self.error("kept changing while this command began its transaction; try again.")

    def _lock_and_read(self, scope: Scope, *, reset: bool) -> _Begun:
        assert self._ledger is not None
        ident = self._ledger
        keys = sorted(scope.keys)
        grants = bool(keys) or scope.everything or scope.widen
        request: dict[str, Any] = {"l": ident, "name": self.name, "keys": keys, "ids": list(scope.ids),
                                   "host": scope.sweep_host, "all": scope.everything, "token": grants,
                                   **self._now()}
        if scope.widen:
            request["widen"] = True
        wait = deadline.remaining(self.options.lock_wait)
        if wait < self.options.lock_wait:
            request["lock_timeout"] = f"{ms(max(wait, 0.001))}ms"
        new = [k for k in keys if k not in self._keys]
        if new and not scope.everything:
            request["new"] = new
        self._in_transaction = True
        _, cursor = self._batch([("BEGIN", None), (_BEGIN, (_json(request),))])
        found = json.loads(cursor.fetchone()[0])
        head = found["head"]
        if head is None or head["id"] != ident:
            self._end()
            self._set_ledger(head["id"] if head is not None else None)
            raise _Retry
        pools = found["pools"]
        locked = {row["key"] for row in pools}
        self._keys |= locked
        missing = set(keys) - locked
        if missing and not scope.everything:  # rows deleted behind our back: insert them again
            self._keys -= missing
            self._end()
            raise _Retry
        now, counter = float(found["now"]), int(head["counter"])
        snapshot = self._snapshot(found, scope=scope, locked=locked)
        begun = _Begun(snapshot=snapshot, ledger=ident, token=counter if grants else None, locked=locked)
        problem = self._fenced(exists=True, ledger_id=head["ledger_id"], origin=head["origin"],
                                       counter=counter)
        if problem is not None:
            if not reset:
                self._end()
                raise problem
            # start afresh: a new id, and tokens above anything handed out or seen
            floor = max(token_floor(now), self.memory.counter, counter)
            self._batch([(_RAISE_COUNTER, {"s": schema.sequence_name(ident), "n": floor})])
            self.memory.forget()
            begun.identity = (uuid.uuid4().hex, "reset")
            begun.token = None
            snapshot.counter = floor
        return begun

    def _token_source(self, begun: _Begun) -> Callable[[], int]:
        """Fencing tokens for this transaction: the one read with the row locks, then more
        from the ledger's sequence (one round trip each)."""
        sequence = schema.sequence_name(begun.ledger)

        def next_token() -> int:
            if begun.token is not None:
                token, begun.token = begun.token, None
                return token
            with self._errors():
                (cursor,) = self._batch([(_NEXT_TOKEN, (sequence,))])
                return int(cursor.fetchone()[0])

        return next_token

    def _snapshot(self, found: dict[str, Any], *, scope: Scope, locked: set[str] | None) -> Snapshot:
        """The snapshot of what the server sent; ``locked``: the keys this transaction
        holds (due and host allocations that count elsewhere too are left to those who
        lock those keys)."""
        head = found["head"]
        now = float(found["now"])
        snapshot = Snapshot(now=now, counter=int(head["counter"]), complete=scope.everything,
                            ledger_id=head["ledger_id"], origin=head["origin"], journal_seq=int(head["journal_seq"]),
                            keys=None if scope.everything else frozenset(row["key"] for row in found["pools"]))
        for row in found["pools"]:
            key = row["key"]
            snapshot.usage[key] = Usage(int(row["memory_mb"]), int(row["cpu_units"]), int(row["instances"]),
                                        int(row["dedicated"]))
            bits = bytes.fromhex(row["taken"])
            if bits.strip(b"\x00"):
                snapshot.taken[key] = SlotBitmap(bits)
            if row["record"] is not None:
                snapshot.pools[key] = PoolRecord.from_dict(row["record"])
        snapshot.waiters = [self.parsed_waiter(text) for text in found["waiters"]]  # each as JSON text
        named = set(scope.ids)
        seen: dict[str, Allocation] = {}
        for doc in found["allocations"]:
            ident = doc.get("id") if isinstance(doc, dict) else None
            if ident not in seen:
                allocation = Allocation.from_dict(doc)
                seen[allocation.id] = allocation
        host = scope.sweep_host
        if host is not None:
            snapshot.host_allocations = [a for a in seen.values() if a.owner.host == host]
        for allocation in seen.values():
            if not (scope.everything or locked is None or allocation.id in named
                    or locked.issuperset(allocation.charges)):
                continue
            snapshot.known[allocation.id] = allocation
            lease = allocation.lease_expires_at
            if allocation.expires_at <= now or (lease is not None and lease <= now):
                snapshot.due.append(allocation)
        return snapshot

    def _end(self) -> None:
        """End a transaction that changed nothing."""
        with self._errors():
            self._batch([("ROLLBACK", None)])
        self._in_transaction = False

    def _abort(self) -> None:
        if not self._in_transaction or self._conn is None:
            return
        try:
            self._batch([("ROLLBACK", None)])
            self._in_transaction = False
        except Exception:  # noqa: BLE001 - the server rolls back a broken connection's transaction
            self._drop()

    # -- commit ------------------------------------------------------------------------------

    def _commit(self, txn: Txn, begun: _Begun) -> None:
        """Apply every change and commit, in one round trip; a lost reply is resolved by
        the request id (see the module docstring)."""
        import psycopg

        changes = txn.changes
        conn = self._conn
        backend = self._backend
        seconds = deadline.remaining(self.options.io_timeout)
        self._watchdog.arm(max(seconds, 0.05))
        statements: list[tuple[str, Any]] = [(_COMMIT, (_json(self._changes(changes, begun)),))]
        if changes.wake:  # delivered when (and only if) the transaction commits
            woken = [(w, p) for w, p in zip(changes.wake, wake_payloads(changes, limit=NOTIFY_PAYLOAD_LIMIT))
                     if is_id(w)]
            statements.append((NOTIFY, notify_params(self.channel, [w for w, _ in woken], [p for _, p in woken])))
        try:
            cursor = self._batch([*statements, ("COMMIT", None)])[0]
        except (psycopg.Error, OSError) as exc:
            # a server error in a statement aborted the transaction, on a connection that
            # lives on; anything else (the connection lost, the session ended by the server,
            # a late reply) may have come after the COMMIT went through: ask
            lost = (isinstance(exc, (psycopg.OperationalError, OSError)) or conn.closed or conn.broken
                    or self._watchdog.fired)
            self._watchdog.disarm()
            if not lost or backend is None or changes.request_id is None:
                self._drop()
                raise self._translate(exc, seconds) from None
            self._drop()
            why = first_line(exc)
            if self._resolve(changes.request_id, backend, begun.ledger, why) is None:
                raise self.error(f"lost the connection while committing ({why}); the server has no record of "
                                 "the commit, so nothing was written.", remediation=["Run the command again."]
                                 ) from None
            return
        finally:
            self._watchdog.disarm()
        self._in_transaction = False
        journal = cursor.fetchone()[0]
        if journal:
            self._rotate_if_long(begun.ledger, int(journal.split()[1]))

    def _changes(self, changes: Changes, begun: _Begun) -> dict[str, Any]:
        """What :func:`netra_rm_commit` applies for ``changes``."""
        out: dict[str, Any] = {"l": begun.ledger}
        if changes.grants:
            out["grants"] = [a.to_dict() for a in changes.grants]
        if changes.removals:
            out["removals"] = [a.id for a in changes.removals]
        if changes.updates:
            out["updates"] = [a.to_dict() for a in changes.updates]
        if changes.pools:
            out["pools"] = [p.to_dict() for p in changes.pools]
        keys = sorted(set(changes.deltas) | set(changes.slots_taken) | set(changes.slots_freed))
        if keys:
            unknown = [k for k in keys if k not in begun.locked]
            if unknown:
                out["new"] = unknown
            usage = []
            for key in keys:
                delta = changes.deltas.get(key, Usage())
                usage.append({"k": key, "m": delta.memory_mb, "c": delta.cpu_units, "i": delta.instances,
                              "d": delta.dedicated, "freed": sorted(changes.slots_freed.get(key, ())),
                              "took": sorted(changes.slots_taken.get(key, ()))})
            out["usage"] = usage
        if changes.waiters_put:
            out["put"] = [w.to_dict() for w in changes.waiters_put.values()]
        if changes.waiters_gone:
            out["gone"] = sorted(changes.waiters_gone)
        if changes.counter is not None and changes.counter > begun.snapshot.counter:
            out["counter"] = changes.counter
        if begun.identity is not None:
            out["identity"] = list(begun.identity)
        if changes.request_id is not None:
            out["request"] = changes.request_id
            if random.random() < 0.001:
                out["forget"] = REQUEST_MEMORY
        if changes.events:
            out["lines"] = [encode_line(e).rstrip(b"\n").decode() for e in changes.events]
        return out

    def _resolve(self, request_id: str, backend: BackendId, ledger: int, why: str) -> Any:
        """The connection was lost after the commit was sent: make sure the server process
        that had it is gone, then ask whether the commit happened: what it recorded of its
        outcome if it did, None if it did not. Raises :class:`LedgerError` when nobody can
        tell (the server cannot be reached again in time)."""
        until = time.monotonic() + deadline.remaining(max(self.options.io_timeout * 2, 10.0))
        pause = 0.02
        while True:
            try:
                with self._errors():
                    conn = self.connect()
                    try:
                        gone = end_backend(conn, backend, until=until)
                        row = conn.execute(_ASKED, (ledger, request_id)).fetchone() if gone else None
                    finally:
                        conn.close()
                break
            except LedgerError:
                if time.monotonic() + pause >= until:
                    raise self.error(f"lost the connection while committing ({why}) and could not reach the "
                                     "server again to learn whether the change was written.",
                                     remediation=["See what the ledger holds once the server is back: "
                                                  "netra-rm status", *self._reach_steps()]) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.5)
        if not gone:
            raise self.error(f"lost the connection while committing ({why}), and its server process {backend.pid} "
                             "is still running: whether the change was written is not known yet.",
                             remediation=["See what the ledger holds: netra-rm status"])
        return None if row is None else row[0]

    def _rotate_if_long(self, ledger: int, lines: int) -> None:
        """After a change left the journal ``lines`` long: rotate it if that is too long."""
        if lines >= self.options.journal_max_lines:
            try:
                self._rotate(ledger)
            except LedgerError:
                pass  # the next change tries again

    def _rotate(self, ledger: int) -> None:
        """Start the journal's next generation with a checkpoint of every allocation, and
        drop the generation before the previous one (the file ledger keeps ``journal.1``
        likewise); forget old request ids on the way. Its own transaction: the ledger
        row's lock keeps every other commit of journal lines out meanwhile."""
        with self._lock, self._errors(waits_for_lock=True):
            self._connection()
            params = {"l": ledger, "name": self.name}
            cursors = self._batch([
                ("BEGIN", None),
                ("SELECT journal_seq, journal_lines, journal_start, extract(epoch FROM clock_timestamp())::float8, "
                 "coalesce(pg_sequence_last_value(('netra_rm_tokens_' || id)::regclass), 0) "
                 "FROM netra_rm_ledgers WHERE id = %(l)s FOR UPDATE", params),
                (_ALL, params)])
            self._in_transaction = True
            head = cursors[1].fetchone()
            if head is None or head[1] < self.options.journal_max_lines:
                self._end()  # someone else rotated it meanwhile
                return
            seq, _, start, now, counter = head
            allocations = [Allocation.from_dict(row[0]) for row in cursors[2].fetchall()]
            line = encode_line(checkpoint_record(after=int(seq), now=now, reason="rotate", counter=int(counter),
                                                 allocations=allocations))
            position = 2 * int(seq) + 1
            self._batch([
                ("INSERT INTO netra_rm_journal (ledger, pos, line) VALUES (%s, %s, %s)",
                 (ledger, position, line.rstrip(b"\n").decode())),
                ("DELETE FROM netra_rm_journal WHERE ledger = %s AND pos < %s", (ledger, start)),
                (_FORGET_REQUESTS, (ledger,)),
                ("UPDATE netra_rm_ledgers SET journal_lines = 1, journal_start = %s, "
                 "journal_generation = journal_generation + 1 WHERE id = %s", (position, ledger)),
                ("COMMIT", None)])
            self._in_transaction = False

    # -- reading -----------------------------------------------------------------------------

    def _read(self, scope: Scope, **extra: Any) -> tuple[Snapshot, dict[str, Any]]:
        """A consistent snapshot, in one statement (its snapshot is the read's) and one
        round trip; ``extra``: ``journal=True`` for every journal line, ``tail=N`` for
        the last N (as [position, line])."""
        request: dict[str, Any] = {"name": self.name, "keys": sorted(scope.keys), "ids": list(scope.ids),
                                   "host": scope.sweep_host, "all": scope.everything, **self._now(), **extra}
        self.memory.load()  # before the read (see transaction())
        for _ in range(3):
            with self._errors():
                self._connection()
                (cursor,) = self._batch([(_READ, (_json(request),))])
                found = json.loads(cursor.fetchone()[0])
                head = found["head"]
                ident = head["id"] if head is not None else None
                if ident is None and self._v1:
                    self._create(reset=False, reading=True)
                    if self._ledger is not None:
                        continue  # a version-1 ledger, upgraded: read it
                self._set_ledger(ident)
                if head is None:
                    snapshot = Snapshot(now=float(found["now"]), complete=scope.everything)
                else:
                    snapshot = self._snapshot(found, scope=scope, locked=None)
            problem = self._fenced(exists=head is not None, ledger_id=snapshot.ledger_id,
                                           origin=snapshot.origin, counter=snapshot.counter)
            if problem is not None:
                raise problem
            self.memory.note(snapshot.ledger_id, snapshot.counter)
            self.memory.flush()
            return snapshot, found if head is not None else {}
        raise self.error("kept changing while this command read it; try again.")

    def read(self, scope: Scope = EVERYTHING) -> Snapshot:
        """A consistent snapshot, without locks."""
        with self._lock:
            return self._read(scope)[0]

    def journal_lines(self) -> tuple[Snapshot, list[bytes], list[str]]:
        """Every allocation and every journal line, oldest first, read together."""
        with self._lock:
            snapshot, found = self._read(EVERYTHING, journal=True)
        rows = found.get("journal") or []
        start = int(found["head"]["journal_start"]) if found else 0
        names = []
        if any(pos < start for pos, _ in rows):
            names.append(f"{self.location} journal (previous generation)")
        if rows:
            names.append(f"{self.location} journal")
        return snapshot, [line.encode() for _, line in rows], names

    def journal_tail(self, limit: int) -> tuple[int, list[bytes]]:
        """The committed journal sequence and the last ``limit`` lines, read from the end."""
        with self._lock:
            snapshot, found = self._read(Scope(), tail=max(1, limit))
        rows = found.get("journal") or []
        return snapshot.journal_seq, [line.encode() for _, line in rows]

    # -- granting and releasing in one step ---------------------------------------------

    def _one_statement(self, query: str, request: dict[str, Any]) -> Any:
        """Run one of the one-statement functions (a grant, a release): its answer; when
        the reply was lost, what the server recorded under the request's id (None: it did
        not happen), resolved like a commit's."""
        import psycopg

        conn, backend = self._conn, self._backend
        seconds = deadline.remaining(self.options.io_timeout + self.options.lock_wait)
        self._watchdog.arm(max(seconds, 0.05))
        try:
            (cursor,) = self._batch([(query, (_json(request),))])
            return cursor.fetchone()[0]
        except (psycopg.Error, OSError) as exc:
            lost = (isinstance(exc, (psycopg.OperationalError, OSError)) or conn.closed or conn.broken
                    or self._watchdog.fired)
            self._watchdog.disarm()
            self._drop()
            if not lost or backend is None:
                raise self._translate(exc, seconds) from None
            return self._resolve(request["request"], backend, request["l"], first_line(exc))
        finally:
            self._watchdog.disarm()

    def _ready_for_one_statement(self) -> bool:
        """A one-statement path needs the ledger known to this host and nobody waiting."""
        self.memory.load()
        if self.memory.ledger_id is None:
            return False  # a ledger not seen yet: the transaction checks it
        with self._errors():
            self._connection()
        return self._ledger is not None and not self.queue_seen()

    def fast_grant(self, plan: GrantPlan) -> Allocation | None:
        """Grant in one statement (one round trip) when nobody waits, every central pool is
        registered with this host's limits (and not draining), and the ledger is the one
        this host knows; the decision is ``admit``'s arithmetic, in ``netra_rm_grant``.
        None: take the transaction (also when it does not fit: the engine then says why).
        A queue entry in the plan is left to the transaction."""
        request = plan.request
        if not whole_amounts(request.memory_mb, request.cpu_units) \
                or any(c.capacity is None or c.capacity.names for c in plan.charges):
            return None
        with self._lock:
            if not self._ready_for_one_statement():
                return None
            alloc, journal, limits, charges = self._grant_parts(plan)
            ledger = self._ledger
            assert ledger is not None  # (ready says so)
            found = self._one_statement(_GRANT, {
                "l": ledger, "name": self.name, "ledger_id": self.memory.ledger_id,
                "counter": self.memory.counter, "request": plan.request_id, **self._now(),
                "alloc": {**alloc, "id": plan.allocation_id, "request_id": plan.request_id},
                "journal": {**journal, "id": plan.allocation_id}, "limits": limits, "charges": charges,
                "memory": request.memory_mb, "cpu": request.cpu_units, "dedicated": request.dedicated,
                "duration": request.duration_minutes * 60.0, "lease": plan.lease_seconds,
                "machine_free": plan.machine_free_mb})
            if found is None:
                return None
            try:
                answer = json.loads(found) if isinstance(found, str) else {"granted": (found or [None])[0]}
                if "declined" in answer:
                    if answer["declined"] == "waiters":
                        self.see_queue(True)
                    return None
                allocation = Allocation.from_dict(answer["granted"])
            except (RecordError, ValueError, TypeError) as exc:
                raise self.error(str(exc), corrupt=True) from None
            self.memory.note(self.memory.ledger_id, allocation.fencing_token)
            self._rotate_if_long(ledger, int(answer.get("lines") or 0))
        self.memory.flush()
        return allocation

    def _grant_parts(self, plan: GrantPlan) -> tuple[dict[str, Any], dict[str, Any], Any, list[dict[str, Any]]]:
        """What ``netra_rm_grant`` is sent besides the ids: the allocation's record and its
        journal fields without what the server fills in, the limits, and each charge;
        kept (a host asks for the same requests again and again)."""
        request = plan.request
        key = (request, plan.owner, tuple((c.key, c.kind, c.central, c.slots,
                                           json.dumps(c.capacity.to_dict(), sort_keys=True)) for c in plan.charges))
        found = self._grant_cache.get(key)
        if found is not None:
            return found
        template = grant_template(request, plan.owner, plan.charges, ident="0" * 12)  # ids: sent with each grant
        alloc = {k: v for k, v in template.to_dict().items() if k not in GRANT_FILLED}
        masked = json.loads(encode_line(allocation_record(template)))
        journal = {k: v for k, v in masked.items() if k not in GRANT_FILLED}
        limits = json.loads(encode_line(limits_record({c.key: c.capacity for c in plan.charges})))
        charges = [{"key": c.key, "kind": c.kind, "instances": c.capacity.instances, "memory": c.capacity.memory_mb,
                    "cpu": c.capacity.cpu_units, "dedicated": c.capacity.dedicated, "slots": c.slots,
                    "central": c.central,  # its limits (the registry's, if it holds the pool, must be these)
                    "capacity": {k: v for k, v in c.capacity.to_dict().items() if k != "properties"}}
                   for c in plan.charges]
        if len(self._grant_cache) > 64:
            self._grant_cache.clear()
        self._grant_cache[key] = (alloc, journal, limits, charges)
        return alloc, journal, limits, charges

    def fast_release(self, ids: Sequence[str], *, events: Mapping[str, Mapping[str, Any]] | None = None
                     ) -> tuple[list[Allocation], list[str]] | None:
        """Release in one statement (one round trip) when nobody waits and the ledger is
        the one this host knows; None: take the transaction. Journaled as the transaction
        would (see ``netra_rm_release``); a lost reply is resolved by its request id, like
        a commit."""
        with self._lock:
            if not self._ready_for_one_statement():
                return None  # (someone waits: the transaction hands the room on)
            answer = self._one_statement(_RELEASE, {
                "l": self._ledger, "name": self.name, "ids": list(ids), "ledger_id": self.memory.ledger_id,
                "counter": self.memory.counter, "request": os.urandom(8).hex(), **self._now(),
                "events": {k: dict(v) for k, v in (events or {}).items()}})
            if answer is None:
                return None
            try:
                found = json.loads(answer) if isinstance(answer, str) else {"released": answer}
                if "declined" in found:  # someone waits: the engine takes a transaction
                    self.see_queue(True)
                    return None
                released = [Allocation.from_dict(doc) for doc in found["released"]]
            except RecordError as exc:
                raise self.error(str(exc), corrupt=True) from None
        gone = {a.id for a in released}
        return released, [i for i in ids if i not in gone]

    # -- waking waiters ------------------------------------------------------------------

    def waiter_channel(self, waiter_id: str) -> PostgresWakeChannel | None:
        """A ``LISTEN`` on this waiter's own channel, on its own connection; None if it
        cannot be opened (the waiter then polls, and its next transaction reports an
        outage)."""
        if not is_id(waiter_id):
            raise ValueError(f"not a waiter id: {waiter_id!r}")
        try:
            return PostgresWakeChannel(self._listeners, self.channel + waiter_id, waiter_id)
        except Exception:  # noqa: BLE001
            return None

    def notify(self, waiter_ids: Sequence[str]) -> None:
        """Wake exactly these waiters (best effort: a waiter re-checks on a timer anyway)."""
        ids = [w for w in waiter_ids if is_id(w)]
        if not ids:
            return
        try:
            with self._lock, self._errors():
                self._connection()
                self._batch([(NOTIFY, notify_params(self.channel, ids))])
        except LedgerError:
            pass


def _close_quietly(stack: ExitStack) -> None:
    try:
        stack.close()
    except Exception:  # noqa: BLE001 - a connection already closed has nothing to sync
        pass


def _json(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))
