"""The allocation journal: one JSON line per grant, release, expiry and reclaim.

It lives beside the ledger (``ledger.json.journal``) and is appended under the ledger's
lock. When it grows past ``max_bytes`` it is renamed to ``ledger.json.journal.1``
(replacing the previous one) and a new file begins, so at most two files are kept.

Crash ordering. A transaction appends its lines *first*, each carrying a sequence number
(``seq``), and then replaces the ledger, which records the last ``seq`` it commits
(``journal_seq``). The ledger replace is the commit point:

* killed after the append but before the replace: the journal holds lines with a ``seq``
  above the ledger's ``journal_seq``. The next transaction starts from the ledger's
  ``journal_seq`` again and reuses those numbers; a reader drops every line whose number
  is reused later, and every trailing line above the ledger's ``journal_seq``. Such lines
  are exactly the aborted transaction, so ``verify`` sees only committed history;
* killed in the middle of the append: a torn last line. The next append starts on a new
  line, and readers skip lines that do not parse;
* a write error (full disk, file size limit): the journal is truncated back to where the
  transaction began and the ledger is not touched.

Each file begins with a ``checkpoint`` line holding the allocations committed at that
point, so the replay can start at the beginning of either file even after older history
was rotated away. A ledger that was never journaled (``journal_seq`` 0) starts a new file:
lines from an earlier ledger at the same path are rotated aside, not mixed in.

By default the append is not fsynced: against a killed process the page cache already
keeps the order (journal before ledger). ``sync=True`` (``NETRA_RM_JOURNAL_SYNC=1``)
adds an ``fdatasync`` before the ledger is replaced, for the order to survive a power loss
too, at the price of one more disk flush per transaction.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netra_rm.errors import LedgerError
from netra_rm.fsutil import CLOEXEC, NOFOLLOW, fsync_dir
from netra_rm.ledger.base import LedgerState
from netra_rm.redact import mask_text

DEFAULT_MAX_BYTES = 4 * 1024 * 1024



@dataclass(frozen=True)
class JournalMark:
    """Where a transaction's lines began, so they can be cut off if the commit fails."""

    path: Path
    size: int


def allocation_record(data: dict[str, Any]) -> dict[str, Any]:
    """The fields of an allocation that the journal keeps (the same as its events)."""
    record = {"id": data["id"], "layer": data["layer"], "category": data.get("category", ""),
              "memory_mb": data["memory_mb"], "cpu_percent": data["cpu_percent"],
              "dedicated": data.get("dedicated", False), "slot": data.get("slot", 0),
              "fencing_token": data.get("fencing_token", 0), "owner": data.get("owner")}
    if data.get("pools"):
        record["pools"] = list(data["pools"])
    return record


def encode_line(record: dict[str, Any]) -> bytes:
    """One journal line; a password in any URL-like text is masked before it is written."""
    text = json.dumps(record, separators=(",", ":"))
    if "://" in text or "password=" in text.lower():
        text = mask_text(text)
    return text.encode() + b"\n"


def numbered_lines(committed: LedgerState, state: LedgerState) -> list[bytes]:
    """``state.events`` as journal lines numbered after ``committed.journal_seq``; sets
    ``state.journal_seq`` to the last number. Every backend numbers its lines this way."""
    seq = committed.journal_seq
    lines: list[bytes] = []
    for event in state.events:
        seq += 1
        lines.append(encode_line({"seq": seq, **event}))
    state.journal_seq = seq
    return lines


def checkpoint_record(committed: LedgerState, reason: str) -> dict[str, Any]:
    """The line that begins a journal file (or list, or generation): the allocations
    committed at that point, so a replay can start there."""
    return {"event": "checkpoint", "after": committed.journal_seq, "time": round(time.time(), 3),
            "reason": reason, "fencing_counter": committed.fencing_counter,
            "allocations": [allocation_record(a.to_dict()) for a in committed.allocations]}


class Journal:
    """The journal files of one ledger. Every method runs under the ledger's lock."""

    def __init__(self, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, sync: bool = False) -> None:
        self.path = path
        self.rotated = path.with_name(path.name + ".1")
        self.max_bytes = max(1, max_bytes)
        self.sync = sync

    # -- writing -------------------------------------------------------------------------

    def append(self, committed: LedgerState, state: LedgerState) -> JournalMark:
        """Number ``state.events`` after ``committed.journal_seq`` and append them.

        ``committed`` is the ledger as it was read at the start of the transaction; a new
        file starts with its checkpoint. Sets ``state.journal_seq`` to the last number.
        """
        lines = numbered_lines(committed, state)
        try:
            fd, size, fresh = self._open_for_append(committed)
        except OSError as exc:
            raise self._error(exc) from None
        try:
            if fresh:
                lines.insert(0, encode_line(self._checkpoint(committed, fresh)))
            elif size and os.pread(fd, 1, size - 1) != b"\n":
                lines.insert(0, b"\n")  # a torn line from a killed writer: start a new one
            _write_all(fd, b"".join(lines))
            if self.sync:
                os.fdatasync(fd)
        except OSError as exc:
            _truncate_quietly(fd, size)
            raise self._error(exc) from None
        finally:
            os.close(fd)
        return JournalMark(self.path, size)

    def undo(self, mark: JournalMark) -> None:
        """Cut the journal back to ``mark`` (the ledger write after it failed)."""
        try:
            fd = os.open(mark.path, os.O_WRONLY | NOFOLLOW | CLOEXEC)
        except OSError:
            return
        try:
            _truncate_quietly(fd, mark.size)
        finally:
            os.close(fd)

    def _open_for_append(self, committed: LedgerState) -> tuple[int, int, str]:
        """An fd to append to, the size before our lines, and why a checkpoint is needed
        ("" when none: the file continues)."""
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | NOFOLLOW | CLOEXEC  # read: the torn-line check
        fd = os.open(self.path, flags, 0o600)
        size = os.fstat(fd).st_size
        if size == 0:
            return fd, 0, "start"
        reason = ""
        if committed.journal_seq == 0:
            reason = "new ledger"  # lines here are not this ledger's: keep them aside
        elif size >= self.max_bytes:
            reason = "rotate"
        if not reason:
            return fd, size, ""
        os.close(fd)
        os.replace(self.path, self.rotated)
        fd = os.open(self.path, flags | os.O_TRUNC, 0o600)
        if self.sync:
            fsync_dir(self.path.parent)
        return fd, 0, reason

    def _checkpoint(self, committed: LedgerState, reason: str) -> dict[str, Any]:
        return checkpoint_record(committed, reason)

    def _error(self, exc: OSError) -> LedgerError:
        return LedgerError(f"cannot append to the journal {self.path}: {exc.strerror or exc}; the ledger is "
                           "unchanged.", remediation=["Free disk space or fix the directory's permissions, then "
                                                      "try again."])

    # -- reading -------------------------------------------------------------------------

    def read_lines(self) -> tuple[list[bytes], list[str]]:
        """Every line of the rotated file, then of the current one, and the files read."""
        lines: list[bytes] = []
        files: list[str] = []
        for path in (self.rotated, self.path):
            try:
                fd = os.open(path, os.O_RDONLY | NOFOLLOW | CLOEXEC)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise LedgerError(f"cannot read the journal {path}: {exc.strerror or exc}.") from None
            with os.fdopen(fd, "rb") as f:
                lines.extend(f.read().splitlines())
            files.append(str(path))
        return lines, files


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view):]


def _truncate_quietly(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass
