"""Sampling in a daemon thread with a bounded history: what backs
``create_resource_manager(enable_monitoring=True)``."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

from netra_rm.monitor.sampler import Sampler, SystemSample

__all__ = ["MonitorThread"]


class MonitorThread:
    """Takes a :class:`SystemSample` every ``interval`` seconds until :meth:`stop`.

    The first sample is taken ``first_after`` seconds after :meth:`start` (half a second,
    or the interval if that is shorter), so that a caller soon has figures over a real
    interval; until then :meth:`latest` is ``None`` (:meth:`wait_for_sample` waits for
    it). ``on_sample`` is called in the monitoring thread after each sample (to feed an
    :class:`~netra_rm.monitor.thresholds.AlertTracker`, say); an exception from it or
    from the sampler is kept in :attr:`last_error` and sampling goes on.
    """

    def __init__(
        self,
        *,
        interval: float = 2.0,
        history_size: int = 300,
        sampler: Sampler | None = None,
        on_sample: Callable[[SystemSample], None] | None = None,
        name: str = "netra-rm-monitor",
        first_after: float = 0.5,
    ) -> None:
        if not interval > 0:
            msg = f"interval must be a positive number of seconds, not {interval!r}"
            raise ValueError(msg)
        if history_size < 1:
            msg = f"history_size must be 1 or more, not {history_size!r}"
            raise ValueError(msg)
        self.interval = float(interval)
        self.first_after = min(self.interval, max(0.0, float(first_after)))
        self._sampler = sampler
        self._on_sample = on_sample
        self._history: deque[SystemSample] = deque(maxlen=history_size)
        self._lock = threading.Lock()
        self._new_sample = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.last_error: BaseException | None = None

    def start(self) -> MonitorThread:
        """Start sampling (once); returns ``self`` for chaining."""
        if self._sampler is None:  # primes the CPU counters now, not at the first tick
            self._sampler = Sampler()
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        """Ask the thread to end and wait up to ``timeout`` seconds; safe to call twice."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the thread is sampling."""
        return self._thread.is_alive() and not self._stop.is_set()

    def latest(self) -> SystemSample | None:
        """The newest sample, or ``None`` before the first."""
        with self._lock:
            return self._history[-1] if self._history else None

    def history(self) -> list[SystemSample]:
        """The kept samples, oldest first (at most ``history_size``)."""
        with self._lock:
            return list(self._history)

    def wait_for_sample(self, timeout: float) -> SystemSample | None:
        """The newest sample, waiting up to ``timeout`` seconds for the first one."""
        with self._new_sample:
            self._new_sample.wait_for(lambda: bool(self._history) or self._stop.is_set(), timeout)
            return self._history[-1] if self._history else None

    def __enter__(self) -> MonitorThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        sampler = self._sampler
        assert sampler is not None
        deadline = time.monotonic() + self.first_after
        while not self._stop.wait(max(0.0, deadline - time.monotonic())):
            deadline += self.interval
            now = time.monotonic()
            if deadline <= now:  # fell behind (suspended, overloaded): skip, don't burst
                deadline = now + self.interval
            try:
                sample = sampler.sample()
            except Exception as exc:  # noqa: BLE001 - a failed read must not end monitoring
                self.last_error = exc
                continue
            with self._new_sample:
                self._history.append(sample)
                self._new_sample.notify_all()
            if self._on_sample is not None:
                try:
                    self._on_sample(sample)
                except Exception as exc:  # noqa: BLE001 - a failing callback must not end monitoring
                    self.last_error = exc
        with self._new_sample:  # wake anyone in wait_for_sample
            self._new_sample.notify_all()
