"""The PostgreSQL ledger: ``--ledger postgresql://USER[:PASSWORD]@HOST[:PORT]/DB[?ledger=NAME]``.

One row per ledger in ``netra_rm_ledger`` holds the whole document as JSONB, under a
version number; its journal lines live in ``netra_rm_journal``. A transaction is a
PostgreSQL transaction that selects the row ``FOR UPDATE`` (PostgreSQL's lock manager
queues the other processes on the row lock), lets the engine change the state, and
updates the row and inserts the journal lines before it commits: all or nothing, in two
round trips (pipelined).

Bounds: a connect timeout; ``lock_timeout`` for the wait on the row lock;
``statement_timeout`` for every statement; ``idle_in_transaction_session_timeout``, so a
process that stops while it holds the row lock (SIGSTOP, a hung VM) is disconnected by
the server and its transaction rolled back, which frees the lock for the others; TCP
keepalives and ``tcp_user_timeout`` for a server that vanished.

netra-rm creates its tables on first use (under an advisory lock, so concurrent first
uses agree) and records their schema version in ``netra_rm_meta``; a newer schema than
this netra-rm knows is refused, older ones are upgraded step by step. psycopg is
imported only when a PostgreSQL ledger is opened.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from netra_rm.errors import LedgerError
from netra_rm.ledger.remote import RemoteLedger, ServerOptions, Snapshot

#: The version of the tables below; bump it and add a step to ``_UPGRADES`` to change them.
TABLES_VERSION = 1

_CREATE = """
CREATE TABLE IF NOT EXISTS netra_rm_meta (
    key text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE IF NOT EXISTS netra_rm_ledger (
    name text PRIMARY KEY,
    version bigint NOT NULL DEFAULT 0,
    doc jsonb,
    ledger_id text,
    origin text,
    journal_generation integer NOT NULL DEFAULT 0,
    journal_lines integer NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS netra_rm_journal (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    generation integer NOT NULL,
    line text NOT NULL
);
CREATE INDEX IF NOT EXISTS netra_rm_journal_by_ledger ON netra_rm_journal (name, generation, id);
"""

#: Steps from one tables version to the next: ``{from_version: sql}``.
_UPGRADES: dict[int, str] = {}

_SCHEMA_LOCK = 0x6E6574726172 % (2**31)  # an advisory lock id for creating the tables

_SELECT_FOR_UPDATE = (
    "SELECT version, ledger_id, origin, journal_generation, journal_lines, "
    "CASE WHEN version = %s THEN NULL ELSE doc::text END FROM netra_rm_ledger WHERE name = %s FOR UPDATE")


class PostgresLedger(RemoteLedger):
    """A ledger in a PostgreSQL database, shared by every host that reaches it."""

    backend = "PostgreSQL"

    def __init__(self, url: str, *, state_dir: Path | None = None, options: ServerOptions | None = None) -> None:
        super().__init__(url, state_dir=state_dir, options=options)
        self._conn: Any = None
        self._generation = 0
        self._in_transaction = False
        self.channel = "netra_rm_" + hashlib.sha1(self.name.encode()).hexdigest()[:16]
        self._watchdog = _Watchdog(lambda: self._conn)

    # -- connections and errors ----------------------------------------------------------

    def connect(self, *, autocommit: bool = True) -> Any:
        """A new connection with every bound set (see the module docstring)."""
        import psycopg

        o = self.options
        ms = lambda seconds: str(max(1, int(seconds * 1000)))  # noqa: E731
        server_options = (f"-c statement_timeout={ms(o.io_timeout + o.lock_wait)} -c lock_timeout={ms(o.lock_wait)} "
                          f"-c idle_in_transaction_session_timeout={ms(o.lock_ttl)}")
        return psycopg.connect(self.server_url, autocommit=autocommit, connect_timeout=max(2, round(o.connect_timeout)),
                               options=server_options, keepalives=1, keepalives_idle=5, keepalives_interval=2,
                               keepalives_count=3, tcp_user_timeout=ms(o.io_timeout),
                               application_name="netra-rm")

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            self._conn = self.connect()
            self._ensure_tables(self._conn)
        return self._conn

    def _ensure_tables(self, conn: Any) -> None:
        """Create the tables on first use, upgrade older ones, refuse newer ones."""
        import psycopg

        try:
            row = conn.execute("SELECT value FROM netra_rm_meta WHERE key = 'schema_version'").fetchone()
        except psycopg.errors.UndefinedTable:
            row = None
        if row is not None and int(row[0]) == TABLES_VERSION:
            return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            conn.execute(_CREATE)
            row = conn.execute("SELECT value FROM netra_rm_meta WHERE key = 'schema_version'").fetchone()
            found = int(row[0]) if row is not None else None
            if found is None:
                conn.execute("INSERT INTO netra_rm_meta (key, value) VALUES ('schema_version', %s)",
                             (str(TABLES_VERSION),))
            elif found > TABLES_VERSION:
                raise LedgerError(f"the PostgreSQL ledger at {self.location} was set up by a newer netra-rm (tables "
                                  f"version {found}, this one knows up to {TABLES_VERSION}).",
                                  remediation=["Upgrade netra-rm on this host."])
            else:
                for version in range(found, TABLES_VERSION):
                    conn.execute(_UPGRADES[version])
                conn.execute("UPDATE netra_rm_meta SET value = %s WHERE key = 'schema_version'",
                             (str(TABLES_VERSION),))

    @contextmanager
    def _errors(self, *, waits_for_lock: bool = False) -> Iterator[None]:
        """Turn every psycopg error into a :class:`LedgerError` naming this ledger, and
        bound the calls inside: past the reply timeout (plus the lock wait, when they
        wait for the row lock) the connection is cut, even if the server hangs."""
        import psycopg

        seconds = self.options.io_timeout + (self.options.lock_wait if waits_for_lock else 0.0)
        self._watchdog.arm(seconds)
        try:
            yield
        except LedgerError:
            raise
        except psycopg.errors.LockNotAvailable:
            self._drop()
            raise self.error(f"is busy: its row lock was held by others for {self.options.lock_wait:g}s.",
                             remediation=["Try again; if it persists, look for a stuck netra-rm process "
                                          "(pg_stat_activity shows who holds the lock)."]) from None
        except psycopg.errors.QueryCanceled:
            self._drop()
            raise self.error("did not answer in time; this command changed nothing.",
                             remediation=self._reach_steps()) from None
        except psycopg.errors.InsufficientPrivilege as exc:
            self._drop()
            raise self.error(f"refused: {_first_line(exc)}.",
                             remediation=["Grant the user CREATE on the database (netra-rm creates its tables "
                                          "there on first use), or create them as another user."]) from None
        except psycopg.OperationalError as exc:
            self._drop()
            if self._watchdog.fired:
                raise self.error(f"did not answer within {seconds:g}s; this command changed nothing.",
                                 remediation=self._reach_steps()) from None
            text = _first_line(exc)
            if "password authentication failed" in text or "no password supplied" in text:
                raise self.error(f"refused the credentials: {text}.",
                                 remediation=["Check the user and password in the ledger URL."]) from None
            raise self.error(f"cannot be reached: {text}.", remediation=self._reach_steps()) from None
        except psycopg.Error as exc:
            self._drop()
            if self._watchdog.fired:
                raise self.error(f"did not answer within {seconds:g}s; this command changed nothing.",
                                 remediation=self._reach_steps()) from None
            raise self.error(f"failed: {exc.__class__.__name__}: {_first_line(exc)}.",
                             remediation=self._reach_steps()) from None
        except OSError as exc:
            self._drop()
            raise self.error(f"cannot be reached: {exc.strerror or exc}.", remediation=self._reach_steps()) from None
        finally:
            self._watchdog.disarm()

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

    def close(self) -> None:
        self._drop()

    # -- the backend's part --------------------------------------------------------------

    def _begin(self, cached_version: int) -> Snapshot:
        import psycopg

        with self._errors(waits_for_lock=True):
            reused = self._conn is not None and not self._conn.closed
            try:
                row = self._lock_row(cached_version)
            except psycopg.OperationalError:
                if not reused or self._watchdog.fired or (self._conn is not None and not self._conn.closed):
                    raise
                # the connection died while idle (a server restart): once more on a new one
                self._drop()
                row = self._lock_row(cached_version)
        version, ledger_id, origin, generation, journal_lines, doc = row
        self._generation = generation
        return Snapshot(version=version, ledger_id=ledger_id, origin=origin, journal_length=journal_lines,
                        doc=doc.encode() if doc is not None else None)

    def _lock_row(self, cached_version: int) -> Any:
        conn = self._connection()
        conn.execute("BEGIN")
        self._in_transaction = True
        row = conn.execute(_SELECT_FOR_UPDATE, (cached_version, self.name)).fetchone()
        if row is None:  # a new ledger: its row, then its lock
            conn.execute("INSERT INTO netra_rm_ledger (name) VALUES (%s) ON CONFLICT (name) DO NOTHING",
                         (self.name,))
            row = conn.execute(_SELECT_FOR_UPDATE, (cached_version, self.name)).fetchone()
        return row

    def _commit(self, snapshot: Snapshot, doc: bytes, meta: dict[str, str], lines: list[bytes],
                rotate: bool) -> int:
        generation = self._generation + 1 if rotate else self._generation
        count = (0 if rotate else snapshot.journal_length) + len(lines)
        with self._errors():
            conn = self._conn
            with conn.pipeline():
                cur = conn.execute(
                    "UPDATE netra_rm_ledger SET version = version + 1, doc = %s::jsonb, ledger_id = %s, origin = %s, "
                    "journal_generation = %s, journal_lines = %s, updated_at = now() WHERE name = %s "
                    "RETURNING version", (doc.decode(), meta["id"], meta["origin"], generation, count, self.name))
                if lines:
                    conn.execute("INSERT INTO netra_rm_journal (name, generation, line) "
                                 "SELECT %s, %s, unnest(%s::text[])",
                                 (self.name, generation, [line.decode() for line in lines]))
                if rotate:  # keep this generation and the one before, as the file keeps journal.1
                    conn.execute("DELETE FROM netra_rm_journal WHERE name = %s AND generation < %s",
                                 (self.name, generation - 1))
                conn.execute("COMMIT")
            self._in_transaction = False
            row = cur.fetchone()
        return int(row[0])

    def _release(self) -> None:
        with self._errors():
            self._conn.execute("ROLLBACK")
            self._in_transaction = False

    def _abort(self) -> None:
        if not self._in_transaction or self._conn is None:
            return
        try:
            self._conn.execute("ROLLBACK")
            self._in_transaction = False
        except Exception:  # noqa: BLE001 - the server rolls back a broken connection's transaction
            self._drop()

    def _snapshot(self, cached_version: int) -> Snapshot:
        with self._errors():
            row = self._connection().execute(
                "SELECT version, ledger_id, origin, journal_lines, CASE WHEN version = %s THEN NULL ELSE doc::text "
                "END FROM netra_rm_ledger WHERE name = %s", (cached_version, self.name)).fetchone()
        if row is None:
            return Snapshot(version=0, ledger_id=None, origin=None, doc=None)
        version, ledger_id, origin, journal_lines, doc = row
        return Snapshot(version=version, ledger_id=ledger_id, origin=origin, journal_length=journal_lines,
                        doc=doc.encode() if doc is not None else None)

    def _journal(self) -> tuple[Snapshot, list[bytes], list[str]]:
        with self._errors():
            conn = self._connection()
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                row = conn.execute("SELECT version, ledger_id, origin, doc::text FROM netra_rm_ledger WHERE name = %s",
                                   (self.name,)).fetchone()
                rows = conn.execute("SELECT generation, line FROM netra_rm_journal WHERE name = %s "
                                    "ORDER BY generation, id", (self.name,)).fetchall()
            finally:
                conn.execute("ROLLBACK")
        snapshot = (Snapshot(version=0, ledger_id=None, origin=None, doc=None) if row is None else
                    Snapshot(version=row[0], ledger_id=row[1], origin=row[2],
                             doc=row[3].encode() if row[3] is not None else None))
        generations = sorted({g for g, _ in rows})
        names = [f"{self.location} journal generation {g}" for g in generations]
        return snapshot, [line.encode() for _, line in rows], names

    # -- waking waiters ------------------------------------------------------------------

    def waiter_channel(self, waiter_id: str) -> PostgresWakeChannel | None:
        """A LISTEN on this ledger's channel, on its own connection; None if it cannot
        be opened (the waiter then polls, and its next transaction reports an outage)."""
        try:
            return PostgresWakeChannel(self, waiter_id)
        except Exception:  # noqa: BLE001
            return None

    def notify(self, waiter_ids: list[str]) -> None:
        """Wake these waiters (best effort: a waiter re-checks on a timer anyway)."""
        try:
            with self._lock:
                conn = self._connection()
                with conn.pipeline():
                    for waiter_id in waiter_ids:
                        conn.execute("SELECT pg_notify(%s, %s)", (self.channel, waiter_id))
        except Exception:  # noqa: BLE001
            self._drop()


class PostgresWakeChannel:
    """The receiving end of one waiter's wake-ups: ``LISTEN`` on the ledger's channel,
    keeping the notifications whose payload is this waiter's id."""

    def __init__(self, ledger: PostgresLedger, waiter_id: str) -> None:
        self.waiter_id = waiter_id
        self._conn = ledger.connect()
        self._conn.execute(f'LISTEN "{ledger.channel}"')

    def wait(self, timeout: float) -> bool:
        """Sleep until notified or ``timeout`` seconds pass; True when notified."""
        import time

        deadline = time.monotonic() + max(0.0, timeout)
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                for note in self._conn.notifies(timeout=left, stop_after=1):
                    if note.payload == self.waiter_id:
                        return True
        except Exception:  # noqa: BLE001 - the waiter's next transaction reports an outage
            return False

    def close(self) -> None:
        try:
            self._conn.close()
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> PostgresWakeChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Watchdog:
    """Cuts a connection whose call outlived its deadline. libpq waits for a reply as long
    as the TCP connection lives, and a hung server (stopped, swapping) keeps it alive;
    shutting the socket down makes the waiting call fail at once. One daemon thread per
    ledger, started on first use, asleep between calls."""

    def __init__(self, connection: Callable[[], Any]) -> None:
        self._connection = connection
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._thread: threading.Thread | None = None
        self.fired = False

    def arm(self, seconds: float) -> None:
        with self._cond:
            self.fired = False
            self._deadline = time.monotonic() + seconds
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="netra-rm-pg-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._deadline = None

    def _run(self) -> None:
        with self._cond:
            while True:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                self._deadline = None
                self.fired = True
                self._cut()

    def _cut(self) -> None:
        conn = self._connection()
        try:
            fd = os.dup(conn.fileno())
        except Exception:  # noqa: BLE001 - no connection (yet): nothing to cut
            return
        sock = socket.socket(fileno=fd)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            sock.close()  # closes our duplicate only; the shutdown reached the connection


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].rstrip(".") if text else exc.__class__.__name__
