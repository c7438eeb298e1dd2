"""Is the process that owns an allocation still alive, and still the same process?

A pid alone is not enough: pids are reused. We pair it with the process start time,
read from ``/proc`` on Linux (cheap, through :mod:`netra_rm.procfs`) and from psutil
elsewhere.
"""

from __future__ import annotations

import os
import select
from functools import lru_cache

from netra_rm import procfs


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state letter, start token) from /proc/PID/stat; None if there is no such process."""
    if not procfs.HAS_PROC:
        raise OSError("no /proc on this host")
    found = procfs.process_stat(pid)
    return None if found is None else (found.state, f"linux:{found.start_ticks}")


def start_token(pid: int) -> str | None:
    """An opaque token that changes when ``pid`` is reused; None if no such process."""
    try:
        found = _proc_stat(pid)
    except (OSError, IndexError, ValueError):
        return _psutil_token(pid)
    return found[1] if found else None


def _psutil_token(pid: int) -> str | None:
    import psutil

    try:
        return f"psutil:{psutil.Process(pid).create_time():.3f}"
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return "unknown"


def is_alive(pid: int, start: str | None) -> bool:
    """True when process ``pid`` exists, is not a zombie and, if ``start`` is known,
    started at ``start``."""
    try:
        found = _proc_stat(pid)
    except (OSError, IndexError, ValueError):
        token = _psutil_token(pid)
        return token is not None and (start is None or token in ("unknown", start))
    if found is None or found[0] == "Z":
        return False
    return start is None or found[1] == start


@lru_cache(maxsize=1)
def self_token() -> tuple[int, str | None]:
    """This process's pid and start token (cached: it never changes)."""
    pid = os.getpid()
    return pid, start_token(pid)


def current_process() -> tuple[int, str | None]:
    """This process's pid and start token, correct after a fork."""
    pid, token = self_token()
    if pid != os.getpid():
        self_token.cache_clear()
        pid, token = self_token()
    return pid, token


_PAGE_MB = (os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096) / (1024 * 1024)


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` in MB, or None when it cannot be read."""
    if procfs.HAS_PROC:
        try:
            return procfs.resident_pages(pid) * _PAGE_MB
        except (OSError, IndexError, ValueError):
            return None
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss / (1024 * 1024)
    except psutil.Error:
        return None


class ProcessWatch:
    """Liveness of owner processes across many transactions, mostly without reading /proc.

    The first time a (pid, start token) is seen alive, a pidfd is opened on it (Linux):
    it refers to that very process, whatever later happens to the pid, and becomes
    readable when the process ends. Each transaction then learns which owners ended with
    one ``poll`` over all of them, instead of reading ``/proc/PID/stat`` once per owner
    while it holds the ledger. Elsewhere (or past ``limit`` owners) it falls back to
    :func:`is_alive`.
    """

    def __init__(self, *, limit: int = 256) -> None:
        self.limit = limit
        self._fds: dict[tuple[int, str | None], int] = {}
        self._keys: dict[int, tuple[int, str | None]] = {}
        self._poll = select.poll() if hasattr(select, "poll") and hasattr(os, "pidfd_open") else None

    def refresh(self) -> None:
        """Forget the owners that ended since the last call (one ``poll``)."""
        if self._poll is None or not self._fds:
            return
        for fd, _ in self._poll.poll(0):
            self._drop(fd)

    def alive(self, pid: int, start: str | None) -> bool:
        """Is process ``pid`` (started at ``start``) still running? As of the last
        :meth:`refresh` for processes already watched; checked now for new ones."""
        key = (pid, start)
        if key in self._fds:
            return True
        if not is_alive(pid, start):
            return False
        if self._poll is not None and len(self._fds) < self.limit:
            self._watch(key)
        return True

    def _watch(self, key: tuple[int, str | None]) -> None:
        pid, start = key
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return
        # the pid might have been reused between the check and the open: check again
        if start is not None and start_token(pid) != start:
            os.close(fd)
            return
        self._fds[key] = fd
        self._keys[fd] = key
        assert self._poll is not None
        self._poll.register(fd, select.POLLIN)

    def _drop(self, fd: int) -> None:
        key = self._keys.pop(fd, None)
        if key is not None:
            self._fds.pop(key, None)
        if self._poll is not None:
            self._poll.unregister(fd)
        os.close(fd)

    def close(self) -> None:
        for fd in list(self._keys):
            self._drop(fd)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
