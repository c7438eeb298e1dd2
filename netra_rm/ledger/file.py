"""The JSON file ledger: one file, one sibling lock file, atomic replacement.

The rules (learned from filelock): lock a sibling file and never delete it; do the whole
read-modify-write under the lock; write a temp file in the same directory, fsync it and
``os.replace`` it over the ledger. A file we cannot parse is never overwritten.

The wait for the lock is bounded (``NETRA_RM_LOCK_TIMEOUT``, 10 s by default, and the
command's ``--timeout``): past it the command exits 5 naming the process that holds the
lock. Every file beside the ledger (lock, temp files, journal, wake pipes) is created
exclusively, never through a symbolic link, and one that exists already is used only
when it belongs to this user (or root) and nobody else may write it (see
:mod:`netra_rm.fsutil`), so a ledger in a shared directory cannot be turned against its
users.

The file's clock is this machine's: allocations expire by the local time, which is
right for one machine (a server ledger judges leases by the server's clock instead).

Beside the ledger live its journal (``ledger.json.journal``, appended in the same
transaction, before the replace: see :mod:`netra_rm.ledger.journal`) and the waiters'
wake-up FIFOs (``ledger.json.wait/``, see :mod:`netra_rm.ledger.wake`).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from netra_rm import deadline
from netra_rm.errors import LedgerBusyError, LedgerError, UnsafePathError
from netra_rm.fsutil import (
    CLOEXEC,
    NOFOLLOW,
    check_owned_file,
    check_parent,
    create_exclusive_temp,
    ensure_private_dir,
    fsync_dir,
    open_private,
    unlink_quietly,
    write_all,
)
from netra_rm.ledger import wake
from netra_rm.ledger.base import SCHEMA_VERSION, Ledger, Scope, Snapshot, Txn
from netra_rm.ledger.journal import DEFAULT_MAX_BYTES, Journal, checkpoint_record
from netra_rm.ledger.upgrade import ScopeOf, host_scoped, upgrade
from netra_rm.records import (
    Allocation,
    PoolRecord,
    RecordError,
    Waiter,
    is_id,
    records_from,
    taken_slots,
    token_floor,
    usage_by_key,
)

DEFAULT_LOCK_TIMEOUT = 10.0


def _recovery(path: Path) -> list[str]:
    return [f"Move the file aside (mv {path} {path}.bad) and run `netra-rm cleanup --force` to start an "
            "empty ledger; active allocations recorded in it are forgotten (fencing tokens continue above "
            "any it handed out).",
            "Or point netra-rm at another ledger with --ledger PATH or NETRA_RM_LEDGER."]


def _os_reason(exc: OSError) -> str:
    return exc.strerror or exc.__class__.__name__


class _Document:
    """The ledger file's content, parsed and checked."""

    def __init__(self, *, ledger_id: str | None = None, origin: str | None = None, counter: int = 0,
                 journal_seq: int = 0, allocations: Sequence[Allocation] = (), waiters: Sequence[Waiter] = (),
                 pools: Sequence[PoolRecord] = ()) -> None:
        self.ledger_id = ledger_id
        self.origin = origin
        self.counter = counter
        self.journal_seq = journal_seq
        self.allocations = {a.id: a for a in allocations}
        self.waiters = list(waiters)
        self.pools = {p.key: p for p in pools}

    def encode(self) -> bytes:
        head = json.dumps({"schema_version": SCHEMA_VERSION, "ledger_id": self.ledger_id, "origin": self.origin,
                           "fencing_counter": self.counter, "journal_seq": self.journal_seq,
                           "waiters": [w.to_dict() for w in self.waiters],
                           "pools": [p.to_dict() for p in self.pools.values()]}, separators=(",", ":"))
        return (head[:-1] + ',"allocations":[' + ",".join(a.json for a in self.allocations.values())
                + "]}").encode()


