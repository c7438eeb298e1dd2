"""The allocation journal: one JSON line per grant, release, expiry, reclaim and pool change.

Every backend keeps one (the file ledger beside its file, Redis in a list, PostgreSQL in a
table), written in the same transaction as the change it records, and every line is
built here: :func:`event_record` for allocations, :func:`pool_event` for pools,
:func:`checkpoint_record` for the line that starts a journal file.

The file journal lives beside the ledger (``ledger.json.journal``) and is appended under
the ledger's lock. When it grows past ``max_bytes`` it is renamed to
``ledger.json.journal.1`` (replacing the previous one) and a new file begins, so at most
two files are kept.

Crash ordering (file ledger). A transaction appends its lines *first*, each carrying a
sequence number (``seq``), and then replaces the ledger, which records the last ``seq``
it commits (``journal_seq``). The ledger replace is the commit point:

* killed after the append but before the replace: the journal holds lines with a ``seq``
  above the ledger's ``journal_seq``. The next transaction starts from the ledger's
  ``journal_seq`` again and reuses those numbers; a reader drops every line whose number
  is reused later, and every trailing line above the ledger's ``journal_seq``. Such lines
  are exactly the aborted transaction, so ``verify`` sees only committed history;
* killed in the middle of the append: a torn last line. The next append starts on a new
  line, and readers count lines that do not parse as unreadable;
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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netra_rm.errors import LedgerError
from netra_rm.fsutil import CLOEXEC, NOFOLLOW, fsync_dir, open_private
from netra_rm.records import Allocation, Capacity, PoolRecord
from netra_rm.redact import mask_text

DEFAULT_MAX_BYTES = 4 * 1024 * 1024
_TAIL_BLOCK = 64 * 1024


@dataclass(frozen=True)
class JournalMark:
    """Where a transaction's lines began, so they can be cut off if the commit fails."""

    path: Path
    size: int


# -- the records -------------------------------------------------------------------------------

def allocation_record(allocation: Allocation) -> dict[str, Any]:
    """The fields of an allocation that the journal keeps (in its events and checkpoints)."""
    record: dict[str, Any] = {
        "id": allocation.id, "layer": allocation.layer, "category": allocation.category,
        "memory_mb": allocation.memory_mb, "cpu_percent": allocation.cpu_percent,
        "dedicated": allocation.dedicated, "slot": allocation.slot, "fencing_token": allocation.fencing_token,
        "owner": allocation.owner.to_dict(), "charges": list(allocation.charges), "slots": dict(allocation.slots),
        "priority": allocation.priority,
    }
    if allocation.pools:
        record["pools"] = list(allocation.pools)
    if allocation.instances:
        record["instances"] = dict(allocation.instances)
    return record


def event_record(kind: str, allocation: Allocation, now: float, **extra: Any) -> dict[str, Any]:
    """One journal event about an allocation: ``grant``, ``release``, ``expire``,
    ``reclaim`` or ``migrate``, at ``now``, with ``extra`` fields (a grant's ``limits``,
    a reclaim's ``reason``, a release's measured usage)."""
    event = {"time": round(now, 3), "event": kind, **allocation_record(allocation)}
    event.update({k: v for k, v in extra.items() if v is not None})
    return event


def limits_record(capacities: Mapping[str, Capacity]) -> dict[str, Any]:
    """The capacity each pool key had when a grant was admitted: ``verify`` judges the
    grant by these, however the configuration or the ledger's pools change later."""
    return {key: cap.to_dict() for key, cap in capacities.items()}


def pool_event(action: str, record: PoolRecord, now: float, *, host: str, previous: Capacity | None = None
               ) -> dict[str, Any]:
    """A pool registered, resized, drained or resumed."""
    event: dict[str, Any] = {"time": round(now, 3), "event": "pool", "action": action, "key": record.key,
                             "capacity": record.capacity.to_dict(), "drained": record.drained, "host": host}
    if previous is not None:
        event["previous"] = previous.to_dict()
    return event


def checkpoint_record(*, after: int, now: float, reason: str, counter: int,
                      allocations: Iterable[Allocation]) -> dict[str, Any]:
    """The line that begins a journal file (or list, or generation): the allocations
    committed at that point, so a replay can start there."""
    return {"event": "checkpoint", "after": after, "time": round(now, 3), "reason": reason,
            "fencing_counter": counter, "allocations": [allocation_record(a) for a in allocations]}


def encode_line(record: Mapping[str, Any]) -> bytes:
    """One journal line; a password in any URL inside it is masked before it is written
    (the fields of a record are masked one by one, so text that merely contains
    ``password=`` stays whole)."""
    text = json.dumps(record, separators=(",", ":"))
    if "://" in text:
        text = json.dumps(_masked(record), separators=(",", ":"))
    return text.encode() + b"\n"


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value) if "://" in value else value
    if isinstance(value, Mapping):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(v) for v in value]
    return value


