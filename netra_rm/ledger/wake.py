"""Waking waiters: one named pipe (FIFO) per waiter, beside the ledger.

A waiter creates ``<ledger>.wait/<waiter id>`` before it joins the queue and sleeps in
``poll`` on it; a process that frees capacity writes one byte into the FIFO of every
waiter still queued once its transaction has committed. The byte stays in the pipe, so a
release that lands between "join the queue" and "go to sleep" is never missed. The
standard library has no inotify; a FIFO needs no daemon and no polling, and costs the
releaser nothing when nobody waits (the queue in the ledger is empty).

A waiter still re-checks on a timer (with backoff), because some capacity comes back
without anyone to write the byte: an allocation expires, or its owner dies.
"""

from __future__ import annotations

import os
import select
import stat
from collections.abc import Iterable
from pathlib import Path

from netra_rm.records import Allocation, is_id

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class WakeChannel:
    """The receiving end of one waiter's FIFO. Open it before joining the queue.

    ``directory`` must already be checked as private (see
    :func:`netra_rm.fsutil.ensure_private_dir`); ``waiter_id`` follows the id grammar, so
    the FIFO is always a file of that directory and nothing else.
    """

    #: a byte carries no allocation: a waiter handed one reads it from the ledger
    handed: Allocation | None = None

    def __init__(self, directory: Path, waiter_id: str) -> None:
        if not is_id(waiter_id):
            raise ValueError(f"not a waiter id: {waiter_id!r}")
        path = directory / waiter_id
        self.path = path
        try:
            os.mkfifo(path, 0o600)
        except FileExistsError:
            st = os.lstat(path)
            if not stat.S_ISFIFO(st.st_mode) or st.st_uid != os.geteuid():
                raise
        # O_RDWR: we hold a writer ourselves, so the pipe never reports end-of-file after
        # a notifier closes its end (which would make poll() return at once, forever).
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_NONBLOCK | _CLOEXEC | _NOFOLLOW)
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)

    def wait(self, timeout: float) -> bool:
        """Sleep until notified or ``timeout`` seconds pass; True when notified."""
        if self._fd is None:
            return False
        ready = self._poll.poll(max(0, int(timeout * 1000)))
        if not ready:
            return False
        try:
            while os.read(self._fd, 4096):
                pass
        except BlockingIOError:
            pass
        return True

    def close(self) -> None:
        """Stop listening and remove the FIFO."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        remove_channels(self.path.parent, [self.path.name])

    def __enter__(self) -> WakeChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def notify(directory: Path, waiter_ids: Iterable[str]) -> None:
    """Write one byte into each waiter's FIFO; waiters that are gone are skipped."""
    for waiter_id in waiter_ids:
        if not is_id(waiter_id):
            continue
        try:
            fd = os.open(directory / waiter_id, os.O_WRONLY | os.O_NONBLOCK | _CLOEXEC | _NOFOLLOW)
        except OSError:
            continue  # ENOENT: it left; ENXIO: nobody reads; ELOOP: not ours
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                os.write(fd, b"!")
        except OSError:  # EAGAIN: the pipe already holds unread bytes, enough to wake it
            pass
        finally:
            os.close(fd)


def remove_channels(directory: Path, waiter_ids: Iterable[str]) -> None:
    """Remove the FIFOs of waiters that left or died (quietly: they may be gone already).
    Only in a directory of our own, and only names that are waiter ids."""
    try:
        st = os.lstat(directory)
    except OSError:
        return
    if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (os.geteuid(), 0):
        return
    for waiter_id in waiter_ids:
        if not is_id(waiter_id):
            continue
        try:
            os.unlink(directory / waiter_id)
        except OSError:
            pass