class FileLedger(Ledger):
    """A ledger in a local JSON file, safe across processes on one host."""

    backend = "file"
    shared = False

    def __init__(self, path: str | Path, *, journal_max_bytes: int = DEFAULT_MAX_BYTES,
                 journal_sync: bool = False, group_shared: bool = False,
                 lock_timeout: float = DEFAULT_LOCK_TIMEOUT, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path).expanduser().absolute()
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.wait_dir = self.path.with_name(self.path.name + ".wait")
        self.location = str(self.path)
        self.group_shared = group_shared
        self.lock_timeout = lock_timeout
        self.clock = clock
        self.journal = Journal(self.path.with_name(self.path.name + ".journal"), max_bytes=journal_max_bytes,
                               sync=journal_sync, group_shared=group_shared)
        #: how the configuration scopes pools, for upgrading a schema-1 file (not needed:
        #: on the file ledger every key belongs to this machine)
        self.scope_of: ScopeOf = host_scoped
        # the bytes last read or written and the document they hold: an unchanged file is
        # not parsed again (compared byte for byte, so another writer is always seen)
        self._cache: tuple[bytes, _Document] | None = None
        self._swept = False  # stale temp files of killed writers removed yet?
        self._dir_checked = False

    # -- the directory -------------------------------------------------------------------

    def _prepare_dir(self) -> None:
        if self._dir_checked:
            return
        directory = self.path.parent
        if directory.exists():
            check_parent(directory)
        else:
            ensure_private_dir(directory, group_shared=self.group_shared)
        self._dir_checked = True

    # -- locking -------------------------------------------------------------------------

    def _open_lock(self) -> int:
        self._prepare_dir()
        try:
            return open_private(self.lock_path, os.O_RDWR | os.O_CREAT, group_shared=self.group_shared)
        except UnsafePathError:
            raise
        except OSError as exc:
            raise LedgerError(f"cannot open the ledger lock {self.lock_path}: {_os_reason(exc)}.",
                              remediation=["Check that the directory exists and you may write to it, or "
                                           "use another ledger with --ledger PATH."]) from None

    @contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        fd = self._open_lock()
        try:
            self._acquire(fd, mode)
            yield
        finally:
            os.close(fd)  # closing releases the lock; the lock file stays

    def _acquire(self, fd: int, mode: int) -> None:
        """Take the lock, waiting at most the lock timeout (or what is left of the
        command's ``--timeout``); past it, :class:`LedgerBusyError` naming the holder."""
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        limit = deadline.remaining(self.lock_timeout)
        end = time.monotonic() + limit
        pause = 0.0005
        # most waits are short (a transaction holds the lock for about a millisecond):
        # poll briefly, then hand the rest of the wait to a blocking flock in a thread
        while time.monotonic() + pause < min(end, time.monotonic() + 0.02):
            time.sleep(pause)
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pause = min(pause * 2, 0.005)
        if not _blocking_flock(fd, mode, end - time.monotonic()):
            raise self._busy(limit)

    def _busy(self, waited: float) -> LedgerBusyError:
        holder = lock_holder(self.lock_path)
        who = f"process {holder[0]} ({holder[1]})" if holder else "another process"
        return LedgerBusyError(
            f"the ledger {self.path} is locked by {who}; gave up after waiting {waited:g}s.",
            remediation=[f"If {who} is stuck, stop it (kill {holder[0]})" if holder else
                         "Find the stuck process with: grep FLOCK /proc/locks",
                         "Or wait longer: NETRA_RM_LOCK_TIMEOUT=SECONDS (default 10)."])

    # -- reading -------------------------------------------------------------------------

    def _read_document(self) -> _Document:
        self._prepare_dir()
        try:
            fd = os.open(self.path, os.O_RDONLY | NOFOLLOW | CLOEXEC)
        except FileNotFoundError:
            return _Document()
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise LedgerError(f"the ledger {self.path} is a symbolic link; netra-rm refuses to follow it.",
                                  remediation=["Replace the link with a real file, or use --ledger PATH."]
                                  ) from None
            raise LedgerError(f"cannot read the ledger {self.path}: {_os_reason(exc)}.",
                              remediation=["Check the file's owner and permissions (it should be yours, "
                                           "mode 0600)."]) from None
        try:
            check_owned_file(fd, self.path, group_shared=self.group_shared)
            chunks = [os.read(fd, 1 << 16)]
            while chunks[-1]:
                chunks.append(os.read(fd, 1 << 20))
        except OSError as exc:
            if isinstance(exc, LedgerError):
                raise
            raise LedgerError(f"cannot read the ledger {self.path}: {_os_reason(exc)}.") from None
        finally:
            os.close(fd)
        raw = b"".join(chunks)
        cached = self._cache
        if cached is not None and cached[0] == raw:
            return cached[1]
        document = self._parse(raw)
        self._cache = (raw, document)
        return document

    def _corrupt(self, why: str) -> LedgerError:
        return LedgerError(f"the ledger {self.path} is corrupt: {why}; it was left untouched.",
                           remediation=_recovery(self.path))

    def _parse(self, raw: bytes) -> _Document:
        try:
            data: Any = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise self._corrupt(f"it cannot be parsed ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("allocations", []), list):
            raise self._corrupt("it is not a netra-rm ledger")
        version = data.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise self._corrupt("it has no schema version")
        if version > SCHEMA_VERSION:
            raise LedgerError(f"the ledger {self.path} was written by a newer netra-rm (schema version "
                              f"{version}, this one reads up to {SCHEMA_VERSION}).",
                              remediation=["Upgrade netra-rm, or use another ledger with --ledger PATH."])
        try:
            data = upgrade(data, shared=False, scope_of=self.scope_of)
            return _decode(data)
        except RecordError as exc:
            raise self._corrupt(str(exc)) from None

    def read(self, scope: Scope | None = None) -> Snapshot:
        """The ledger as last committed. No lock is needed: a writer replaces the file in
        one rename, so a reader sees the old ledger or the new one, whole."""
        return self._snapshot(self._read_document())

    def _snapshot(self, doc: _Document) -> Snapshot:
        now = self.clock()
        allocations = list(doc.allocations.values())
        due = [a for a in allocations
               if a.expires_at <= now or (a.lease_expires_at is not None and a.lease_expires_at <= now)]
        return Snapshot(now=now, counter=doc.counter, usage=usage_by_key(allocations),
                        taken=taken_slots(allocations), pools=dict(doc.pools), waiters=list(doc.waiters),
                        known=dict(doc.allocations), due=due, host_allocations=allocations, complete=True,
                        ledger_id=doc.ledger_id, origin=doc.origin, journal_seq=doc.journal_seq)

    # -- writing -------------------------------------------------------------------------

    def _write(self, doc: _Document) -> None:
        payload = doc.encode()
        directory = self.path.parent
        if not self._swept:
            self._sweep_temp_files()
        tmp: Path | None = None
        try:
            fd, tmp = create_exclusive_temp(directory, f".{self.path.name}.{os.getpid()}.",
                                            mode=0o660 if self.group_shared else 0o600)
            try:
                write_all(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
            if self.path.is_symlink():
                raise LedgerError(f"the ledger {self.path} is a symbolic link; netra-rm refuses to replace it.",
                                  remediation=["Replace the link with a real file, or use --ledger PATH."])
            created = not self.path.exists()
            os.replace(tmp, self.path)
            self._cache = (payload, doc)
        except OSError as exc:
            if tmp is not None:
                unlink_quietly(tmp)
            if isinstance(exc, LedgerError):
                raise
            raise LedgerError(f"cannot write the ledger {self.path}: {_os_reason(exc)}; the previous ledger "
                              "is unchanged.", remediation=["Free disk space or fix the directory's "
                                                            "permissions, then try again."]) from None
        except BaseException:
            if tmp is not None:
                unlink_quietly(tmp)
            raise
        # The rename itself is atomic for every process on this host. Only the first one is
        # made durable with a directory fsync: after a power loss every owner process is
        # gone anyway, so an older (still valid) ledger loses nothing that still runs.
        if created:
            fsync_dir(directory)

    def _sweep_temp_files(self) -> None:
        """Remove temp files that writers killed before their replace left behind (once
        per instance, under the lock, so no live writer is using one); only our own."""
        self._swept = True
        prefix, suffix = f".{self.path.name}.", ".tmp"
        try:
            names = os.listdir(self.path.parent)
        except OSError:
            return
        for name in names:
            if not (name.startswith(prefix) and name.endswith(suffix)):
                continue
            pid = name[len(prefix):].split(".", 1)[0]
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            path = self.path.parent / name
            try:
                st = os.lstat(path)
                if st.st_uid != os.geteuid():
                    continue
                os.kill(int(pid), 0)
            except ProcessLookupError:
                unlink_quietly(path)
            except OSError:
                pass

    @contextmanager
    def transaction(self, scope: Scope | None = None, *, reset: bool = False) -> Iterator[Txn]:
        """Hold the lock, read, let the caller change the state, write it back if changed.

        The changes' events go to the journal first, then the ledger is replaced (the
        commit point; see :mod:`netra_rm.ledger.journal`). If the ledger cannot be
        written, the journal is cut back and the error raised. (``reset`` matters to
        server ledgers; a file that cannot be read is moved aside by hand, see the README.)
        """
        with self._locked(fcntl.LOCK_EX):
            doc = self._read_document()  # a corrupt file is never overwritten, even with reset
            fresh = doc.ledger_id is None
            txn = Txn(self._snapshot(doc))
            if fresh:
                txn.raise_counter(token_floor(txn.now))
            yield txn
            changes = txn.changes
            if not changes and not (reset and fresh):
                return
            new = _Document(ledger_id=doc.ledger_id or uuid.uuid4().hex, origin=doc.origin or "new",
                            counter=txn.counter, journal_seq=doc.journal_seq, allocations=txn.allocations(),
                            waiters=txn.waiters, pools=list(txn.pools().values()))
            mark = None
            if changes.events:
                committed = list(doc.allocations.values())

                def checkpoint(reason: str) -> dict[str, Any]:
                    return checkpoint_record(after=doc.journal_seq, now=txn.now, reason=reason, counter=doc.counter,
                                             allocations=committed)

                mark, new.journal_seq = self.journal.append(doc.journal_seq, changes.events, checkpoint)
            try:
                self._write(new)
            except BaseException:
                if mark is not None:
                    self.journal.undo(mark)
                raise

    # -- the journal and waking waiters ----------------------------------------------------

    def journal_lines(self) -> tuple[Snapshot, list[bytes], list[str]]:
        """The ledger and every journal line (oldest file first), read together under a
        shared lock so they agree; and the journal files read."""
        with self._locked(fcntl.LOCK_SH):
            snapshot = self._snapshot(self._read_document())
            lines, files = self.journal.read_lines()
        return snapshot, lines, files

    def journal_tail(self, limit: int) -> tuple[int, list[bytes]]:
        with self._locked(fcntl.LOCK_SH):
            seq = self._committed_seq()
            lines = self.journal.tail(limit)
        return seq, lines

    def _committed_seq(self) -> int:
        """The ledger's ``journal_seq``, read from the head of the file: the allocations,
        written last, need not be parsed for it."""
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return 0
        except OSError:
            return self._read_document().journal_seq
        cut = raw.find(b',"allocations":[')
        if cut > 0:
            try:
                head = json.loads(raw[:cut] + b"}")
                seq = head.get("journal_seq")
                if head.get("schema_version") == SCHEMA_VERSION and type(seq) is int and seq >= 0:
                    return seq
            except (ValueError, UnicodeDecodeError, AttributeError):
                pass
        return self._read_document().journal_seq

    def waiter_channel(self, waiter_id: str) -> wake.WakeChannel | None:
        """A FIFO the waiter ``waiter_id`` sleeps on; None where FIFOs cannot be made
        (the waiter then polls)."""
        if not is_id(waiter_id):
            raise ValueError(f"not a waiter id: {waiter_id!r}")
        ensure_private_dir(self.wait_dir, group_shared=self.group_shared)
        try:
            return wake.WakeChannel(self.wait_dir, waiter_id)
        except UnsafePathError:
            raise
        except OSError:
            return None

    def notify(self, waiter_ids: Sequence[str]) -> None:
        """Wake these waiters: capacity was freed or the queue ahead of them moved."""
        wake.notify(self.wait_dir, [w for w in waiter_ids if is_id(w)])

    def forget_waiters(self, waiter_ids: Sequence[str]) -> None:
        """Remove the FIFOs of waiters that died in the queue."""
        wake.remove_channels(self.wait_dir, [w for w in waiter_ids if is_id(w)])


def _decode(data: dict[str, Any]) -> _Document:
    """A schema-2 document, every record checked (:class:`RecordError` names the bad one)."""
    def number(key: str) -> int:
        value = data.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (1 << 62):
            raise RecordError(f"{key} must be a whole number between 0 and 2^62, got {value!r}")
        return value

    allocations = records_from(data.get("allocations", []), Allocation.from_dict, "allocations")
    waiters = records_from(data.get("waiters", []), Waiter.from_dict, "waiters")
    pools = records_from(data.get("pools", []), PoolRecord.from_dict, "pools")
    ids = [a.id for a in allocations]
    if len(set(ids)) != len(ids):
        raise RecordError("an allocation id appears twice")
    ledger_id = data.get("ledger_id")
    if ledger_id is not None and not isinstance(ledger_id, str):
        raise RecordError("ledger_id must be text")
    return _Document(ledger_id=ledger_id, origin=data.get("origin") if isinstance(data.get("origin"), str) else None,
                     counter=number("fencing_counter"), journal_seq=number("journal_seq"),
                     allocations=allocations, waiters=waiters, pools=pools)


# -- waiting for the lock ------------------------------------------------------------------------

def _blocking_flock(fd: int, mode: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for the lock in a helper thread (a blocking
    ``flock`` cannot be interrupted otherwise without signals); True when taken. If the
    wait is abandoned, the helper lets go of the lock as soon as it gets it."""
    if timeout <= 0:
        return False
    mine = os.dup(fd)
    done = threading.Event()
    state = {"abandoned": False, "taken": False}
    guard = threading.Lock()

    def wait() -> None:
        try:
            fcntl.flock(mine, mode)
        except OSError:
            done.set()
            os.close(mine)
            return
        with guard:
            if state["abandoned"]:
                fcntl.flock(mine, fcntl.LOCK_UN)
            else:
                state["taken"] = True
        os.close(mine)
        done.set()

    threading.Thread(target=wait, name="netra-rm-flock", daemon=True).start()
    done.wait(timeout)
    with guard:
        if state["taken"]:
            return True  # the lock belongs to the open file description, which fd shares
        state["abandoned"] = True
        return False


def lock_holder(lock_path: Path) -> tuple[int, str] | None:
    """The pid and command line of the process holding ``lock_path``'s flock, from
    ``/proc/locks`` (None where that cannot be told)."""
    try:
        st = os.stat(lock_path)
        with open("/proc/locks", "rb") as f:
            table = f.read().decode(errors="replace")
    except OSError:
        return None
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in table.splitlines():
        fields = line.split()
        if "->" in fields:  # a waiter, not a holder
            continue
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
            try:
                pid = int(fields[4])
            except ValueError:
                continue
            return pid, _command_line(pid)
    return None


def _command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = [w.decode(errors="replace") for w in f.read().split(b"\0") if w]
    except OSError:
        return "command unknown"
    text = " ".join(words)
    from netra_rm.redact import mask_text

    text = mask_text(text)
    return text if len(text) <= 120 else text[:117] + "..."