def numbered(committed_seq: int, events: Iterable[Mapping[str, Any]]) -> tuple[list[bytes], int]:
    """``events`` as journal lines numbered after ``committed_seq``, and the last number."""
    seq = committed_seq
    lines: list[bytes] = []
    for event in events:
        seq += 1
        lines.append(encode_line({"seq": seq, **event}))
    return lines, seq


# -- the file journal --------------------------------------------------------------------------

class Journal:
    """The journal files of one file ledger. Writing runs under the ledger's lock."""

    def __init__(self, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, sync: bool = False,
                 group_shared: bool = False) -> None:
        self.path = path
        self.rotated = path.with_name(path.name + ".1")
        self.max_bytes = max(1, max_bytes)
        self.sync = sync
        self.group_shared = group_shared

    # -- writing -------------------------------------------------------------------------

    def append(self, committed_seq: int, events: list[dict[str, Any]],
               checkpoint: Callable[[str], dict[str, Any]]) -> tuple[JournalMark, int]:
        """Number ``events`` after ``committed_seq`` and append them; a new file starts
        with ``checkpoint(reason)``. Returns the mark to undo and the last number."""
        lines, last = numbered(committed_seq, events)
        try:
            fd, size, fresh = self._open_for_append(committed_seq)
        except OSError as exc:
            raise self._error(exc) from None
        try:
            if fresh:
                lines.insert(0, encode_line(checkpoint(fresh)))
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
        return JournalMark(self.path, size), last

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

    def _open_for_append(self, committed_seq: int) -> tuple[int, int, str]:
        """An fd to append to, the size before our lines, and why a checkpoint is needed
        ("" when none: the file continues)."""
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT  # read: the torn-line check
        fd = open_private(self.path, flags, group_shared=self.group_shared)
        size = os.fstat(fd).st_size
        if size == 0:
            return fd, 0, "start"
        reason = ""
        if committed_seq == 0:
            reason = "new ledger"  # lines here are not this ledger's: keep them aside
        elif size >= self.max_bytes:
            reason = "rotate"
        if not reason:
            return fd, size, ""
        os.close(fd)
        os.replace(self.path, self.rotated)
        fd = open_private(self.path, flags | os.O_TRUNC, group_shared=self.group_shared)
        if self.sync:
            fsync_dir(self.path.parent)
        return fd, 0, reason

    def _error(self, exc: OSError) -> LedgerError:
        if isinstance(exc, LedgerError):
            return exc
        return LedgerError(f"cannot append to the journal {self.path}: {exc.strerror or exc}; the ledger is "
                           "unchanged.", remediation=["Free disk space or fix the directory's permissions, then "
                                                      "try again."])

    # -- reading -------------------------------------------------------------------------

    def read_lines(self) -> tuple[list[bytes], list[str]]:
        """Every line of the rotated file, then of the current one, and the files read."""
        lines: list[bytes] = []
        files: list[str] = []
        for path in (self.rotated, self.path):
            data = self._read(path)
            if data is None:
                continue
            lines.extend(data.splitlines())
            files.append(str(path))
        return lines, files

    def tail(self, limit: int) -> list[bytes]:
        """At least the last ``limit`` lines (more when cheap), read from the end of the
        current file (and of the rotated one when the current holds fewer)."""
        want = max(1, limit)
        found: list[bytes] = []
        for path in (self.path, self.rotated):
            lines = self._tail_of(path, want - len(found) + 1)
            found = lines + found
            if len(found) > want:
                break
        return found

    def _tail_of(self, path: Path, want: int) -> list[bytes]:
        try:
            fd = os.open(path, os.O_RDONLY | NOFOLLOW | CLOEXEC)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise LedgerError(f"cannot read the journal {path}: {exc.strerror or exc}.") from None
        try:
            end = os.fstat(fd).st_size
            data = b""
            position = end
            while position > 0 and data.count(b"\n") <= want:
                step = min(_TAIL_BLOCK, position)
                position -= step
                data = os.pread(fd, step, position) + data
        finally:
            os.close(fd)
        lines = data.splitlines()
        if position > 0 and lines:
            lines = lines[1:]  # the first one is probably cut
        return lines

    @staticmethod
    def _read(path: Path) -> bytes | None:
        try:
            fd = os.open(path, os.O_RDONLY | NOFOLLOW | CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LedgerError(f"cannot read the journal {path}: {exc.strerror or exc}.") from None
        with os.fdopen(fd, "rb") as f:
            return f.read()


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view):]


def _truncate_quietly(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass
