"""The Redis ledger: ``--ledger redis://[:PASSWORD@]HOST[:PORT][/DB][?ledger=NAME]``.

The ledger lives in keys of its own, not in one document (the key layout is in
:mod:`netra_rm.ledger.redis_scripts`): a record per allocation, the usage of every pool key
kept current with each grant and release, an index of what falls due by time and one of
the allocations of each host, the queue and the registered pools. What a change reads and
writes is the part it concerns, so its cost does not grow with the number of allocations
held. Every change is one Lua script, so it happens whole or not at all.

Two ways to change it:

* **fast paths**, when nobody waits and no transaction holds the ledger: a grant
  (:meth:`RedisLedger.fast_grant`) or a release (:meth:`RedisLedger.fast_release`) in one
  call, journaled in the same script. The grant's decision is the arithmetic of
  :func:`netra_rm.core.admission.admit` (a test runs random requests through both);
* **transactions** for everything else (the queue, reclaiming, leases, pools): take the
  ledger's lock and read what the scope needs in one call, let the engine decide, and
  commit in another. The commit checks that the ledger's version did not move since the
  read and that the lock is still ours (or nobody's), so a holder that stalled past the
  lock's expiry (``lock_ttl``) has its late change refused rather than applied over
  someone else's. The lock is a token in a list: a waiter blocks in ``BLMOVE`` and Redis
  hands the token to the longest-waiting one, so waiters neither poll nor spin; the
  holder's name expires, so a holder killed mid-transaction blocks the others at most
  ``lock_ttl``.

Time is the server's (``TIME``): leases and expiries are judged by one clock whatever the
hosts' clocks say. Each change carries a request id recorded with it for an hour: when the
connection breaks after a change was sent, the client reconnects, kills the old session
(so nothing of it can still arrive), and asks whether the change happened; it then
reports the truth. A fresh ledger's fencing counter starts from the server's clock
(:func:`netra_rm.records.token_floor`), so a ledger the server lost never repeats a token.
A server that may evict keys (``maxmemory-policy`` other than ``noeviction``) is refused;
one without persistence is named in the warnings ``status`` shows. A ledger of schema 1
(one document in the hash ``netra-rm:{NAME}:ledger``) is upgraded in one step on first use,
its journal kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from netra_rm import deadline
from netra_rm.errors import LedgerError, LedgerLostError, UsageError
from netra_rm.ledger import redis_scripts as scripts
from netra_rm.ledger.base import (
    EVERYTHING,
    GRANT_FILLED,
    SCHEMA_VERSION,
    SERVER_FILLED,
    Changes,
    GrantPlan,
    Scope,
    SlotsBelow,
    Snapshot,
    Txn,
    grant_template,
    handed_in,
    wake_payloads,
    whole_amounts,
)
from netra_rm.ledger.journal import allocation_record, encode_line, event_record, limits_record
from netra_rm.ledger.redis_wire import Packed, ReplyError, ReplyLost, Wire
from netra_rm.ledger.server import ServerLedger, ServerOptions
from netra_rm.ledger.upgrade import upgrade
from netra_rm.records import (
    Allocation,
    Capacity,
    PoolRecord,
    RecordError,
    Usage,
    Waiter,
    taken_slots,
    token_floor,
    usage_by_key,
)
from netra_rm.redact import MASK

#: How a Redis ledger URL is written (a password goes in the userinfo, before the host).
_URL_FORMS = ["Give --ledger redis://HOST[:PORT][/DB][?ledger=NAME] or "
              "unix:///path/to/redis.sock[?db=N&ledger=NAME], with a password, if any, as the URL's userinfo."]
_BLOCK = 0.5  # seconds a transaction blocks for the lock before it checks the holder's expiry
_MOST_DUE = 500  # allocations fallen due read by one transaction (the rest by the next ones)
_REQUEST_TTL_MS = 3_600_000  # how long a change's request id is kept for a client that lost the reply
_WAKE_TTL_MS = 60_000
_WAKE_PAYLOAD_LIMIT = 64 * 1024  # a wake-up carries a handed allocation up to this size


@dataclass
class _Read:
    """A snapshot as the server sent it, before it is trusted."""

    exists: bool
    ledger_id: str | None
    origin: str | None
    counter: int
    seq: int
    version: str
    schema1: str | None  # the version of a schema-1 document waiting to be upgraded
    snapshot: Snapshot
    journal: tuple[list[bytes], list[bytes]] = ([], [])


class RedisLedger(ServerLedger):
    """A ledger in Redis, shared by every host that reaches the server.

    ``clock`` stands in for the server's clock (tests move time with it); None reads the
    server's ``TIME``.
    """

    backend = "Redis"
    wakes_at_commit = True  # the commit script wakes the waiters it serves
    widens = True  # the begin script finds a release's keys as it locks

    def __init__(self, url: str, *, state_dir: Path | None = None, options: ServerOptions | None = None,
                 group_shared: bool = False, clock: Callable[[], float] | None = None) -> None:
        super().__init__(url, state_dir=state_dir, options=options, group_shared=group_shared)
        self.prefix = f"netra-rm:{{{self.name}}}:"  # one hash slot for every key of this ledger
        try:
            self._wire = Wire(self.server_url, self.options)
        except ValueError as exc:
            raise UsageError(f"the Redis ledger URL {self.location} is malformed: {exc}.",
                             remediation=_URL_FORMS) from None
        self.clock = clock
        self._client = os.urandom(6).hex()
        self._serial = itertools.count(1)
        self._hand = self.key(f"hand:{self._client}")
        self._mutex = threading.RLock()  # one connection, shared by this process's threads
        self._checked = False
        self._warnings: tuple[str, ...] = ()
        self._parsed: dict[bytes, Allocation] = {}
        self._shapes: dict[Any, _GrantShape] = {}
        self._translated = _Translated(self)
        self._heads: dict[str, Packed] = {}  # each script's call as far as it is always the same
        self._spare_wires: list[Wire] = []
        #: a one-call path just found the lock held: the transaction that follows waits
        #: for it from its first call
        self._lock_held = False

    def key(self, name: str) -> str:
        return self.prefix + name

    # -- errors ----------------------------------------------------------------------------

    def _errors(self) -> _Translated:
        """Turn every connection problem and error reply into a :class:`LedgerError`
        naming this ledger (its URL with the password masked) and what to do."""
        return self._translated

    def _translate(self, exc: BaseException) -> LedgerError | None:
        """The :class:`LedgerError` ``exc`` means (None: let it through as it is)."""
        if isinstance(exc, LedgerError):
            return None
        if isinstance(exc, ReplyError):
            return self._reply_error(str(exc))
        if isinstance(exc, ReplyLost):
            if exc.timed_out:
                return self.error(f"did not answer within {self.options.io_timeout:g}s.",
                                  remediation=self._reach_steps())
            return self.error(f"cannot be reached: {exc}.", remediation=self._reach_steps())
        if isinstance(exc, TimeoutError):
            return self.error(f"did not answer within {self.options.io_timeout:g}s; this command changed nothing.",
                              remediation=self._reach_steps())
        if isinstance(exc, (OSError, ConnectionError)):
            reason = getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
            return self.error(f"cannot be reached: {reason}.", remediation=self._reach_steps())
        if isinstance(exc, ValueError):
            return self.error(f"has a malformed URL: {exc}.", remediation=_URL_FORMS)
        return None

    def _reply_error(self, text: str) -> LedgerError:
        if text.startswith("CORRUPT "):
            return self.error(text[len("CORRUPT "):], corrupt=True)
        wants_password = text.startswith("NOAUTH") or "unauthenticated" in text
        if wants_password and self._wire.target.password is None:
            return self._password_wanted()
        if wants_password or text.startswith(("WRONGPASS", "NOPERM")) or "invalid password" in text:
            return self.error(f"refused the credentials: {text}.",
                              remediation=["Check the user and password in the ledger URL.",
                                            *self._password_check()])
        return self.error(f"answered with an error: {text}.", remediation=self._reach_steps())

    def _password_wanted(self) -> LedgerError:
        parts = urlsplit(self.location)
        user = parts.netloc.rpartition("@")[0].partition(":")[0] if "@" in parts.netloc else ""
        host = parts.netloc.rpartition("@")[2]
        with_password = urlunsplit((parts.scheme, f"{user}:{MASK}@{host}", parts.path, parts.query, ""))
        return self.error("is on a server that wants a password (its requirepass), and the ledger URL gives none.",
                          remediation=[f"Put the password in the ledger URL where {MASK} stands, percent-encoded: "
                                       f"--ledger '{with_password}' (or NETRA_RM_LEDGER; with ACL users, the user "
                                       "goes before the colon).", *self._password_check()])

    def _password_check(self) -> list[str]:
        t = self._wire.target
        where = f"-s {t.socket_path}" if t.socket_path else f"-h {t.host} -p {t.port}"
        user = f" --user {t.username}" if t.username else ""
        return [f"Check a password with `redis-cli {where}{user} --askpass ping`, which asks for it: PONG means "
                "the server takes it."]

    def _reach_steps(self) -> list[str]:
        socket_path = urlsplit(self.location).path if self.location.startswith("unix:") else None
        probe = f"redis-cli -s {socket_path} ping" if socket_path else f"redis-cli -u '{self.location}' ping"
        return [f"Check that the Redis server is running and reachable from this host: {probe}",
                "Or use another ledger: --ledger PATH|URL or NETRA_RM_LEDGER."]

    def persistence_advice(self) -> list[str]:
        return ["Turn on persistence on the Redis server (appendonly yes) so that a restart keeps the ledger."]

    # -- talking to the server ---------------------------------------------------------------

    def _eval(self, script: scripts.Script, args: Sequence[Any], *, before: Sequence[Sequence[Any]] = (),
              extra_timeout: float = 0.0, idempotent: bool = True) -> Any:
        """Run one of our scripts (after ``before``, in the same round trip); load the
        scripts first if the server does not know them (a restart empties its cache)."""
        head = self._heads.get(script.sha)
        if head is None:
            head = self._heads[script.sha] = Packed(("EVALSHA", script.sha, 0, self.prefix))
        command = (head, *args)
        reply = self._wire.many([*before, command], extra_timeout=extra_timeout, idempotent=idempotent)[-1]
        if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
            loads = [("SCRIPT", "LOAD", s.body) for s in scripts.ALL]
            replies = self._wire.many([*loads, command], idempotent=idempotent)
            reply = next((r for r in replies if isinstance(r, ReplyError)), replies[-1])
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def _change(self, script: scripts.Script, args: Sequence[Any], lookup: Sequence[Any], *,
                before: Sequence[Sequence[Any]] = (), extra_timeout: float = 0.0) -> tuple[Any, Any]:
        """Run a script that changes the ledger (after ``before``, in the same round trip):
        (its reply, None). When the reply is lost, (None, what ``lookup`` finds of it: None
        when the change did not happen)."""
        try:
            return self._eval(script, args, before=before, extra_timeout=extra_timeout, idempotent=False), None
        except ReplyLost as lost:
            return None, self._outcome(lookup, lost)

    def _outcome(self, lookup: Sequence[Any], lost: ReplyLost) -> Any:
        """What became of a change whose reply was lost: kill the connection it was sent on
        (anything of it still on its way is then dropped), then look for its record
        (``lookup``). Tries a few times within the reply timeout; when the server cannot
        be asked, the answer is unknown, and the error says so."""
        end = time.monotonic() + max(1.0, deadline.remaining(self.options.io_timeout))
        while True:
            commands: list[Sequence[Any]] = []
            if lost.client_id is not None:
                commands.append(("CLIENT", "KILL", "ID", lost.client_id))
            commands.append(lookup)
            try:
                replies = self._wire.many(commands)
                found = replies[-1]
                if isinstance(found, ReplyError):
                    raise found
                return found
            except (ReplyError, OSError, ConnectionError) as exc:
                if time.monotonic() >= end or deadline.passed():
                    why = "did not answer" if lost.timed_out else "dropped the connection"
                    raise self.error(f"{why} after this command's change was sent, and could not be asked "
                                     f"whether it was written ({exc}; looked for: {lookup[-1]}).",
                                     remediation=["Look with `netra-rm status` whether it was; release what "
                                                  "this command was granted, if it was.",
                                                  *self._reach_steps()]) from None
                time.sleep(0.01)

    def _request(self, request_id: str) -> tuple[str, str]:
        """Where a change records its request id's outcome."""
        return ("GET", self.key(f"req:{request_id}"))

    def _prepare(self) -> None:
        """Once per process: refuse a server that may evict keys; note one without persistence."""
        if self._checked:
            return
        replies = self._wire.many([("INFO", "memory"), ("INFO", "persistence"), ("CONFIG", "GET", "save")])
        info = b"\n".join(r for r in replies[:2] if isinstance(r, bytes)).decode(errors="replace")
        fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        policy = fields.get("maxmemory_policy", "").strip()
        if policy and policy != "noeviction":
            raise self.error(
                f"is on a server that may evict keys (maxmemory-policy {policy}): a ledger whose keys can be evicted "
                "forgets allocations and could grant them twice, so it is refused.",
                remediation=[f"Set maxmemory-policy noeviction on the server ({self._cli()} CONFIG SET "
                             "maxmemory-policy noeviction, and in redis.conf), or give the ledger a Redis of its own."])
        save = replies[2]
        saves = save[1].decode(errors="replace").strip() if isinstance(save, list) and len(save) == 2 else None
        if fields.get("aof_enabled", "").strip() == "0" and saves == "":
            self._warnings = (f"the Redis server of the ledger {self.location} keeps no persistence (appendonly no, "
                              "no save points): a restart loses the ledger, and netra-rm then refuses it until "
                              "`netra-rm cleanup --force`. Turn on appendonly yes.",)
        self._checked = True

    def _cli(self) -> str:
        t = self._wire.target
        return f"redis-cli -s {t.socket_path}" if t.socket_path else f"redis-cli -h {t.host} -p {t.port}"

    def health(self) -> tuple[str, ...]:
        with self._mutex, self._errors():
            self._prepare()
        return self._warnings

    # -- reading ---------------------------------------------------------------------------

    def _now(self) -> str:
        return "" if self.clock is None else repr(float(self.clock()))

    def _read_args(self, scope: Scope, mode: str, holder: str = "") -> list[Any]:
        keys = sorted(scope.keys)
        ids = list(dict.fromkeys(scope.ids))
        return [mode, holder, self._ttl_ms(), self._hand, self._now(), "1" if scope.everything else "",
                scope.sweep_host or "", _MOST_DUE, len(keys), *keys, len(ids), *ids, "1" if scope.widen else ""]

    def _decode(self, reply: list[Any], scope: Scope) -> _Read:
        """The server's reply to a read as a :class:`_Read`; every record checked."""
        meta = [None if v is None else v.decode() for v in reply[1]]
        schema, ledger_id, origin, counter, seq, version = meta
        now = float(reply[3])
        if schema is not None and schema != str(SCHEMA_VERSION):
            if schema.isdigit() and int(schema) > SCHEMA_VERSION:
                raise LedgerError(f"the {self.backend} ledger at {self.location} was written by a newer netra-rm "
                                  f"(schema version {schema}, this one reads up to {SCHEMA_VERSION}).",
                                  remediation=["Upgrade netra-rm on this host."])
            raise RecordError(f"its schema version {schema!r} is not one netra-rm knows")
        keys = [k.decode() for k in reply[4]]
        usage: dict[str, Usage] = {}
        taken: dict[str, Any] = {}
        pools: dict[str, PoolRecord] = {}
        for key, text, members, pool in zip(keys, reply[5], reply[6], reply[7]):
            if text:
                usage[key] = _usage(text, key)
            if isinstance(members, int):  # the lowest free index: every one below it is taken
                if members:
                    taken[key] = SlotsBelow(members)
            elif members:
                taken[key] = {_index(m, key) for m in members}
            if pool:
                record = PoolRecord.from_dict(_json(pool, f"the pool {key}"))
                pools[key] = record
        waiters = [self.parsed_waiter(raw) for raw in reply[8]]
        known: dict[str, Allocation] = {}
        cache, fresh = self._parsed, {}
        for ident, raw in zip(reply[11], reply[12]):
            if raw is None:
                continue  # named but not held, or gone between the index and its record
            allocation = cache.get(raw)
            if allocation is None:
                allocation = Allocation.from_dict(_json(raw, "an allocation"))
            if allocation.id != ident.decode():
                raise RecordError(f"the record filed as allocation {ident.decode()} is {allocation.id}'s")
            fresh[raw] = allocation
            known[allocation.id] = allocation
        if scope.everything or len(cache) > 50_000:
            self._parsed = fresh
        else:
            cache.update(fresh)
        if scope.everything:
            due = [a for a in known.values() if _due(a, now)]
            host = None if scope.sweep_host is None else [a for a in known.values()
                                                          if a.owner.host == scope.sweep_host]
        else:
            due = [known[i] for i in (d.decode() for d in reply[9]) if i in known and _due(known[i], now)]
            host = None if reply[10] is None else [known[i] for i in (h.decode() for h in reply[10]) if i in known]
        snapshot = Snapshot(now=now, counter=_whole(counter, "the fencing counter"), usage=usage, taken=taken,
                            pools=pools, waiters=waiters, known=known, due=due, host_allocations=host,
                            complete=scope.everything, ledger_id=ledger_id, origin=origin,
                            journal_seq=_whole(seq, "the journal's sequence number"), warnings=self._warnings,
                            keys=None if scope.everything else frozenset(keys))
        journal: tuple[list[bytes], list[bytes]] = ([], [])
        if len(reply) > 13:
            journal = (list(reply[13]), list(reply[14]))
        return _Read(exists=ledger_id is not None, ledger_id=ledger_id, origin=origin, counter=snapshot.counter,
                     seq=snapshot.journal_seq, version=version or "0",
                     schema1=None if reply[2] is None else reply[2].decode(), snapshot=snapshot, journal=journal)

    def _checked_read(self, reply: list[Any], scope: Scope) -> _Read:
        try:
            return self._decode(reply, scope)
        except (RecordError, ValueError, UnicodeDecodeError) as exc:
            raise self.error(str(exc), corrupt=True) from None

    def _refuse_if_lost(self, read: _Read) -> None:
        problem = self.fencing_problem(exists=read.exists, ledger_id=read.ledger_id, origin=read.origin,
                                       counter=read.counter)
        if problem is not None:
            raise LedgerLostError(self.scrub(problem[0]), remediation=problem[1])

    def _read(self, scope: Scope, mode: str) -> _Read:
        """A consistent read without the lock (a schema-1 ledger is upgraded first)."""
        with self._mutex:
            with self._errors():
                self._prepare()
                reply = self._eval(scripts.BEGIN, self._read_args(scope, mode))
            read = self._checked_read(reply, scope)
            if read.schema1 is not None:
                with self.transaction(Scope()):
                    pass  # upgrades it
                with self._errors():
                    reply = self._eval(scripts.BEGIN, self._read_args(scope, mode))
                read = self._checked_read(reply, scope)
            self._refuse_if_lost(read)
            self.see_queue(bool(read.snapshot.waiters))
            if read.exists:
                self.memory.note(read.ledger_id, read.counter)
        self.memory.flush()
        return read

    def read(self, scope: Scope = EVERYTHING) -> Snapshot:
        """A consistent snapshot, without the lock."""
        return self._read(scope, "read").snapshot

    def journal_lines(self) -> tuple[Snapshot, list[bytes], list[str]]:
        """Every allocation and every journal line (the rotated list first), read at once."""
        read = self._read(EVERYTHING, "journal")
        rotated, current = read.journal
        names = [f"{self.location} {name}" for name, lines in (("journal.1", rotated), ("journal", current))
                 if lines]
        return read.snapshot, rotated + current, names

    def journal_tail(self, limit: int) -> tuple[int, list[bytes]]:
        with self._mutex:
            with self._errors():
                self._prepare()
                reply = self._eval(scripts.TAIL, [max(1, limit)])
            if reply[0] is None and reply[1] == b"1":
                self._read(Scope(), "read")  # a schema-1 ledger: upgrade it, then read the tail
                with self._errors():
                    reply = self._eval(scripts.TAIL, [max(1, limit)])
        seq = int(reply[0]) if reply[0] is not None and reply[0].isdigit() else 0
        return seq, list(reply[2]) + list(reply[3])

    # -- transactions ----------------------------------------------------------------------

    def _ttl_ms(self) -> int:
        return max(1, int(self.options.lock_ttl * 1000))

    def _begin(self, scope: Scope, holder: str) -> Any:
        """Take the lock and read the scope, in one call; wait for the lock at most the
        lock wait (or what is left of the command's ``--timeout``)."""
        args = self._read_args(scope, "lock", holder)
        limit = deadline.remaining(self.options.lock_wait)
        end = time.monotonic() + limit
        # a one-call path that just found the lock held: wait for its token from the first call
        before, block = self._token_wait(limit) if self._lock_held else ([], 0.0)
        self._lock_held = False
        while True:
            reply = self._eval(scripts.BEGIN, args, before=before, extra_timeout=block)  # it takes a free token
            if reply[0]:
                break
            left = end - time.monotonic()
            if left <= 0:
                raise self.error(f"is busy: other processes held its lock for {limit:g}s without a break.",
                                 remediation=["Try again; if it persists, look for a stuck netra-rm process."])
            before, block = self._token_wait(left)
        return reply

    def _token_wait(self, left: float) -> tuple[list[Any], float]:
        """The command that waits (at most ``left`` seconds, and at most a block) for the
        lock's token to come back into this client's hand, and how long it may block."""
        block = round(max(0.001, min(_BLOCK, left)), 3)
        return [("BLMOVE", self.key("lock"), self._hand, "LEFT", "LEFT", block)], block

    @contextmanager
    def transaction(self, scope: Scope, *, reset: bool = False) -> Iterator[Txn]:
        """Hold the ledger's lock, read the scope, let the caller change it, and commit the
        changes in one step (checked against the version read); see the module."""
        with self._mutex:
            holder = f"{self._client}:{next(self._serial)}"
            with self._errors():
                self._prepare()
                try:
                    reply = self._begin(scope, holder)
                except BaseException:
                    self._abort(holder)  # it may have taken the lock before its reply was lost
                    raise
            try:
                read = self._transaction_read(reply, scope, holder, reset=reset)
                fresh_id, origin, floor = read.ledger_id, read.origin or "new", 0
                problem = self.fencing_problem(exists=read.exists, ledger_id=read.ledger_id, origin=read.origin,
                                               counter=read.counter)
                if problem is not None:
                    if not reset:
                        raise LedgerLostError(self.scrub(problem[0]), remediation=problem[1])
                    fresh_id, origin = None, "reset"
                    floor = max(self.memory.counter, read.counter)
                    self.memory.forget()
                starting = fresh_id is None
                txn = Txn(read.snapshot)
                txn.changes.request_id = os.urandom(8).hex()
                if starting:
                    txn.raise_counter(max(floor, token_floor(txn.now)))
                yield txn
                self.see_queue(bool(txn.waiters))
                changes = txn.changes
                if changes or (reset and starting):
                    ledger_id = fresh_id or uuid.uuid4().hex
                    self._commit(holder, read, txn, ledger_id=ledger_id, origin=origin,
                                 reset=reset and (changes.reset or starting))
                    self.memory.note(ledger_id, txn.counter)
                else:
                    self._unlock(holder)
                    if read.exists:
                        self.memory.note(read.ledger_id, read.counter)
            except BaseException:
                self._abort(holder)
                raise
        self.memory.flush()

    def _transaction_read(self, reply: list[Any], scope: Scope, holder: str, *, reset: bool) -> _Read:
        """The read of a transaction, trusted; a schema-1 ledger is upgraded first (under
        the lock). With ``reset``, a ledger that cannot be read starts from nothing."""
        try:
            read = self._decode(reply, scope)
        except (RecordError, ValueError, UnicodeDecodeError) as exc:
            if not reset:
                raise self.error(str(exc), corrupt=True) from None
            now = float(reply[3])
            return _Read(exists=False, ledger_id=None, origin=None, counter=0, seq=0,
                         version=(reply[1][5] or b"0").decode(), schema1=None,
                         snapshot=Snapshot(now=now, complete=scope.everything, warnings=self._warnings))
        if read.schema1 is None:
            return read
        self._upgrade(read, holder)
        with self._errors():
            reply = self._begin(scope, holder)  # ours already: taken again at once
        return self._transaction_read(reply, scope, holder, reset=reset)

    def _commit(self, holder: str, read: _Read, txn: Txn, *, ledger_id: str, origin: str, reset: bool,
                seq: int | None = None, upgrading: str = "") -> None:
        changes = txn.changes
        request_id = changes.request_id or os.urandom(8).hex()
        counter = "" if changes.counter is None and not reset else str(txn.counter)
        args: list[Any] = [holder, read.version, request_id, "1", _REQUEST_TTL_MS, self.options.journal_max_lines,
                           repr(txn.now), ledger_id, origin, counter, "" if seq is None else seq,
                           "1" if reset else "", upgrading, self._ttl_ms(), _WAKE_TTL_MS]
        args += _sections(changes, reset=reset)
        with self._errors():
            reply, outcome = self._change(scripts.COMMIT, args, self._request(request_id))
            if reply is None and outcome is None:
                # the reply was lost and the change did not happen (its session is gone):
                # send it once more
                reply, outcome = self._change(scripts.COMMIT, args, self._request(request_id))
                if reply is None and outcome is None:
                    raise self.error("dropped the connection twice while this command's change was sent; the "
                                     "change was not written.", remediation=["Run the command again."])
        if reply is not None and not reply[0]:
            raise self.error(f"changed while this process held its lock (it held it longer than "
                             f"{self.options.lock_ttl:g}s, or the server restarted); this command's change was "
                             "not written.", remediation=["Run the command again."])

    def _unlock(self, holder: str) -> None:
        with self._errors():
            self._eval(scripts.UNLOCK, [holder, self._ttl_ms()])

    def _abort(self, holder: str) -> None:
        try:
            self._eval(scripts.UNLOCK, [holder, self._ttl_ms()])
        except Exception:  # noqa: BLE001 - best effort: the holder's expiry frees the lock anyway
            self._wire.close()

    # -- schema 1 ---------------------------------------------------------------------------

    def _upgrade(self, read: _Read, holder: str) -> None:
        """Turn the schema-1 document into keys, in one step (under the lock): its
        allocations, waiters, counters, id and journal are kept; releases the old code had
        recorded without its lock are applied and journaled by a transaction right after."""
        with self._errors():
            got = self._wire.many([("HMGET", self.key("ledger"), "doc", "version", "id", "origin"),
                                   ("LRANGE", self.key("released"), 0, -1)])
        for reply in got:
            if isinstance(reply, ReplyError):
                raise self._reply_error(str(reply))
        (doc, version, old_id, old_origin), pending = got
        try:
            data = _schema1_document(doc)
            data = upgrade(data, shared=True, scope_of=self.scope_of)
            allocations = [Allocation.from_dict(a) for a in data.get("allocations", [])]
            waiters = [Waiter.from_dict(w) for w in data.get("waiters", [])]
            counter = _whole(data.get("fencing_counter", 0), "the fencing counter")
            seq = _whole(data.get("journal_seq", 0), "the journal's sequence number")
        except (RecordError, ValueError, TypeError, UnicodeDecodeError) as exc:
            raise self.error(f"its schema-1 document cannot be upgraded: {exc}", corrupt=True) from None
        txn = Txn(Snapshot(now=read.snapshot.now, counter=counter))
        txn.changes = Changes(grants=allocations, waiters_put={w.id: w for w in waiters},
                              deltas=usage_by_key(allocations), slots_taken=taken_slots(allocations),
                              counter=counter, request_id=os.urandom(8).hex())
        ledger_id = old_id.decode() if old_id else uuid.uuid4().hex
        origin = old_origin.decode() if old_origin else "new"
        self._commit(holder, read, txn, ledger_id=ledger_id, origin=origin, reset=False, seq=seq,
                     upgrading=(version or b"0").decode())
        releases = _pending_releases(pending)
        if not releases:
            return
        with self._errors():
            reply = self._begin(Scope(ids=tuple(i for i, _ in releases)), holder)
        again = self._checked_read(reply, Scope(ids=tuple(i for i, _ in releases)))
        txn = Txn(again.snapshot)
        for ident, when in releases:
            allocation = txn.find(ident)
            if allocation is not None:
                txn.remove(allocation, event_record("release", allocation, when))
        self._commit(holder, again, txn, ledger_id=ledger_id, origin=origin, reset=False)

    # -- fast paths ------------------------------------------------------------------------

    def fast_grant(self, plan: GrantPlan) -> Allocation | Waiter | None:
        """Grant in one call when nobody waits, no transaction holds the ledger, every
        central pool is registered with this host's capacity (and not draining), and the
        ledger is the one this host knows; the decision is ``admit``'s arithmetic. With
        ``plan.waiter``, when that arithmetic finds no room (queue or not, so the queue's
        rule would refuse too) and nothing is due to be reclaimed, file the waiter in the
        same call and return it as filed. None: take the transaction (also when it does
        not fit without a waiter: the engine then says why)."""
        waiter = plan.waiter
        shape = self._grant_shape(plan)
        if shape is None or (waiter is None and self.queue_seen()):
            return None
        # the hand list (after a wait for the lock) and the queue entry to file
        join: list[Any] = []
        if waiter is not None:
            join = [waiter.id, _inner({k: v for k, v in waiter.to_dict().items() if k not in _WAITER_FILLED}),
                    "" if plan.waiter_lease_seconds is None else repr(float(plan.waiter_lease_seconds)),
                    plan.sweep_host or ""]
        with self._mutex:
            self.memory.load()
            args = [plan.request_id, self._now(), self.memory.ledger_id or "", self.memory.counter,
                    "" if plan.machine_free_mb is None else repr(float(plan.machine_free_mb)), plan.allocation_id,
                    Packed(["", *join]) if join else _NO_JOIN, shape.packed]
            with self._errors():
                self._prepare()
                # the allocation's id (and the waiter's) is the request's record: a lost reply
                # looks for it
                lookup = ("HGET", self.key("alloc"), plan.allocation_id) if waiter is None else \
                    ("EVAL", _LOOKUP_BOTH, 2, self.key("alloc"), self.key("waiters"), plan.allocation_id)
                reply, outcome = self._change(scripts.FAST_GRANT, args, lookup)
                if waiter is not None and reply is not None and not reply[0] and reply[1] == b"lock":
                    # a transaction holds the ledger: wait for it to end, then try again in the
                    # same call (a join need not take the lock itself)
                    before, block = self._token_wait(deadline.remaining(self.options.lock_wait))
                    args[6] = Packed([self._hand, *join])  # ARGV 8-12: this client's hand, given back
                    reply, outcome = self._change(scripts.FAST_GRANT, args, lookup, before=before,
                                                  extra_timeout=block)
            try:
                if reply is None and waiter is not None and outcome is not None:
                    granted, filed = outcome
                    if filed:
                        reply = [2, filed]
                    outcome = granted or None
                if reply is not None and reply[0] == 2:
                    self.see_queue(True)
                    return self.parsed_waiter(reply[1])
                if reply is not None and reply[0]:
                    raw, info = reply[1:]
                    times, taken, named = info.decode().split("\n")
                    token, created, expires, lease = times.split()
                    slots = taken.split("\t") if taken else []
                    names = named.split("\t") if named else []
                    fields = dict(shape.fields)
                    fields.update(id=plan.allocation_id, request_id=plan.request_id, created_at=float(created),
                                  expires_at=float(expires), lease_expires_at=None if lease == "-" else float(lease),
                                  fencing_token=int(token), slots={k: int(i) for k, i in zip(slots[::2], slots[1::2])},
                                  instances={k: json.loads(n) for k, n in zip(names[::2], names[1::2])})
                    allocation = Allocation.assembled(fields)
                    self._remember(raw, allocation)
                elif reply is None and outcome is not None:
                    allocation = Allocation.from_dict(_json(outcome, "the allocation just granted"))
                else:
                    self._note_refusal(reply)
                    return None
            except (RecordError, ValueError, TypeError) as exc:
                raise self.error(str(exc), corrupt=True) from None
            if self.memory.ledger_id is not None:
                self.memory.note(self.memory.ledger_id, allocation.fencing_token)
        self.memory.flush()
        return allocation

    def _grant_shape(self, plan: GrantPlan) -> _GrantShape | None:
        """What the fast grant sends and builds for this plan's request, owner, lease and
        charges, the same from one grant to the next (kept); None when it cannot be sent
        this way (the transaction does it)."""
        request = plan.request
        key = (request, request.adhoc, plan.owner, plan.lease_seconds)
        found = self._shapes.get(key)
        if found is not None and (found.charges is plan.charges or found.charges == plan.charges):
            return found
        if not plan.charges or not whole_amounts(request.memory_mb, request.cpu_units) \
                or any(c.capacity is None for c in plan.charges):
            return None
        template = grant_template(request, plan.owner, plan.charges, ident=_ID_MARK, request_id=_REQUEST_MARK)
        record = _inner({k: v for k, v in template.to_dict().items() if k not in SERVER_FILLED})
        journal = _inner({k: v for k, v in allocation_record(template).items() if k not in SERVER_FILLED}, masked=True)
        head, _, rest = record.partition(_ID_MARK)
        middle, _, tail = rest.partition(_REQUEST_MARK)
        journal_head, _, journal_tail = journal.partition(_ID_MARK)
        if (record.count(_ID_MARK), record.count(_REQUEST_MARK), journal.count(_ID_MARK)) != (1, 1, 1) \
                or _REQUEST_MARK not in rest or _REQUEST_MARK in journal \
                or any("\t" in c.key or "\n" in c.key for c in plan.charges):
            return None  # not what the script fills in (a tab or a newline would break its reply)
        static: list[Any] = [self.options.journal_max_lines, repr(request.duration_minutes * 60.0),
                             "" if plan.lease_seconds is None else repr(float(plan.lease_seconds)),
                             request.memory_mb, request.cpu_units, "1" if request.dedicated else "", plan.owner.host,
                             head, middle, tail, journal_head, journal_tail,
                             _inner(limits_record({c.key: c.capacity for c in plan.charges}), masked=True, braces=True),
                             len(plan.charges)]
        for c in plan.charges:
            cap: Capacity = c.capacity
            static += [c.key, json.dumps(c.key), c.kind, str(cap.instances), _opt(cap.memory_mb), _opt(cap.cpu_units),
                       "1" if cap.dedicated else "", "1" if c.slots else "", _limits(cap, drained=False),
                       "\n".join(json.dumps(n) for n in cap.names), "1" if c.central else ""]
        # every field but those filled in at each grant (see fast_grant)
        fields = {f.name: getattr(template, f.name) for f in dataclasses.fields(Allocation)
                  if f.name not in GRANT_FILLED}
        shape = _GrantShape(charges=plan.charges, packed=Packed(static), fields=fields)
        if len(self._shapes) > 64:
            self._shapes.clear()
        self._shapes[key] = shape
        return shape

    def _note_refusal(self, reply: Any) -> None:
        if reply is not None and len(reply) > 1:
            if reply[1] == b"waiters":
                self.see_queue(True)
            self._lock_held = reply[1] == b"lock"

    def _remember(self, raw: bytes, allocation: Allocation) -> None:
        """Keep a record just written with the allocation it holds: reading it back (a
        release, say) then needs no parsing."""
        if len(self._parsed) > 50_000:
            self._parsed.clear()
        self._parsed[raw] = allocation

    def fast_release(self, ids: Sequence[str], *, events: Mapping[str, Mapping[str, Any]] | None = None
                     ) -> tuple[list[Allocation], list[str]] | None:
        """Release in one call when nobody waits and no transaction holds the ledger (the
        ledger the one this host knows); (released, not found), or None: take the
        transaction."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return [], []
        if self.queue_seen():
            return None
        extras = [_inner(dict(events[i]), masked=True) if events and events.get(i) else "" for i in wanted]
        request_id = os.urandom(8).hex()
        with self._mutex:
            self.memory.load()
            args = [request_id, self._now(), self.memory.ledger_id or "", self.memory.counter, _REQUEST_TTL_MS,
                    self.options.journal_max_lines, len(wanted), *wanted, *extras]
            with self._errors():
                self._prepare()
                reply, outcome = self._change(scripts.FAST_RELEASE, args, self._request(request_id))
            if reply is None:
                if outcome is None:
                    return None  # it did not happen: the transaction does it
                records = [r or None for r in outcome.split(b"\n")]
            elif not reply[0]:
                self._note_refusal(reply)
                return None
            else:
                records = list(reply[1:])
            released: list[Allocation] = []
            missing: list[str] = []
            for ident, raw in zip(wanted, records):
                if not raw:
                    missing.append(ident)
                    continue
                try:
                    # gone from the ledger: so from what this process keeps of it
                    kept = self._parsed.pop(raw) if raw in self._parsed else None
                    released.append(kept or Allocation.from_dict(_json(raw, "an allocation")))
                except (RecordError, ValueError) as exc:
                    raise self.error(str(exc), corrupt=True) from None
        return released, missing

    # -- waking waiters --------------------------------------------------------------------

    def waiter_channel(self, waiter_id: str) -> RedisWakeChannel:
        """A list the waiter blocks on (``BLPOP``); :meth:`notify` pushes into it. Its
        connection is kept for the next waiter of this process."""
        with self._mutex:
            wire = self._spare_wires.pop() if self._spare_wires else Wire(self.server_url, self.options)
        return RedisWakeChannel(self, self.key(f"wake:{waiter_id}"), wire, waiter_id)

    def notify(self, waiter_ids: Sequence[str]) -> None:
        """Wake exactly these waiters (one element in each one's list, at most; best
        effort: a waiter re-checks on a timer anyway)."""
        if not waiter_ids:
            return
        try:
            with self._mutex:
                self._eval(scripts.NOTIFY, [_WAKE_TTL_MS, *waiter_ids])
        except Exception:  # noqa: BLE001
            self._wire.close()

    def give_back(self, wire: Wire) -> None:
        """Keep a wake channel's connection for the next waiter (one is enough)."""
        with self._mutex:
            if self._spare_wires:
                wire.close()
            else:
                self._spare_wires.append(wire)

    def forget_waiters(self, waiter_ids: Sequence[str]) -> None:
        if not waiter_ids:
            return
        try:
            with self._mutex:
                self._wire.many([("DEL", *(self.key(f"wake:{w}") for w in waiter_ids))])
        except Exception:  # noqa: BLE001
            self._wire.close()

    def close(self) -> None:
        with self._mutex:
            self._wire.close()
            for wire in self._spare_wires:
                wire.close()
            self._spare_wires.clear()


