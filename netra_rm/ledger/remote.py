"""What the server ledgers (Redis, PostgreSQL) share, whatever the server.

A server ledger keeps the very document the file ledger keeps, under a version number,
and offers the same exclusive ``transaction()`` over it: the backend takes a lock, reads
the document (only when its version moved since this process last parsed it), lets the
engine change it, and writes it back with its journal lines in one atomic step that also
checks the version. So the engine, the admission rules and the queue run unchanged on
every backend.

Fencing. Servers can lose data: a Redis restarted without persistence starts empty, a
snapshot restore goes back in time. Each ledger document carries an id (chosen when it is
created) and the fencing counter; every host remembers, per ledger location, the id and
the highest counter it has seen (in memory, and in ``$XDG_STATE_HOME/netra-rm/remote/``).
When the document is gone, or its counter went below what this host saw, or another id
appeared that no one created on purpose, every command refuses with exit 5 instead of
starting over: allocations granted before are unknown, and granting again could hand out
the same capacity twice. ``netra-rm cleanup --force`` is the deliberate reset: it starts
a fresh document whose fencing counter continues above anything handed out before.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from netra_rm.core.model import Allocation
from netra_rm.errors import LedgerError, LedgerLostError
from netra_rm.ledger.base import SCHEMA_VERSION, LedgerState
from netra_rm.ledger.journal import (
    allocation_record,
    checkpoint_record,
    encode_line,
    numbered_lines,
)
from netra_rm.redact import mask_url, url_password

#: The URL query parameter that names a ledger inside one server (several may share it).
LEDGER_PARAMETER = "ledger"
#: The URL query parameter that bounds connecting and each reply, in seconds.
TIMEOUT_PARAMETER = "timeout"
DEFAULT_LEDGER_NAME = "default"
#: Journal lines kept before the journal starts again with a checkpoint (the previous
#: lines are kept as the rotated journal, as the file backend keeps ``journal.1``).
DEFAULT_JOURNAL_MAX_LINES = 20000


@dataclass(frozen=True)
class ServerOptions:
    """Bounds on every call to a server, in seconds.

    ``connect_timeout`` and ``io_timeout`` bound each connection attempt and each reply;
    ``lock_ttl`` is how long a holder of the ledger lock may keep it before others may
    take it (a process killed mid-transaction blocks the others at most this long; its
    uncommitted change is then refused by the version check); ``lock_wait`` is how long a
    transaction waits for the lock before it gives up (exit 5).
    """

    connect_timeout: float = 2.0
    io_timeout: float = 5.0
    lock_ttl: float = 5.0
    lock_wait: float = 30.0
    journal_max_lines: int = DEFAULT_JOURNAL_MAX_LINES


@dataclass(frozen=True)
class Snapshot:
    """What a backend read at the start of a transaction (or a plain read).

    ``doc`` is None when the version equals the one this process already parsed (or when
    there is no document: ``version`` 0).
    """

    version: int
    ledger_id: str | None
    origin: str | None
    doc: bytes | None
    journal_length: int = 0
    #: releases recorded without the lock (``release_now``), oldest first: (id, time)
    pending: tuple[tuple[str, float], ...] = ()


def split_location(url: str) -> tuple[str, str, dict[str, str]]:
    """The server URL without netra-rm's parameters, the ledger's name (``ledger=NAME``)
    and netra-rm's other parameters (``timeout=S``)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    name = DEFAULT_LEDGER_NAME
    ours: dict[str, str] = {}
    kept = []
    for key, value in query:
        if key == LEDGER_PARAMETER:
            name = value or DEFAULT_LEDGER_NAME
        elif key == TIMEOUT_PARAMETER:
            ours[key] = value
        else:
            kept.append((key, value))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(kept), parts.fragment)), name, ours


