"""Waking waiters on a PostgreSQL ledger: ``LISTEN`` / ``NOTIFY``, one channel per waiter.

A waiter listens on a channel named after its ledger and its own id, on a connection of
its own; :func:`notify_statement` sends each chosen waiter one notification (its id as
the payload) on its channel, so a release wakes exactly the waiters the engine chose,
and no other listener is disturbed.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any

NOTIFY = "SELECT pg_notify(c, p) FROM unnest(%s::text[], %s::text[]) AS w(c, p)"


def channel_prefix(ledger_name: str) -> str:
    """What every channel of the ledger ``ledger_name`` starts with (a channel name is at
    most 63 bytes: the prefix is 17, a waiter id at most 32)."""
    return "nrm_" + hashlib.sha1(ledger_name.encode()).hexdigest()[:12] + "_"


def notify_params(prefix: str, waiter_ids: Sequence[str]) -> tuple[list[str], list[str]]:
    """The parameters of :data:`NOTIFY` for these waiters."""
    return [prefix + w for w in waiter_ids], list(waiter_ids)


class PostgresWakeChannel:
    """The receiving end of one waiter's wake-ups: ``LISTEN`` on its channel. A
    connection lost meanwhile is opened again at the next wait (the waiter re-checks on
    its timer anyway, so a wake lost with it costs at most one pause)."""

    def __init__(self, connect: Callable[[], Any], channel: str, waiter_id: str) -> None:
        self.waiter_id = waiter_id
        self.channel = channel
        self._connect = connect
        self._conn: Any = None
        self._open()

    def _open(self) -> None:
        conn = self._connect()
        try:
            conn.execute(f'LISTEN "{self.channel}"')
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def wait(self, timeout: float) -> bool:
        """Sleep until notified or ``timeout`` seconds pass; True when notified."""
        end = time.monotonic() + max(0.0, timeout)
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
        except Exception:  # noqa: BLE001 - the waiter's next transaction reports an outage
            self.close()
            left = end - time.monotonic()
            if left > 0:
                time.sleep(min(left, 0.05))
            return False

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> PostgresWakeChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