class RedisWakeChannel:
    """The receiving end of one waiter's wake-up list, on a connection of its own (a
    blocking pop holds it). A wake-up left in the list when the waiter is done expires
    with the list."""

    def __init__(self, ledger: RedisLedger, key: str, wire: Wire, waiter_id: str) -> None:
        self.ledger = ledger
        self.key = key
        self.waiter_id = waiter_id
        self._wire: Wire | None = wire
        #: the allocation the last wake-up carried (handed to this waiter), if any
        self.handed: Allocation | None = None

    def wait(self, timeout: float) -> bool:
        """Sleep until notified or ``timeout`` seconds pass; True when notified."""
        wire = self._wire
        self.handed = None
        if wire is None:
            return False
        block = round(max(0.01, timeout), 3)
        try:
            reply = wire.many([("BLPOP", self.key, block)], extra_timeout=block)[0]
        except Exception:  # noqa: BLE001 - the waiter's next transaction reports an outage
            wire.close()
            return False
        if isinstance(reply, Exception) or reply is None:
            return False
        self.handed = handed_in(reply[1], self.waiter_id)
        return True

    def close(self) -> None:
        wire, self._wire = self._wire, None
        if wire is not None:
            self.ledger.give_back(wire)

    def __enter__(self) -> RedisWakeChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Translated:
    """The context of a call to the server: an error leaving it becomes the ledger's
    :class:`LedgerError` (see :meth:`RedisLedger._translate`). A class, not a generator:
    it is entered twice per allocate and release."""

    __slots__ = ("ledger",)

    def __init__(self, ledger: RedisLedger) -> None:
        self.ledger = ledger

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            translated = self.ledger._translate(exc)
            if translated is not None:
                raise translated from None


