"""One connection to the PostgreSQL server, with every wait bounded.

Bounds: a connect timeout; ``lock_timeout`` for the wait on row locks;
``statement_timeout`` for every statement; ``idle_in_transaction_session_timeout``, so a
process that stops while it holds row locks (SIGSTOP, a hung VM) is disconnected by the
server and its transaction rolled back, which frees the locks for the others; TCP
keepalives and ``tcp_user_timeout`` for a server that vanished; and a watchdog that cuts
the connection when a reply is late (a hung server keeps TCP alive). A command's
``--timeout`` shortens each of them (:mod:`netra_rm.deadline`).

Each connection remembers the server process serving it (its pid and start time), so
that after the connection was lost the client can make sure that process is gone before
it asks what happened to its last commit (see :func:`end_backend`).
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from netra_rm import deadline
from netra_rm.ledger.server import ServerOptions

APPLICATION_NAME = "netra-rm"


@dataclass(frozen=True)
class BackendId:
    """The server process behind a connection: its pid, and when it started (a pid can
    be reused by another session once the process is gone)."""

    pid: int
    started: Any


def ms(seconds: float) -> str:
    return str(max(1, int(seconds * 1000)))


def connect(url: str, options: ServerOptions, *, autocommit: bool = True) -> Any:
    """A new connection with every bound set (see the module docstring)."""
    import psycopg

    o = options
    left = deadline.remaining(o.connect_timeout)
    server_options = (f"-c statement_timeout={ms(o.io_timeout + o.lock_wait)} -c lock_timeout={ms(o.lock_wait)} "
                      f"-c idle_in_transaction_session_timeout={ms(o.lock_ttl)}")

    def attempt() -> Any:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=max(2, math.ceil(left)),
                               options=server_options, keepalives=1, keepalives_idle=5, keepalives_interval=2,
                               keepalives_count=3, tcp_user_timeout=ms(o.io_timeout),
                               application_name=APPLICATION_NAME)

    if left >= 2:
        return attempt()
    return _within(attempt, left)  # libpq waits 2 s at least: the command's deadline is nearer


def _within(attempt: Callable[[], Any], seconds: float) -> Any:
    """``attempt()`` (a connect) given at most ``seconds``; a connection that comes later
    is closed by the helper thread that made it."""
    import psycopg

    done = threading.Event()
    lock = threading.Lock()
    state: dict[str, Any] = {"abandoned": False}

    def run() -> None:
        try:
            conn = attempt()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            state["error"] = exc
            done.set()
            return
        with lock:
            if state["abandoned"]:
                conn.close()
                return
            state["conn"] = conn
        done.set()

    threading.Thread(target=run, name="netra-rm-pg-connect", daemon=True).start()
    done.wait(max(0.0, seconds))
    with lock:
        if "conn" in state:
            return state["conn"]
        if "error" in state:
            raise state["error"]
        state["abandoned"] = True
    raise psycopg.errors.ConnectionTimeout("connection timeout expired")


def end_backend(conn: Any, backend: BackendId, *, until: float) -> bool:
    """Terminate the server process ``backend`` (a connection of ours that was lost) and
    wait until it is gone, at most until the monotonic time ``until``; True once gone.
    Only that very process is signalled: a pid taken over by another session is left
    alone."""
    query = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = %s AND backend_start = %s"
    conn.execute(query, (backend.pid, backend.started))
    pause = 0.002
    while True:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND backend_start = %s",
                           (backend.pid, backend.started)).fetchone()
        if row[0] == 0:
            return True
        if time.monotonic() >= until:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
        conn.execute(query, (backend.pid, backend.started))


class Watchdog:
    """Cuts a connection whose call outlived its deadline. libpq waits for a reply as long
    as the TCP connection lives, and a hung server (stopped, swapping) keeps it alive;
    shutting the socket down makes the waiting call fail at once. Every watchdog of the
    process shares one daemon thread, asleep while nothing is armed, which holds no
    reference to a disarmed watchdog (a ledger that is dropped is freed)."""

    def __init__(self, connection: Callable[[], Any]) -> None:
        self._connection = connection
        self.fired = False

    def arm(self, seconds: float) -> None:
        self.fired = False
        _TIMERS.arm(self, time.monotonic() + seconds)

    def disarm(self) -> None:
        _TIMERS.disarm(self)

    def fire(self) -> None:
        self.fired = True
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


class _Timers:
    """The deadlines of the armed watchdogs, and the one thread that fires them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: dict[int, tuple[float, weakref.ref[Watchdog]]] = {}
        self._thread: threading.Thread | None = None

    def arm(self, watchdog: Watchdog, at: float) -> None:
        with self._cond:
            self._armed[id(watchdog)] = (at, weakref.ref(watchdog))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="netra-rm-pg-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()

    def disarm(self, watchdog: Watchdog) -> None:
        with self._cond:
            self._armed.pop(id(watchdog), None)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._armed:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                key, (at, ref) = min(self._armed.items(), key=lambda item: item[1][0])
                if at > now:
                    self._cond.wait(at - now)
                    continue
                del self._armed[key]
            watchdog = ref()
            if watchdog is not None:
                watchdog.fire()


_TIMERS = _Timers()


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].rstrip(".") if text else exc.__class__.__name__
