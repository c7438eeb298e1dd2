"""One deadline for a whole command: ``--timeout`` bounds every wait inside it.

A command that has a time limit (``allocate --wait --timeout 2``) sets it once with
:func:`bounded`; everything that can wait on its way (the file ledger's lock, a server's
connect and replies, the queue) asks :func:`remaining` for how long it may still wait,
so the limit holds whatever the command was doing when it ran out. Threads started
inside do not inherit it (a lease keeper outlives the command's wait).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_deadline: ContextVar[float | None] = ContextVar("netra_rm_deadline", default=None)


@contextmanager
def bounded(seconds: float | None) -> Iterator[None]:
    """Within the block, no wait lasts past ``seconds`` from now (None: no bound, or the
    bound already set, whichever is sooner)."""
    if seconds is None:
        yield
        return
    end = time.monotonic() + max(0.0, seconds)
    outer = _deadline.get()
    token = _deadline.set(end if outer is None else min(outer, end))
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining(default: float) -> float:
    """How long a wait may last: ``default``, or less when the command's deadline is nearer
    (never below zero)."""
    end = _deadline.get()
    if end is None:
        return default
    return max(0.0, min(default, end - time.monotonic()))


def is_bounded() -> bool:
    return _deadline.get() is not None


def passed() -> bool:
    """Has the command's deadline passed?"""
    end = _deadline.get()
    return end is not None and time.monotonic() >= end