# -- encoding ------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class _GrantShape:
    """A request's fast grant as far as it is the same from one grant to the next: the
    charges it was made for, the arguments sent every time (packed), and the fields of
    the allocation the script does not fill in."""

    charges: tuple[Any, ...]
    packed: Packed
    fields: dict[str, Any]


#: stand-ins for a grant's ids in its kept templates (ids themselves: hex, which JSON
#: leaves as it is, drawn afresh by each process so no text can hold them by chance)
_ID_MARK, _REQUEST_MARK = os.urandom(8).hex(), os.urandom(8).hex()
#: a fast grant's arguments when it joins no queue (see FAST_GRANT: 8-12)
_NO_JOIN = Packed(["", "", "", "", ""])
#: a waiter's fields the one-call join fills in (see FAST_GRANT)
_WAITER_FILLED = frozenset({"since", "fence", "lease_expires_at"})
#: what became of a one-call grant-or-join whose reply was lost: the allocation, the waiter
_LOOKUP_BOTH = "return {redis.call('HGET', KEYS[1], ARGV[1]) or '', redis.call('HGET', KEYS[2], ARGV[1]) or ''}"


def _opt(value: int | None) -> str:
    return "" if value is None else str(value)


def _limits(capacity: Capacity, *, drained: bool) -> str:
    """A pool's limits in short, as the fast grant compares them."""
    names = hashlib.sha1("\n".join(capacity.names).encode()).hexdigest()[:16] if capacity.names else ""
    return (f"{capacity.instances}|{_opt(capacity.memory_mb)}|{_opt(capacity.cpu_units)}|{names}|"
            f"{1 if drained else 0}")


