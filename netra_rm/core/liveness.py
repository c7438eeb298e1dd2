"""Is the process that owns an allocation still alive, and still the same process?

A pid alone is not enough: pids are reused. We pair it with the process start time,
read from ``/proc`` on Linux (cheap) and from psutil elsewhere.
"""

from __future__ import annotations

import os
from functools import lru_cache

_PROC = "/proc"
_HAS_PROC = os.path.isdir(_PROC)  # elsewhere psutil answers


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state letter, start token) from /proc/PID/stat; None if there is no such process."""
    if not _HAS_PROC:
        raise OSError("no /proc on this host")
    try:
        with open(f"{_PROC}/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = stat[stat.rfind(b")") + 2:].split()
    return fields[0].decode(), f"linux:{int(fields[19])}"


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
    if _HAS_PROC:
        try:
            with open(f"{_PROC}/{pid}/statm", "rb") as f:
                return int(f.read().split()[1]) * _PAGE_MB
        except (OSError, IndexError, ValueError):
            return None
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss / (1024 * 1024)
    except psutil.Error:
        return None