def options_from(parameters: dict[str, str], location: str, base: ServerOptions | None = None) -> ServerOptions:
    """:class:`ServerOptions` with the URL's ``timeout=S`` applied (connect and replies)."""
    options = base or ServerOptions()
    text = parameters.get(TIMEOUT_PARAMETER)
    if text is None:
        return options
    from netra_rm import numbers

    seconds = float(numbers.finite(f"timeout= in the ledger URL {location}", text, numbers.NETWORK_SECONDS,
                                   remediation=f"Set timeout= to {numbers.NETWORK_SECONDS.describe()}."))
    from dataclasses import replace

    return replace(options, connect_timeout=seconds, io_timeout=seconds)


class FencingMemory:
    """What this host remembers of one server ledger: its id and the highest fencing
    counter seen. Kept in memory, and in a small file per location so that separate
    commands remember too (written at most once a second per process)."""

    def __init__(self, path: Path | None, location: str) -> None:
        self.path = path
        self.location = location
        self._loaded = False
        self.ledger_id: str | None = None
        self.counter = 0
        self._written: tuple[str | None, int] = (None, 0)
        self._written_at = 0.0

    def load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self.path is None:
            return
        try:
            data = json.loads(self.path.read_bytes())
            ledger_id, counter = data.get("ledger_id"), int(data.get("fencing_counter", 0))
        except (OSError, ValueError, TypeError, AttributeError):
            return
        if isinstance(ledger_id, str) and ledger_id and self.ledger_id is None:
            self.ledger_id, self.counter = ledger_id, counter
            self._written = (ledger_id, counter)

    def note(self, ledger_id: str | None, counter: int) -> None:
        """Remember the ledger as just seen (a healthy read or commit)."""
        if ledger_id is None:
            return
        if ledger_id != self.ledger_id:
            self.ledger_id, self.counter = ledger_id, counter
        else:
            self.counter = max(self.counter, counter)

    def flush(self, *, force: bool = False) -> None:
        """Write the file if it is behind (at most once a second unless ``force``)."""
        if self.path is None or self.ledger_id is None or self._written == (self.ledger_id, self.counter):
            return
        now = time.monotonic()
        if not force and self._written[0] == self.ledger_id and now - self._written_at < 1.0:
            return
        self._written, self._written_at = (self.ledger_id, self.counter), now
        payload = json.dumps({"location": self.location, "ledger_id": self.ledger_id,
                              "fencing_counter": self.counter, "time": round(time.time(), 3)}).encode()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, payload)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError:
            pass  # best effort: the in-memory watch still protects this process

    def forget(self) -> None:
        """After a deliberate reset: the old id is no longer expected."""
        self.ledger_id, self.counter = None, 0


def memory_path(state_dir: Path | None, location: str) -> Path | None:
    """Where this host remembers the ledger at ``location`` (a masked URL)."""
    if state_dir is None:
        return None
    digest = hashlib.sha256(location.encode()).hexdigest()[:20]
    return state_dir / "remote" / f"{digest}.json"