def _inner(data: Mapping[str, Any], *, masked: bool = False, braces: bool = False) -> str:
    """``data`` as compact JSON, without its braces unless ``braces`` (masked as a journal
    line is, when ``masked``)."""
    text = encode_line(data)[:-1].decode() if masked else json.dumps(data, separators=(",", ":"))
    return text if braces else text[1:-1]


def _due_score(allocation: Allocation) -> str:
    due = allocation.expires_at
    if allocation.lease_expires_at is not None:
        due = min(due, allocation.lease_expires_at)
    return repr(due)


def _journal_record(allocation: Allocation) -> str:
    return encode_line(allocation_record(allocation))[:-1].decode()


def _sections(changes: Changes, *, reset: bool) -> list[Any]:
    """The changes as the commit script reads them: each section a count and its items.
    A reset starts from nothing, so only its grants count."""
    out: list[Any] = []
    grants = changes.grants
    removals = [] if reset else changes.removals
    out.append(len(grants))
    for a in grants:
        out += [a.id, a.json, _journal_record(a), _due_score(a), a.owner.host]
    out.append(len(removals))
    for a in removals:
        out += [a.id, a.owner.host]
    out.append(len(changes.updates))
    for a in changes.updates:
        out += [a.id, a.json, _journal_record(a), _due_score(a)]
    if reset:
        deltas, taken, freed = usage_by_key(grants), taken_slots(grants), {}
    else:
        deltas, taken, freed = changes.deltas, changes.slots_taken, changes.slots_freed
    items = [(k, u) for k, u in deltas.items() if u != Usage()]
    out.append(len(items))
    for key, u in items:
        out += [key, u.memory_mb, u.cpu_units, u.instances, u.dedicated]
    for slots in (taken, freed):
        pairs = [(k, i) for k, indices in slots.items() for i in sorted(indices)]
        out.append(len(pairs))
        for key, index in pairs:
            out += [key, index]
    out.append(len(changes.pools))
    for p in changes.pools:
        out += [p.key, json.dumps(p.to_dict(), separators=(",", ":")), _limits(p.capacity, drained=p.drained)]
    out.append(len(changes.waiters_put))
    for w in changes.waiters_put.values():
        out += [w.id, json.dumps(w.to_dict(), separators=(",", ":"))]
    out.append(len(changes.waiters_gone))
    out += sorted(changes.waiters_gone)
    out.append(len(changes.events))
    out += [encode_line(e)[:-1] for e in changes.events]
    out.append(len(changes.wake))  # woken with the commit, in the same call
    for waiter_id, payload in zip(changes.wake, wake_payloads(changes, limit=_WAKE_PAYLOAD_LIMIT)):
        out += [waiter_id, payload]
    return out


