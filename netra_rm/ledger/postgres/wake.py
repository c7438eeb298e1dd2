"""Waking waiters on a PostgreSQL ledger: ``LISTEN`` / ``NOTIFY``, one channel per waiter.

A waiter listens on a channel named after its ledger and its own id, on a connection of
its own; :data:`NOTIFY` sends each chosen waiter one notification on its channel (its
id as the payload, or the record of the allocation the commit handed to it, which the
waiter then need not read), so a release wakes exactly the waiters the engine chose, and
no other listener is disturbed.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from netra_rm.ledger.base import handed_in
from netra_rm.records import Allocation

NOTIFY = "SELECT pg_notify(c, p) FROM unnest(%s::text[], %s::text[]) AS w(c, p)"
#: A payload is at most 8000 bytes: an allocation handed to a waiter is sent in it up to this
NOTIFY_PAYLOAD_LIMIT = 7000


def channel_prefix(ledger_name: str) -> str:
    """What every channel of the ledger ``ledger_name`` starts with (a channel name is at
    most 63 bytes: the prefix is 17, a waiter id at most 32)."""
    return "nrm_" + hashlib.sha1(ledger_name.encode()).hexdigest()[:12] + "_"


def notify_params(prefix: str, waiter_ids: Sequence[str], payloads: Sequence[str] | None = None
                  ) -> tuple[list[str], list[str]]:
    """The parameters of :data:`NOTIFY` for these waiters: each one's id, or what the
    wake carries for it (see :func:`netra_rm.ledger.base.wake_payloads`)."""
    return [prefix + w for w in waiter_ids], list(payloads if payloads is not None else waiter_ids)


class Listeners:
    """Idle connections for waiters to listen on, kept for the next wait of this process
    (a connection costs a login, and a process that waits again soon should not pay it
    while the one it released to is taking its turn). A connection given back still
    listens on its last channel until it is taken again: stopping costs a round trip that
    a waiter granted its turn should not wait for, and a stray notification is ignored
    (each channel checks what it hears)."""

    def __init__(self, connect: Callable[[], Any], *, keep: int = 2) -> None:
        self._connect = connect
        self._idle: list[Any] = []
        self._keep = keep
        self._lock = threading.Lock()

    def take(self, channel: str) -> Any:
        """A connection listening on ``channel`` (and on nothing else)."""
        conn = None
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    break
                conn = None
        if conn is None:
            conn = self._connect()
        try:
            conn.execute(f'UNLISTEN *; LISTEN "{channel}"')  # one round trip
        except BaseException:
            _close(conn)
            raise
        return conn

    def give_back(self, conn: Any) -> None:
        if conn.closed:
            return
        with self._lock:
            if len(self._idle) < self._keep:
                self._idle.append(conn)
                return
        _close(conn)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            _close(conn)


class PostgresWakeChannel:
    """The receiving end of one waiter's wake-ups: ``LISTEN`` on its channel. A
    connection lost meanwhile is opened again at the next wait (the waiter re-checks on
    its timer anyway, so a wake lost with it costs at most one pause)."""

    def __init__(self, listeners: Listeners, channel: str, waiter_id: str) -> None:
        self.waiter_id = waiter_id
        self.channel = channel
        self._listeners = listeners
        #: the allocation the last wake-up carried (handed to this waiter), if any
        self.handed: Allocation | None = None
        self._conn: Any = None
        self._open()

    def _open(self) -> None:
        self._conn = self._listeners.take(self.channel)

    def wait(self, timeout: float) -> bool:
        """Sleep until notified or ``timeout`` seconds pass; True when notified."""
        end = time.monotonic() + max(0.0, timeout)
        self.handed = None
        try:
            if self._conn is None or self._conn.closed:
                self._open()  # wakes missed meanwhile are covered by the waiter's timer
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                for note in self._conn.notifies(timeout=left, stop_after=1):
                    if note.payload == self.waiter_id:
                        return True
                    self.handed = handed_in(note.payload, self.waiter_id)
                    if self.handed is not None:
                        return True
        except Exception:  # noqa: BLE001 - the waiter's next transaction reports an outage
            conn, self._conn = self._conn, None
            if conn is not None:
                _close(conn)
            left = end - time.monotonic()
            if left > 0:
                time.sleep(min(left, 0.05))
            return False

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._listeners.give_back(conn)

    def __enter__(self) -> PostgresWakeChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001
        pass
