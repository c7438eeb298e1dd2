"""The PostgreSQL ledger: ``--ledger postgresql://USER[:PASSWORD]@HOST[:PORT]/DB[?ledger=NAME]``.

The ledger is tables (see :mod:`netra_rm.ledger.postgres.schema`): a row per pool key
with its usage kept current, a row per allocation, the queue, the journal. A transaction
is a PostgreSQL transaction in two round trips:

1. *begin*, one pipeline: lock the rows of the pool keys it decides over, in key order
   (so two transactions on disjoint pools never wait on each other, and never deadlock),
   and read what the :class:`Snapshot` holds: the ledger's row, the server's clock, a
   fencing token from the ledger's sequence (taken after the row locks, so tokens only
   grow per pool), the queue, the allocations it names, those due to be reclaimed (from
   the expiry and lease indexes) and, when it sweeps, this host's (from the host index);
2. *commit*, one pipeline: every change (rows inserted, deleted or updated, usage moved
   by its deltas, journal lines numbered by the server under the ledger row's lock, the
   request id) and ``COMMIT``.

Nothing a transaction reads or writes grows with the number of active allocations.

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
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netra_rm import deadline
from netra_rm.errors import LedgerError
from netra_rm.ledger.base import EVERYTHING, Changes, Scope, Snapshot, Txn
from netra_rm.ledger.journal import checkpoint_record, encode_line
from netra_rm.ledger.postgres import schema
from netra_rm.ledger.postgres.session import BackendId, Watchdog, connect, end_backend, first_line, ms
from netra_rm.ledger.postgres.wake import NOTIFY, PostgresWakeChannel, channel_prefix, notify_params
from netra_rm.ledger.server import ServerLedger, ServerOptions
from netra_rm.records import Allocation, PoolRecord, RecordError, Usage, Waiter, is_id, token_floor

#: At most this many allocations due to be reclaimed are read per transaction.
DUE_LIMIT = 300
#: Committed request ids are kept at least this long (seconds) for clients that lost a reply.
REQUEST_MEMORY = 3600.0

_POOL = "key, memory_mb, cpu_units, instances, dedicated, taken, record"
_NOW = "extract(epoch FROM statement_timestamp())::float8"
_HELLO = ("SELECT (SELECT value FROM netra_rm_meta WHERE key = 'schema_version'), "
          "(SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()), "
          "(SELECT id FROM netra_rm_ledgers WHERE name = %s), "
          f"to_regclass('{schema.V1_DOCUMENTS}') IS NOT NULL")
_HEAD = ("SELECT l.id, l.ledger_id, l.origin, l.journal_seq, l.journal_start, "
         "extract(epoch FROM clock_timestamp())::float8, "
         "{token} FROM (SELECT 1) AS one LEFT JOIN netra_rm_ledgers AS l ON l.name = %(name)s")
_TOKEN = "nextval(('netra_rm_tokens_' || l.id)::regclass)"
_LAST_TOKEN = "coalesce(pg_sequence_last_value(('netra_rm_tokens_' || l.id)::regclass), 0)"
# the rows of the keys asked for, and of every key an allocation due to be reclaimed that
# counts against them holds (reclaiming it moves their usage too); with a sweep, also the
# keys of this host's allocations (their owner may have died). All in one statement, in
# key order: two transactions never wait on each other in a cycle.
_DUE_WHERE = f"ledger = %(l)s AND (expires_at <= {_NOW} OR lease_expires_at <= {_NOW}) AND charges && %(keys)s::text[]"
_DUE_KEYS = ("ARRAY(SELECT DISTINCT unnest(charges) FROM (SELECT charges FROM netra_rm_allocations WHERE "
             f"{_DUE_WHERE} LIMIT {DUE_LIMIT}) AS due)")
_HOST_KEYS = ("ARRAY(SELECT DISTINCT unnest(charges) FROM netra_rm_allocations WHERE ledger = %(l)s "
              "AND owner_host = %(host)s)")
_LOCK_KEYS = (f"SELECT {_POOL} FROM netra_rm_pools WHERE ledger = %(l)s AND key = ANY(%(keys)s::text[] || "
              f"{_DUE_KEYS}) ORDER BY key FOR UPDATE")
_LOCK_KEYS_AND_HOST = (f"SELECT {_POOL} FROM netra_rm_pools WHERE ledger = %(l)s AND key = ANY(%(keys)s::text[] || "
                       f"{_DUE_KEYS} || {_HOST_KEYS}) ORDER BY key FOR UPDATE")
_LOCK_ALL = f"SELECT {_POOL} FROM netra_rm_pools WHERE ledger = %(l)s ORDER BY key FOR UPDATE"
_READ_KEYS = f"SELECT {_POOL} FROM netra_rm_pools WHERE ledger = %(l)s AND key = ANY(%(keys)s::text[])"
_READ_ALL = f"SELECT {_POOL} FROM netra_rm_pools WHERE ledger = %(l)s"
_NEW_KEYS = "INSERT INTO netra_rm_pools (ledger, key) SELECT %(l)s, unnest(%(new)s::text[]) ON CONFLICT DO NOTHING"
_WAITERS = "SELECT doc FROM netra_rm_waiters WHERE ledger = %(l)s"
_NAMED = "SELECT doc FROM netra_rm_allocations WHERE ledger = %(l)s AND id = ANY(%(ids)s::text[])"
_DUE = f"SELECT doc FROM netra_rm_allocations WHERE {_DUE_WHERE} LIMIT {DUE_LIMIT}"
_HOST = "SELECT doc FROM netra_rm_allocations WHERE ledger = %(l)s AND owner_host = %(host)s"
_ALL = "SELECT doc FROM netra_rm_allocations WHERE ledger = %(l)s"
_JOURNAL = "SELECT pos, line FROM netra_rm_journal WHERE ledger = %(l)s ORDER BY pos"
_JOURNAL_TAIL = "SELECT line FROM netra_rm_journal WHERE ledger = %(l)s ORDER BY pos DESC LIMIT %(n)s"
_JOURNAL_HEAD = "SELECT id, journal_seq, journal_start, journal_generation FROM netra_rm_ledgers WHERE name = %(name)s"

_GRANT = "INSERT INTO netra_rm_allocations (ledger, id, doc) SELECT %s, d ->> 'id', d FROM unnest(%s::jsonb[]) AS d"
_REMOVE = "DELETE FROM netra_rm_allocations WHERE ledger = %s AND id = ANY(%s::text[])"
_UPDATE = ("UPDATE netra_rm_allocations AS a SET doc = d FROM unnest(%s::jsonb[]) AS d "
           "WHERE a.ledger = %s AND a.id = d ->> 'id'")
_PUT_POOLS = ("INSERT INTO netra_rm_pools (ledger, key, record) SELECT %s, r ->> 'key', r "
              "FROM unnest(%s::jsonb[]) AS r ON CONFLICT (ledger, key) DO UPDATE SET record = excluded.record")
_ADD_KEYS = "INSERT INTO netra_rm_pools (ledger, key) SELECT %s, unnest(%s::text[]) ON CONFLICT DO NOTHING"
_USAGE = (
    "UPDATE netra_rm_pools AS p SET memory_mb = p.memory_mb + u.m, cpu_units = p.cpu_units + u.c, "
    "instances = p.instances + u.i, dedicated = p.dedicated + u.d, taken = CASE WHEN u.freed = '{}' AND u.took = '{}' "
    "THEN p.taken ELSE ARRAY(SELECT s FROM unnest(p.taken) AS s WHERE s <> ALL(u.freed::integer[]) "
    "UNION SELECT unnest(u.took::integer[]) ORDER BY 1) END "
    "FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::integer[], %s::integer[], %s::text[], %s::text[]) "
    "AS u(k, m, c, i, d, freed, took) WHERE p.ledger = %s AND p.key = u.k")
_PUT_WAITERS = ("INSERT INTO netra_rm_waiters (ledger, id, doc) SELECT %s, d ->> 'id', d FROM unnest(%s::jsonb[]) AS d "
                "ON CONFLICT (ledger, id) DO UPDATE SET doc = excluded.doc")
_DROP_WAITERS = "DELETE FROM netra_rm_waiters WHERE ledger = %s AND id = ANY(%s::text[])"
_RAISE_COUNTER = ("SELECT setval(%(s)s::regclass, %(n)s) "
                  "WHERE %(n)s > coalesce(pg_sequence_last_value(%(s)s::regclass), 0)")
_IDENTITY = "UPDATE netra_rm_ledgers SET ledger_id = %s, origin = %s WHERE id = %s"
_REQUEST = ("INSERT INTO netra_rm_requests (ledger, id, committed_at) "
            "VALUES (%s, %s, extract(epoch FROM clock_timestamp())::float8)")
_FORGET_REQUESTS = ("DELETE FROM netra_rm_requests WHERE ledger = %s "
                    f"AND committed_at < extract(epoch FROM clock_timestamp())::float8 - {REQUEST_MEMORY}")
# the journal lines are numbered by the server under the ledger row's lock, held to the
# commit: their order is the order of the commits, with no gaps
_APPEND = (
    "WITH l AS (UPDATE netra_rm_ledgers SET journal_seq = journal_seq + cardinality(%(lines)s::text[]), "
    "journal_lines = journal_lines + cardinality(%(lines)s::text[]) WHERE id = %(l)s "
    "RETURNING journal_seq, journal_lines), "
    "w AS (INSERT INTO netra_rm_journal (ledger, pos, line) "
    "SELECT %(l)s, 2 * q.s, '{\"seq\":' || q.s || ',' || substr(b.body, 2) "
    "FROM l, unnest(%(lines)s::text[]) WITH ORDINALITY AS b(body, n), "
    "LATERAL (SELECT l.journal_seq - cardinality(%(lines)s::text[]) + b.n AS s) AS q) "
    "SELECT journal_seq, journal_lines FROM l")
_ASKED = "SELECT 1 FROM netra_rm_requests WHERE ledger = %s AND id = %s"


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
    keys_known: set[str] = field(default_factory=set)


class PostgresLedger(ServerLedger):
    """A ledger in a PostgreSQL database, shared by every host that reaches it."""

    backend = "PostgreSQL"

    def __init__(self, url: str, *, state_dir: Path | None = None, options: ServerOptions | None = None,
                 group_shared: bool = False) -> None:
        super().__init__(url, state_dir=state_dir, options=options, group_shared=group_shared)
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

    # -- the ledger's row ------------------------------------------------------------------

    def _create(self, *, reset: bool, reading: bool = False) -> None:
        """Create the ledger on first use, or upgrade the version-1 document that holds
        it. A ledger this host used that is gone is refused (unless ``reset``: it starts
        afresh, its tokens above any seen); a read creates nothing."""
        problem = self.fencing_problem(exists=False, ledger_id=None, origin=None, counter=0)
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
        params = {"l": ident, "keys": keys, "name": self.name, "host": scope.sweep_host, "ids": list(scope.ids)}
        statements: list[tuple[str, Any]] = [("BEGIN", None)]
        wait = deadline.remaining(self.options.lock_wait)
        if wait < self.options.lock_wait:
            statements.append((f"SET LOCAL lock_timeout = {ms(max(wait, 0.001))}", None))
        new = [k for k in keys if k not in self._keys]
        if new and not scope.everything:
            statements.append((_NEW_KEYS, {**params, "new": new}))
        if scope.everything:
            lock = _LOCK_ALL
        elif scope.sweep_host is not None:
            lock = _LOCK_KEYS_AND_HOST
        else:
            lock = _LOCK_KEYS
        first = len(statements)
        statements.append((lock, params))
        grants = bool(keys) or scope.everything
        statements.append((_HEAD.format(token=_TOKEN if grants else _LAST_TOKEN), params))
        statements.append((_WAITERS, params))
        statements += self._allocation_queries(scope, params)
        self._in_transaction = True
        cursors = self._batch(statements)
        pools = cursors[first].fetchall()
        head = cursors[first + 1].fetchone()
        waiters = cursors[first + 2].fetchall()
        documents = [row[0] for cursor in cursors[first + 3:] for row in cursor.fetchall()]
        if head[0] != ident:
            self._end()
            self._set_ledger(head[0])
            raise _Retry
        locked = {row[0] for row in pools}
        self._keys |= locked
        missing = set(keys) - locked
        if missing and not scope.everything:  # rows deleted behind our back: insert them again
            self._keys -= missing
            self._end()
            raise _Retry
        _, ledger_id, origin, journal_seq, _, now, counter = head
        snapshot = self._snapshot(now=now, counter=int(counter), pools=pools, waiters=waiters,
                                  documents=documents, scope=scope, locked=locked)
        snapshot.ledger_id, snapshot.origin, snapshot.journal_seq = ledger_id, origin, int(journal_seq)
        begun = _Begun(snapshot=snapshot, ledger=ident, token=int(counter) if grants else None, locked=locked)
        problem = self.fencing_problem(exists=True, ledger_id=ledger_id, origin=origin, counter=int(counter))
        if problem is not None:
            if not reset:
                self._end()
                raise problem
            # start afresh: a new id, and tokens above anything handed out or seen
            floor = max(token_floor(now), self.memory.counter, int(counter))
            self._batch([(_RAISE_COUNTER, {"s": schema.sequence_name(ident), "n": floor})])
            self.memory.forget()
            begun.identity = (uuid.uuid4().hex, "reset")
            begun.token = None
            snapshot.counter = floor
        return begun

    @staticmethod
    def _allocation_queries(scope: Scope, params: dict[str, Any]) -> list[tuple[str, Any]]:
        """The reads of the allocations a snapshot of ``scope`` holds: all of them, or those
        named, those due that count against any of the keys, and the sweeping host's."""
        if scope.everything:
            return [(_ALL, params)]
        out = []
        if scope.ids:
            out.append((_NAMED, params))
        if scope.keys:
            out.append((_DUE, params))
        if scope.sweep_host is not None:
            out.append((_HOST, params))
        return out

    def _token_source(self, begun: _Begun) -> Callable[[], int]:
        """Fencing tokens for this transaction: the one read with the row locks, then more
        from the ledger's sequence (one round trip each)."""
        sequence = schema.sequence_name(begun.ledger)

        def next_token() -> int:
            if begun.token is not None:
                token, begun.token = begun.token, None
                return token
            with self._errors():
                (cursor,) = self._batch([("SELECT nextval(%s::regclass)", (sequence,))])
                return int(cursor.fetchone()[0])

        return next_token

    def _snapshot(self, *, now: float, counter: int, pools: list[Any], waiters: list[Any], documents: list[Any],
                  scope: Scope, locked: set[str] | None) -> Snapshot:
        """The snapshot of what was read; ``locked``: the keys this transaction holds (due
        and host allocations that count elsewhere too are left to those who lock them)."""
        complete = scope.everything
        snapshot = Snapshot(now=float(now), counter=counter, complete=complete)
        for key, memory_mb, cpu, instances, dedicated, taken, record in pools:
            snapshot.usage[key] = Usage(int(memory_mb), int(cpu), int(instances), int(dedicated))
            if taken:
                snapshot.taken[key] = set(taken)
            if record is not None:
                snapshot.pools[key] = PoolRecord.from_dict(record)
        snapshot.waiters = [Waiter.from_dict(row[0]) for row in waiters]
        named = set(scope.ids)
        seen: dict[str, Allocation] = {}
        for doc in documents:
            ident = doc.get("id") if isinstance(doc, dict) else None
            if ident in seen:
                continue
            allocation = Allocation.from_dict(doc)
            seen[allocation.id] = allocation
        host = scope.sweep_host
        if host is not None:
            snapshot.host_allocations = [a for a in seen.values() if a.owner.host == host]
        now_f = float(now)
        for allocation in seen.values():
            if not (complete or locked is None or allocation.id in named
                    or locked.issuperset(allocation.charges)):
                continue
            snapshot.known[allocation.id] = allocation
            lease = allocation.lease_expires_at
            if allocation.expires_at <= now_f or (lease is not None and lease <= now_f):
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
        statements = self._changes(changes, begun)
        conn = self._conn
        backend = self._backend
        seconds = deadline.remaining(self.options.io_timeout)
        self._watchdog.arm(max(seconds, 0.05))
        try:
            cursors = self._batch(statements)
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
            self._resolve(changes.request_id, backend, begun.ledger, first_line(exc))
            return
        finally:
            self._watchdog.disarm()
        self._in_transaction = False
        if changes.events:
            _, lines = cursors[-2].fetchone()
            if lines >= self.options.journal_max_lines:
                try:
                    self._rotate(begun.ledger)
                except LedgerError:
                    pass  # the next commit tries again

    def _changes(self, changes: Changes, begun: _Begun) -> list[tuple[str, Any]]:
        """The statements that apply ``changes`` and commit."""
        ident = begun.ledger
        out: list[tuple[str, Any]] = []
        if changes.grants:
            out.append((_GRANT, (ident, [a.json for a in changes.grants])))
        if changes.removals:
            out.append((_REMOVE, (ident, [a.id for a in changes.removals])))
        if changes.updates:
            out.append((_UPDATE, ([a.json for a in changes.updates], ident)))
        if changes.pools:
            out.append((_PUT_POOLS, (ident, [_json(p.to_dict()) for p in changes.pools])))
        keys = sorted(set(changes.deltas) | set(changes.slots_taken) | set(changes.slots_freed))
        if keys:
            unknown = [k for k in keys if k not in begun.locked]
            if unknown:
                out.append((_ADD_KEYS, (ident, unknown)))
            deltas = [changes.deltas.get(k, Usage()) for k in keys]
            out.append((_USAGE, (keys, [d.memory_mb for d in deltas], [d.cpu_units for d in deltas],
                                 [d.instances for d in deltas], [d.dedicated for d in deltas],
                                 [schema.int_array(changes.slots_freed.get(k, ())) for k in keys],
                                 [schema.int_array(changes.slots_taken.get(k, ())) for k in keys], ident)))
        if changes.waiters_put:
            out.append((_PUT_WAITERS, (ident, [_json(w.to_dict()) for w in changes.waiters_put.values()])))
        if changes.waiters_gone:
            out.append((_DROP_WAITERS, (ident, sorted(changes.waiters_gone))))
        if changes.counter is not None and changes.counter > begun.snapshot.counter:
            out.append((_RAISE_COUNTER, {"s": schema.sequence_name(ident), "n": changes.counter}))
        if begun.identity is not None:
            out.append((_IDENTITY, (*begun.identity, ident)))
        if changes.request_id is not None:
            out.append((_REQUEST, (ident, changes.request_id)))
            if random.random() < 0.001:
                out.append((_FORGET_REQUESTS, (ident,)))
        if changes.events:
            bodies = [encode_line(e).rstrip(b"\n").decode() for e in changes.events]
            out.append((_APPEND, {"l": ident, "lines": bodies}))
        out.append(("COMMIT", None))
        return out

    def _resolve(self, request_id: str, backend: BackendId, ledger: int, why: str) -> None:
        """The connection was lost after the commit was sent: make sure the server process
        that had it is gone, then ask whether the commit happened. Returns if it did;
        raises :class:`LedgerError` saying nothing was written if not (or that nobody can
        tell, when the server cannot be reached again in time)."""
        until = time.monotonic() + deadline.remaining(max(self.options.io_timeout * 2, 10.0))
        pause = 0.02
        while True:
            try:
                with self._errors():
                    conn = self.connect()
                    try:
                        gone = end_backend(conn, backend, until=until)
                        done = gone and conn.execute(_ASKED, (ledger, request_id)).fetchone() is not None
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
        if not done:
            raise self.error(f"lost the connection while committing ({why}); the server has no record of the "
                             "commit, so nothing was written.", remediation=["Run the command again."])

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

    def _read(self, scope: Scope, *, journal: bool = False) -> tuple[Snapshot, list[Any], int]:
        """A consistent snapshot (one REPEATABLE READ transaction, one round trip) and, with
        ``journal``, every journal line (position, text) and where the current generation
        of the journal starts."""
        for _ in range(3):
            with self._errors():
                self._connection()
                known = self._ledger
                params = {"l": known if known is not None else -1, "keys": sorted(scope.keys), "name": self.name,
                          "host": scope.sweep_host, "ids": list(scope.ids)}
                statements: list[tuple[str, Any]] = [
                    ("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", None),
                    (_HEAD.format(token=_LAST_TOKEN), params),
                    (_READ_ALL if scope.everything else _READ_KEYS, params),
                    (_WAITERS, params),
                    *self._allocation_queries(scope, params)]
                if journal:
                    statements.append((_JOURNAL, params))
                statements.append(("COMMIT", None))
                cursors = self._batch(statements)
                head = cursors[1].fetchone()
                ident, ledger_id, origin, journal_seq, start, now, counter = head
                if ident != known:
                    self._set_ledger(ident)
                    if ident is not None:
                        continue  # created (or created again) meanwhile: read that one
                if ident is None and self._v1:
                    self._create(reset=False, reading=True)
                    if self._ledger is not None:
                        continue  # a version-1 ledger, upgraded: read it
                if ident is None:
                    snapshot, lines = Snapshot(now=float(now), complete=scope.everything), list[Any]()
                else:
                    lines = cursors[-2].fetchall() if journal else []
                    ends = len(cursors) - (2 if journal else 1)
                    documents = [row[0] for cursor in cursors[4:ends] for row in cursor.fetchall()]
                    snapshot = self._snapshot(now=now, counter=int(counter), pools=cursors[2].fetchall(),
                                              waiters=cursors[3].fetchall(), documents=documents, scope=scope,
                                              locked=None)
                    snapshot.ledger_id, snapshot.origin, snapshot.journal_seq = ledger_id, origin, int(journal_seq)
            problem = self.fencing_problem(exists=ident is not None, ledger_id=ledger_id, origin=origin,
                                           counter=snapshot.counter)
            if problem is not None:
                raise problem
            self.memory.note(ledger_id, snapshot.counter)
            self.memory.flush()
            return snapshot, lines, int(start or 0)
        raise self.error("kept changing while this command read it; try again.")

    def read(self, scope: Scope = EVERYTHING) -> Snapshot:
        """A consistent snapshot, without locks."""
        with self._lock:
            return self._read(scope)[0]

    def journal_lines(self) -> tuple[Snapshot, list[bytes], list[str]]:
        """Every allocation and every journal line, oldest first, read together."""
        with self._lock:
            snapshot, rows, start = self._read(EVERYTHING, journal=True)
        names = []
        if any(pos < start for pos, _ in rows):
            names.append(f"{self.location} journal (previous generation)")
        if rows:
            names.append(f"{self.location} journal")
        return snapshot, [line.encode() for _, line in rows], names

    def journal_tail(self, limit: int) -> tuple[int, list[bytes]]:
        """The committed journal sequence and the last ``limit`` lines, read from the end."""
        with self._lock, self._errors():
            self._connection()
            params = {"name": self.name, "l": self._ledger if self._ledger is not None else -1,
                      "n": max(1, limit)}
            cursors = self._batch([("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", None),
                                            (_JOURNAL_HEAD, params), (_JOURNAL_TAIL, params), ("COMMIT", None)])
            head = cursors[1].fetchone()
            if head is None:
                return 0, []
            if head[0] != self._ledger:
                self._set_ledger(head[0])
                return self.journal_tail(limit)
            lines = [row[0].encode() for row in cursors[2].fetchall()]
        lines.reverse()
        return int(head[1]), lines

    # -- waking waiters ------------------------------------------------------------------

    def waiter_channel(self, waiter_id: str) -> PostgresWakeChannel | None:
        """A ``LISTEN`` on this waiter's own channel, on its own connection; None if it
        cannot be opened (the waiter then polls, and its next transaction reports an
        outage)."""
        if not is_id(waiter_id):
            raise ValueError(f"not a waiter id: {waiter_id!r}")
        try:
            return PostgresWakeChannel(self.connect, self.channel + waiter_id, waiter_id)
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
