"""The monitor's main loop: one snapshot per tick, shown live or printed as NDJSON.

The loop only paces and prints. Each tick calls ``get_snapshot`` (which should be cheap:
one sample, one ledger read); services are checked by a :class:`ServicesPoller` in a
daemon thread on their own, slower cadence, and their latest result is folded into each
snapshot, so a slow or hanging check never delays the view.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, Callable, Mapping, Sequence, TextIO

from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text

from netra_rm.monitor.snapshot import MonitorSnapshot, snapshot_to_ndjson_dict
from netra_rm.monitor.view import build_view

__all__ = ["ServicesPoller", "run_monitor"]

ServicesProvider = Callable[[], Sequence[Mapping[str, Any]]]


class ServicesPoller:
    """Calls ``provider`` in a daemon thread, at once and then every ``interval`` seconds
    after the previous call ended, and keeps the latest result.

    A provider that raises keeps the previous services and records the error as a
    sentence; :meth:`stop` does not wait for a check that is still running.
    """

    def __init__(
        self,
        provider: ServicesProvider,
        *,
        interval: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not interval > 0:
            msg = f"services interval must be a positive number of seconds, not {interval!r}"
            raise ValueError(msg)
        self._provider = provider
        self.interval = float(interval)
        self._clock = clock
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._services: tuple[Mapping[str, Any], ...] = ()
        self._checked_at: float | None = None
        self._error: str | None = None
        self._thread = threading.Thread(target=self._run, name="netra-rm-services", daemon=True)

    def start(self) -> ServicesPoller:
        """Start checking; returns ``self``."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the thread to end after its current check."""
        self._stop.set()

    def latest(self) -> tuple[tuple[Mapping[str, Any], ...], float | None, str | None]:
        """``(services, checked_at, error)``: the last good result, when it was taken
        (unix seconds, ``None`` before the first), and why the latest check failed."""
        with self._lock:
            return self._services, self._checked_at, self._error

    def fold_into(self, snapshot: MonitorSnapshot) -> MonitorSnapshot:
        """``snapshot`` with the latest services in it."""
        services, checked_at, error = self.latest()
        return dataclasses.replace(
            snapshot, services=services, services_checked_at=checked_at, services_error=error
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                services = tuple(self._provider())
            except Exception as exc:  # noqa: BLE001 - the view shows it and goes on
                with self._lock:
                    self._error = str(exc) or type(exc).__name__
            else:
                with self._lock:
                    self._services, self._checked_at, self._error = services, self._clock(), None
            self._stop.wait(self.interval)


class _Resized(Exception):
    """The terminal changed size while the loop waited."""


class _ResizeWaker:
    """Turns SIGWINCH into :class:`_Resized` raised in the loop's wait (and only there),
    so a resized terminal is redrawn at once, without polling."""

    def __init__(self) -> None:
        self._waiting = False
        self._pending = False

    @contextmanager
    def listening(self, *, enabled: bool) -> Iterator[None]:
        sigwinch = getattr(signal, "SIGWINCH", None)
        if not enabled or sigwinch is None or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(sigwinch, self._on_resize)
        try:
            yield
        finally:
            signal.signal(sigwinch, previous)

    @contextmanager
    def waking(self) -> Iterator[None]:
        if self._pending:
            self._pending = False
            raise _Resized
        self._waiting = True
        try:
            yield
        finally:
            self._waiting = False

    def _on_resize(self, signum: int, frame: FrameType | None) -> None:
        if self._waiting:
            self._waiting = False
            raise _Resized
        self._pending = True


def run_monitor(
    get_snapshot: Callable[[], MonitorSnapshot],
    *,
    interval: float = 2.0,
    count: int | None = None,
    json_lines: bool = False,
    out: TextIO | None = None,
    console: Console | None = None,
    services_provider: ServicesProvider | None = None,
    services_interval: float = 10.0,
    render: Callable[[MonitorSnapshot], RenderableType] = build_view,
    stop: threading.Event | None = None,
) -> int:
    """Show a snapshot every ``interval`` seconds until ``count`` snapshots, Ctrl-C or
    ``stop`` is set; returns how many were shown.

    With ``json_lines`` each snapshot is one compact JSON object on its own line of
    ``out`` (default stdout), flushed at once; otherwise a Rich ``Live`` view on
    ``console`` is redrawn once per snapshot (no refresh thread). The first snapshot
    comes one interval after the start, so that it covers a whole interval. Ctrl-C
    (``KeyboardInterrupt``) and a closed pipe end the loop normally. The CLI enforces
    its own floor on ``interval``; this function takes any positive value.
    """
    if not interval > 0:
        msg = f"interval must be a positive number of seconds, not {interval!r}"
        raise ValueError(msg)
    if count is not None and count < 1:
        msg = f"count must be 1 or more, not {count!r}"
        raise ValueError(msg)
    stop_event = stop if stop is not None else threading.Event()
    poller = ServicesPoller(services_provider, interval=services_interval).start() if services_provider else None

    resize = _ResizeWaker()

    def ticks() -> Any:
        """Yield a snapshot per tick, paced against a monotonic deadline; when the terminal
        is resized meanwhile, the last snapshot again (redrawn for the new size)."""
        shown = 0
        last: MonitorSnapshot | None = None
        deadline = time.monotonic() + interval
        while count is None or shown < count:
            try:
                with resize.waking():
                    stopped = stop_event.wait(max(0.0, deadline - time.monotonic()))
            except _Resized:
                if last is not None:
                    yield last
                continue
            if stopped:
                return
            deadline += interval
            now = time.monotonic()
            if deadline <= now:  # fell behind (suspended, slow ledger): skip, don't burst
                deadline = now + interval
            snapshot = get_snapshot()
            last = poller.fold_into(snapshot) if poller is not None else snapshot
            yield last
            shown += 1

    shown = 0
    try:
        if json_lines:
            stream = out if out is not None else sys.stdout
            for snapshot in ticks():
                stream.write(json.dumps(snapshot_to_ndjson_dict(snapshot), separators=(",", ":")) + "\n")
                stream.flush()
                shown += 1
                if getattr(stream, "broken", False):  # the reader went away (cli.streams.ClosedOutput)
                    break
        else:
            view_console = console if console is not None else Console(file=out)
            waiting = Text(f"netra-rm monitor: first sample in {interval:g}s ...", style="dim")
            # Until stopped, on a terminal: the whole screen, redrawn (and re-laid out) at
            # each sample and each resize, the terminal as it was afterwards. With --count,
            # in place, so the last view stays on the screen.
            full_screen = count is None and view_console.is_terminal
            with resize.listening(enabled=view_console.is_terminal), \
                    Live(waiting, console=view_console, auto_refresh=False, transient=False,
                         screen=full_screen) as live:
                for snapshot in ticks():
                    live.update(render(snapshot), refresh=True)
                    shown += 1
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # e.g. `netra-rm monitor --json | head -3`
        pass
    finally:
        if poller is not None:
            poller.stop()
    return shown
