"""The JSON file ledger: one file, one sibling lock file, atomic replacement.

The rules (learned from filelock): lock a sibling file and never delete it; do the whole
read-modify-write under the lock; write a temp file in the same directory, fsync it and
``os.replace`` it over the ledger. A file we cannot parse is
never overwritten.

Beside the ledger live its journal (``ledger.json.journal``, appended in the same
transaction, before the replace: see :mod:`netra_rm.ledger.journal`) and the waiters'
wake-up FIFOs (``ledger.json.wait/``, see :mod:`netra_rm.ledger.wake`).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from netra_rm.errors import LedgerError
from netra_rm.fsutil import CLOEXEC, NOFOLLOW, fsync_dir, unlink_quietly
from netra_rm.ledger import wake
from netra_rm.ledger.base import SCHEMA_VERSION, LedgerState
from netra_rm.ledger.journal import DEFAULT_MAX_BYTES, Journal


def _recovery(path: Path) -> list[str]:
    return [f"Move the file aside (mv {path} {path}.bad) and run `netra-rm cleanup --force` to start an "
            "empty ledger; active allocations recorded in it are forgotten.",
            "Or point netra-rm at another ledger with --ledger PATH or NETRA_RM_LEDGER."]


def _os_reason(exc: OSError) -> str:
    return exc.strerror or exc.__class__.__name__


class FileLedger:
    """A ledger in a local JSON file, safe across processes on one host."""

    def __init__(self, path: str | Path, *, journal_max_bytes: int = DEFAULT_MAX_BYTES,
                 journal_sync: bool = False) -> None:
        self.path = Path(path).expanduser().absolute()
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.wait_dir = self.path.with_name(self.path.name + ".wait")
        self.location = str(self.path)
        self.journal = Journal(self.path.with_name(self.path.name + ".journal"), max_bytes=journal_max_bytes,
                               sync=journal_sync)
        # the bytes last read or written and the state they hold: an unchanged file is
        # not parsed again (compared byte for byte, so another writer is always seen)
        self._cache: tuple[bytes, LedgerState] | None = None
        # the ledger as committed when the current transaction read it (never mutated)
        self._committed: LedgerState = LedgerState()
        self._swept = False  # stale temp files of killed writers removed yet?

    # -- locking -------------------------------------------------------------------------

    def _open_lock(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | NOFOLLOW | CLOEXEC
        try:
            try:
                return os.open(self.lock_path, flags, 0o600)
            except FileNotFoundError:  # the first use: make the directory
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                return os.open(self.lock_path, flags, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise LedgerError(f"the ledger lock {self.lock_path} is a symbolic link; netra-rm refuses to "
                                  "follow it.", remediation=[f"Remove the link: rm {self.lock_path}"]) from None
            raise LedgerError(f"cannot open the ledger lock {self.lock_path}: {_os_reason(exc)}.",
                              remediation=["Check that the directory exists and you may write to it, or "
                                           "use another ledger with --ledger PATH."]) from None

    @contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        fd = self._open_lock()
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)  # closing releases the lock; the lock file stays

    # -- reading -------------------------------------------------------------------------

    def _read_unlocked(self) -> LedgerState:
        try:
            fd = os.open(self.path, os.O_RDONLY | NOFOLLOW | CLOEXEC)
        except FileNotFoundError:
            self._committed = LedgerState()
            return LedgerState()
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise LedgerError(f"the ledger {self.path} is a symbolic link; netra-rm refuses to follow it.",
                                  remediation=["Replace the link with a real file, or use --ledger PATH."]
                                  ) from None
            raise LedgerError(f"cannot read the ledger {self.path}: {_os_reason(exc)}.",
                              remediation=["Check the file's owner and permissions (it should be yours, "
                                           "mode 0600)."]) from None
        try:
            chunks = [os.read(fd, 1 << 16)]
            while chunks[-1]:
                chunks.append(os.read(fd, 1 << 20))
        except OSError as exc:
            raise LedgerError(f"cannot read the ledger {self.path}: {_os_reason(exc)}.") from None
        finally:
            os.close(fd)
        raw = b"".join(chunks)
        cached = self._cache
        if cached is not None and cached[0] == raw:
            self._committed = cached[1]
            return cached[1].copy()
        state = self._parse(raw)
        self._cache = (raw, state.copy())
        self._committed = self._cache[1]
        return state

    def _parse(self, raw: bytes) -> LedgerState:
        try:
            data: Any = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise LedgerError(f"the ledger {self.path} is corrupt and cannot be parsed ({exc}); it was left "
                              "untouched.", remediation=_recovery(self.path)) from None
        if not isinstance(data, dict) or not isinstance(data.get("allocations", []), list):
            raise LedgerError(f"the ledger {self.path} is corrupt: it is not a netra-rm ledger; it was left "
                              "untouched.", remediation=_recovery(self.path))
        version = data.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise LedgerError(f"the ledger {self.path} is corrupt: it has no schema version; it was left "
                              "untouched.", remediation=_recovery(self.path))
        if version > SCHEMA_VERSION:
            raise LedgerError(f"the ledger {self.path} was written by a newer netra-rm (schema version "
                              f"{version}, this one reads up to {SCHEMA_VERSION}).",
                              remediation=["Upgrade netra-rm, or use another ledger with --ledger PATH."])
        data = upgrade(data)
        try:
            return LedgerState.from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise LedgerError(f"the ledger {self.path} is corrupt: an allocation record is malformed "
                              f"({exc.__class__.__name__}: {exc}); it was left untouched.",
                              remediation=_recovery(self.path)) from None

    def read(self) -> LedgerState:
        """The ledger as last committed. No lock is needed: a writer replaces the file in
        one rename, so a reader sees the old ledger or the new one, whole."""
        return self._read_unlocked()

    # -- writing -------------------------------------------------------------------------

    def _write_unlocked(self, state: LedgerState) -> None:
        payload = state.to_json()
        directory = self.path.parent
        if not self._swept:
            self._sweep_temp_files()
        tmp = directory / f".{self.path.name}.{os.getpid()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | NOFOLLOW | CLOEXEC, 0o600)
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            if self.path.is_symlink():
                raise LedgerError(f"the ledger {self.path} is a symbolic link; netra-rm refuses to replace it.",
                                  remediation=["Replace the link with a real file, or use --ledger PATH."])
            created = not self.path.exists()
            os.replace(tmp, self.path)
            self._cache = (payload, state.copy())
        except OSError as exc:
            unlink_quietly(tmp)
            raise LedgerError(f"cannot write the ledger {self.path}: {_os_reason(exc)}; the previous ledger "
                              "is unchanged.", remediation=["Free disk space or fix the directory's "
                                                            "permissions, then try again."]) from None
        except BaseException:
            unlink_quietly(tmp)
            raise
        # The rename itself is atomic for every process on this host. Only the first one is
        # made durable with a directory fsync: after a power loss every owner process is
        # gone anyway, so an older (still valid) ledger loses nothing that still runs.
        if created:
            fsync_dir(directory)

    def _sweep_temp_files(self) -> None:
        """Remove temp files that writers killed before their replace left behind (once
        per instance, under the lock, so no live writer is using one)."""
        self._swept = True
        prefix, suffix = f".{self.path.name}.", ".tmp"
        try:
            names = os.listdir(self.path.parent)
        except OSError:
            return
        for name in names:
            pid = name[len(prefix):-len(suffix)]
            if name.startswith(prefix) and name.endswith(suffix) and pid.isdigit() and int(pid) != os.getpid():
                try:
                    os.kill(int(pid), 0)
                except ProcessLookupError:
                    unlink_quietly(self.path.parent / name)
                except OSError:
                    pass

    @contextmanager
    def transaction(self) -> Iterator[LedgerState]:
        """Hold the lock, read, let the caller change the state, write it back if changed.

        The state's events go to the journal first, then the ledger is replaced (the
        commit point; see :mod:`netra_rm.ledger.journal`). If the ledger cannot be
        written, the journal is cut back and the error raised.
        """
        with self._locked(fcntl.LOCK_EX):
            state = self._read_unlocked()
            committed = self._committed
            yield state
            if state.changed:
                mark = self.journal.append(committed, state) if state.events else None
                try:
                    self._write_unlocked(state)
                except BaseException:
                    if mark is not None:
                        self.journal.undo(mark)
                    raise
                state.changed = False

    # -- the journal and waking waiters ----------------------------------------------------

    def read_with_journal(self) -> tuple[LedgerState, list[bytes], list[str]]:
        """The ledger and every journal line (oldest file first), read together under a
        shared lock so they agree; and the journal files read."""
        with self._locked(fcntl.LOCK_SH):
            state = self._read_unlocked()
            lines, files = self.journal.read_lines()
        return state, lines, files

    def waiter_channel(self, waiter_id: str) -> wake.WakeChannel | None:
        """A FIFO the waiter ``waiter_id`` sleeps on; None where FIFOs cannot be made
        (the waiter then polls)."""
        try:
            return wake.WakeChannel(self.wait_dir / waiter_id)
        except OSError:
            return None

    def notify(self, waiter_ids: list[str]) -> None:
        """Wake these waiters: capacity was freed or the queue ahead of them moved."""
        wake.notify(self.wait_dir, waiter_ids)

    def forget_waiters(self, waiter_ids: list[str]) -> None:
        """Remove the FIFOs of waiters that died in the queue."""
        wake.remove_channels(self.wait_dir, waiter_ids)


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """Bring an older ledger up to :data:`SCHEMA_VERSION`, one version at a time."""
    # version 1 is the first; future upgrades go here as `if version == N: ...; version = N + 1`
    return data