# -- decoding ------------------------------------------------------------------------------------

def _json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise RecordError(f"{what} is not JSON: {raw[:60]!r}") from None


def _usage(text: bytes, key: str) -> Usage:
    parts = text.split()
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        raise RecordError(f"the usage of {key} must be four whole numbers, got {text[:60]!r}")
    return Usage.from_list([int(p) for p in parts], f"the usage of {key}")


def _index(member: bytes, key: str) -> int:
    if not member.isdigit():
        raise RecordError(f"an instance of {key} is not an index: {member[:30]!r}")
    return int(member)


def _whole(value: Any, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool):
        raise RecordError(f"{what} must be a whole number, got {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isdigit():
        number = int(value)
    else:
        raise RecordError(f"{what} must be a whole number, got {value!r}")
    if not 0 <= number < (1 << 62):
        raise RecordError(f"{what} must be between 0 and 2^62, got {number}")
    return number


def _due(allocation: Allocation, now: float) -> bool:
    return allocation.expires_at <= now or (allocation.lease_expires_at is not None
                                            and allocation.lease_expires_at <= now)


def _schema1_document(doc: bytes | None) -> dict[str, Any]:
    """The schema-1 document as a dict: plain JSON, or the lines form the old code wrote
    (a marker, the head as JSON, then one allocation per line)."""
    if not doc:
        raise RecordError("the document is empty")
    if doc.startswith(b"#"):
        lines = doc.split(b"\n")
        head = json.loads(lines[1])
        if not isinstance(head, dict):
            raise RecordError("its head is not an object")
        head["allocations"] = [json.loads(line) for line in lines[2:] if line.strip()]
        data = head
    else:
        data = json.loads(doc)
    if not isinstance(data, dict) or data.get("schema_version") != 1:
        raise RecordError("it is not a schema-1 netra-rm ledger")
    return data


def _pending_releases(entries: Any) -> list[tuple[str, float]]:
    """The releases the old code recorded without its lock: (id, when)."""
    found = []
    for entry in entries or ():
        ident, _, when = entry.decode(errors="replace").partition(" ")
        try:
            moment = float(when)
        except ValueError:
            moment = 0.0
        found.append((ident, moment))
    return found


__all__ = ["RedisLedger", "RedisWakeChannel"]