class RemoteLedger:
    """The part of a server ledger that does not depend on the server.

    A backend implements :meth:`_begin` (take the lock, read), :meth:`_commit` (write the
    document and journal lines, check the version, release), :meth:`_release` (release
    without writing), :meth:`_snapshot` (read without the lock) and :meth:`_journal`.
    """

    backend = "server"
    #: allocations here may belong to processes on other hosts: leases apply
    shared = True

    def __init__(self, url: str, *, state_dir: Path | None = None,
                 options: ServerOptions | None = None) -> None:
        self.url = url
        self.server_url, self.name, parameters = split_location(url)
        self.location = mask_url(url) or url
        self.options = options_from(parameters, self.location, options)
        self._password = url_password(url)
        identity = f"{mask_url(self.server_url)}#{self.name}"  # the same ledger, whatever the options
        self._memory = FencingMemory(memory_path(state_dir, identity), self.location)
        self._parsed: tuple[int, LedgerState] | None = None
        self._allocations: dict[tuple[str, int, float | None], Allocation] = {}
        self._line_cache: dict[bytes, Allocation] = {}
        self._lock = threading.RLock()

    # -- the backend's part ----------------------------------------------------------------

    def _begin(self, cached_version: int) -> Snapshot:  # pragma: no cover - abstract
        raise NotImplementedError

    def _commit(self, snapshot: Snapshot, doc: bytes, meta: dict[str, str], lines: list[bytes],
                rotate: bool) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _release(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _abort(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _snapshot(self, cached_version: int) -> Snapshot:  # pragma: no cover - abstract
        raise NotImplementedError

    def _journal(self) -> tuple[Snapshot, list[bytes], list[str]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Close the connections (the process may also simply exit)."""

    # -- the protocol ------------------------------------------------------------------------

    @contextmanager
    def transaction(self, *, reset: bool = False) -> Iterator[LedgerState]:
        """Hold the ledger exclusively; commit the state on a clean exit if it changed.

        With ``reset`` (``cleanup --force``), a ledger whose state was lost or went back
        in time is accepted and started afresh instead of refused.
        """
        with self._lock:
            snapshot = self._begin(self._cached_version())
            try:
                state, committed, meta = self._open(snapshot, reset=reset)
                yield state
                exists = snapshot.version > 0
                if state.changed:
                    lines, rotate = self._lines(committed, state, snapshot)
                    version = self._commit(snapshot, self._encode(state), meta, lines, rotate)
                    state.changed = False
                    self._parsed = (version, state.copy())
                    exists = True
                else:
                    self._release()
            except BaseException:
                self._abort()
                raise
            if exists:  # a ledger nobody wrote yet is not remembered: it has no id yet
                self._memory.note(meta["id"], state.fencing_counter)
        self._memory.flush()

    def read(self) -> LedgerState:
        """A consistent snapshot, without the lock."""
        with self._lock:
            snapshot = self._snapshot(self._cached_version())
            state, _, meta = self._open(snapshot, reset=False)
            if snapshot.version > 0:
                self._memory.note(meta["id"], state.fencing_counter)
        self._memory.flush()
        return state

    def read_with_journal(self) -> tuple[LedgerState, list[bytes], list[str]]:
        """The ledger and its journal lines (rotated ones first), read together (after
        journaling the releases recorded without the lock, if any)."""
        with self.transaction():
            pass
        with self._lock:
            self._parsed = None
            snapshot, lines, names = self._journal()
            state, _, _ = self._open(snapshot, reset=False)
        return state, lines, names

    # -- decoding and fencing ----------------------------------------------------------------

    def _cached_version(self) -> int:
        return self._parsed[0] if self._parsed is not None else -1

    def _open(self, snapshot: Snapshot, *, reset: bool) -> tuple[LedgerState, LedgerState, dict[str, str]]:
        """The state to hand to the engine, the state as committed, and the document's id
        and origin to write back; refuses a ledger that lost its state (see the module)."""
        if snapshot.version <= 0:
            state = LedgerState()
        elif snapshot.doc is None and self._parsed is not None and self._parsed[0] == snapshot.version:
            state = self._parsed[1].copy()
        elif snapshot.doc is None:
            raise self.error("the ledger document is missing although its version is set", corrupt=True)
        else:
            state = self._decode(snapshot.doc)
            self._parsed = (snapshot.version, state.copy())
        meta = {"id": snapshot.ledger_id or "", "origin": snapshot.origin or "auto"}
        self._memory.load()
        problem = self._fencing_problem(snapshot, state)
        if problem is not None:
            if not reset:
                raise LedgerLostError(problem[0], remediation=problem[1])
            floor = max(self._memory.counter, state.fencing_counter, int(time.time() * 1_000_000))
            state = LedgerState(fencing_counter=floor, journal_seq=state.journal_seq,
                                waiters=state.waiters)
            state.changed = True
            meta = {"id": uuid.uuid4().hex, "origin": "reset"}
            self._memory.forget()
        elif not meta["id"]:
            meta["id"] = uuid.uuid4().hex  # a new ledger: its id is written with its first commit
        committed = state.copy()
        if snapshot.pending:
            self._apply_releases(state, snapshot.pending)
        return state, committed, meta

    @staticmethod
    def _apply_releases(state: LedgerState, pending: tuple[tuple[str, float], ...]) -> None:
        """Apply the releases recorded without the lock: drop those allocations and journal
        each release at the time it was asked for (one already gone is skipped)."""
        for allocation_id, when in pending:
            removed = state.remove({allocation_id})
            for allocation in removed:
                state.events.append({"time": round(when, 3), "event": "release",
                                     **allocation_record(allocation.to_dict())})
        state.changed = True  # the recorded releases are consumed with this commit

    def _fencing_problem(self, snapshot: Snapshot, state: LedgerState) -> tuple[str, list[str]] | None:
        seen_id, seen = self._memory.ledger_id, self._memory.counter
        if seen_id is None:
            return None
        where = f"the {self.backend} ledger at {self.location}"
        if snapshot.version <= 0:
            message = (f"{where} lost its state: this host saw its fencing counter at {seen} and it is now empty "
                       f"(was the server restarted without persistence?). Allocations granted before are unknown, "
                       f"so nothing is granted or released until it is reset.")
        elif snapshot.ledger_id == seen_id:
            if state.fencing_counter >= seen:
                return None
            message = (f"{where}: the fencing counter went backwards, from {seen} (seen by this host) to "
                       f"{state.fencing_counter} (was it restored from an older copy?). Nothing is granted or "
                       "released until it is reset.")
        elif snapshot.origin == "reset" and state.fencing_counter >= seen:
            return None  # reset on purpose by someone, and fencing continues above what we saw
        else:
            message = (f"{where} was started again from scratch (it is not the ledger this host used, and its "
                       f"fencing counter {state.fencing_counter} is not above the {seen} this host saw): was the "
                       "server restarted without persistence? Nothing is granted or released until it is reset.")
        return message, self._reset_steps(seen)

    def _reset_steps(self, seen: int) -> list[str]:
        return [f"Once the jobs that held allocations in it have ended, start a fresh ledger: netra-rm --ledger "
                f"'{self.location}' cleanup --force (its fencing tokens continue above {seen}).",
                *self.persistence_advice()]

    def persistence_advice(self) -> list[str]:
        return []

    def _encode(self, state: LedgerState) -> bytes:
        """The document to store (the file ledger's JSON unless a backend says otherwise)."""
        return state.to_json()

    def _decode(self, raw: bytes) -> LedgerState:
        """Parse a document, reusing the allocations already parsed (they never change)."""
        if raw[:1] == b"#":
            return self._decode_lines(raw)
        try:
            data: Any = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise self.error(f"the ledger document cannot be parsed ({exc})", corrupt=True) from None
        if not isinstance(data, dict) or not isinstance(data.get("allocations", []), list):
            raise self.error("the ledger document is not a netra-rm ledger", corrupt=True)
        self._check_version(data.get("schema_version"))
        cache = self._allocations
        fresh: dict[tuple[str, int, float | None], Allocation] = {}
        allocations = []
        try:
            for item in data.get("allocations", []):
                key = (item["id"], item.get("fencing_token", 0), item.get("lease_expires_at"))
                allocation = cache.get(key)
                if allocation is None:
                    allocation = Allocation.from_dict(item)
                fresh[key] = allocation
                allocations.append(allocation)
            state = LedgerState(allocations=allocations, fencing_counter=int(data.get("fencing_counter", 0)),
                                waiters=list(data.get("waiters", [])), journal_seq=int(data.get("journal_seq", 0)))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self.error(f"an allocation record is malformed ({exc.__class__.__name__}: {exc})",
                             corrupt=True) from None
        self._allocations = fresh
        return state

    def _check_version(self, version: Any) -> None:
        """Refuse a document without a schema version, or from a newer netra-rm."""
        if not isinstance(version, int) or isinstance(version, bool):
            raise self.error("the ledger document has no schema version", corrupt=True)
        if version > SCHEMA_VERSION:
            raise LedgerError(f"the {self.backend} ledger at {self.location} was written by a newer netra-rm "
                              f"(schema version {version}, this one reads up to {SCHEMA_VERSION}).",
                              remediation=["Upgrade netra-rm on this host."])

    def _encode_lines(self, state: LedgerState) -> bytes:
        """The document as lines: a marker, the head (counters and waiters) as JSON, then
        one allocation per line. Decoding it reuses each known allocation by its line,
        without parsing it again: the lock is held meanwhile."""
        head = json.dumps({"schema_version": SCHEMA_VERSION, "fencing_counter": state.fencing_counter,
                           "journal_seq": state.journal_seq, "waiters": state.waiters}, separators=(",", ":"))
        return "\n".join(["#netra-rm-lines", head, *(a.json for a in state.allocations)]).encode()

    def _decode_lines(self, raw: bytes) -> LedgerState:
        lines = raw.split(b"\n")
        try:
            head: Any = json.loads(lines[1])
            self._check_version(head.get("schema_version"))
            cache = self._line_cache
            fresh: dict[bytes, Allocation] = {}
            allocations = []
            for line in lines[2:]:
                allocation = cache.get(line)
                if allocation is None:
                    allocation = Allocation.from_dict(json.loads(line))
                fresh[line] = allocation
                allocations.append(allocation)
            self._line_cache = fresh
            return LedgerState(allocations=allocations, fencing_counter=int(head.get("fencing_counter", 0)),
                               waiters=list(head.get("waiters", [])), journal_seq=int(head.get("journal_seq", 0)))
        except (IndexError, KeyError, TypeError, ValueError, AttributeError, UnicodeDecodeError) as exc:
            raise self.error(f"the ledger document cannot be parsed ({exc.__class__.__name__}: {exc})",
                             corrupt=True) from None

    def _lines(self, committed: LedgerState, state: LedgerState, snapshot: Snapshot) -> tuple[list[bytes], bool]:
        """The journal lines to append with this commit, and whether the journal starts
        again (a checkpoint first: a new ledger, or the journal grew past its limit)."""
        if not state.events:
            return [], False
        lines = numbered_lines(committed, state)
        reason = ""
        if committed.journal_seq == 0:
            reason = "new ledger" if snapshot.journal_length else "start"
        elif snapshot.journal_length >= self.options.journal_max_lines:
            reason = "rotate"
        if reason:
            lines.insert(0, encode_line(checkpoint_record(committed, reason)))
        return [line.rstrip(b"\n") for line in lines], bool(reason) and snapshot.journal_length > 0

    # -- errors ------------------------------------------------------------------------------

    def error(self, what: str, *, corrupt: bool = False, remediation: list[str] | None = None) -> LedgerError:
        """A :class:`LedgerError` naming this ledger (its URL with the password masked)."""
        text = self.scrub(what)
        if corrupt:
            return LedgerError(f"the {self.backend} ledger at {self.location} is corrupt: {text}; it was left "
                               "untouched.", remediation=remediation or [
                                   f"Start a fresh ledger with netra-rm --ledger '{self.location}' cleanup --force "
                                   "(active allocations recorded in it are forgotten), or use another ledger."])
        return LedgerError(f"the {self.backend} ledger at {self.location} {text}", remediation=remediation or [])

    def scrub(self, text: str) -> str:
        """``text`` with this ledger's password masked, wherever it appears."""
        from netra_rm.redact import mask_text

        return mask_text(text, [self._password] if self._password else [])
