"""The Redis ledger: ``--ledger redis://[:PASSWORD@]HOST[:PORT][/DB][?ledger=NAME]``.

The whole ledger document lives in one hash (``doc``, ``version``, ``id``, ``origin``);
its journal in a list. A transaction is two round trips:

1. take the ledger lock and read the document (only when its version moved since this
   process last parsed it), in one Lua script;
2. write the document and its journal lines, check the version, and hand the lock on, in
   another; the version check refuses the write of a holder that lost the lock (it held it
   past ``lock_ttl``, or the server restarted), so no stale change is ever written.

The lock is a token in a list: a waiter blocks in ``BLMOVE`` and Redis hands the token to
the longest-waiting one as soon as the holder commits, so waiters neither poll nor burn
CPU while they wait, and sixteen contending processes on two cores keep the lock busy
rather than the scheduler. The holder's name sits beside it with an expiry
(``lock_ttl``): if a holder is killed mid-transaction, the next process takes the lock
once that expiry passes.

It speaks the Redis protocol (RESP2) itself over one socket per process: no driver to
import, nothing retried behind our back, a connect timeout and a reply timeout on every
call (see :class:`netra_rm.ledger.remote.ServerOptions`). A general-purpose client spends
more time packing and parsing than the ledger spends deciding, and that time is spent
while holding the lock.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from netra_rm.core.model import Allocation
from netra_rm.errors import LedgerError, UsageError
from netra_rm.ledger.base import LedgerState
from netra_rm.ledger.remote import RemoteLedger, ServerOptions, Snapshot

# KEYS: 1 ledger hash, 2 lock token list, 3 holder, 4 this acquisition's hand list, 5 journal,
#       6 releases recorded without the lock
# ARGV: 1 holder name, 2 lock ttl (ms), 3 the version this process has parsed
_ACQUIRE = b"""
local tok = redis.call('LPOP', KEYS[4])
if not tok then tok = redis.call('LPOP', KEYS[2]) end
if not tok and redis.call('EXISTS', KEYS[3]) == 1 then return {0} end
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
local meta = redis.call('HMGET', KEYS[1], 'version', 'id', 'origin')
local v = meta[1] or '0'
local doc = false
if v ~= ARGV[3] then doc = redis.call('HGET', KEYS[1], 'doc') end
return {1, v, meta[2], meta[3], redis.call('LLEN', KEYS[5]), doc, redis.call('LRANGE', KEYS[6], 0, -1)}
"""

# KEYS: 1 ledger hash, 2 lock token list, 3 holder, 4 journal, 5 rotated journal,
#       6 releases recorded without the lock
# ARGV: 1 holder name, 2 lock ttl (ms), 3 expected version, 4 document, 5 id, 6 origin,
#       7 "1" to start the journal again, 8 how many recorded releases were applied,
#       9... journal lines
_COMMIT = b"""
local h = redis.call('GET', KEYS[3])
local v = redis.call('HGET', KEYS[1], 'version') or '0'
if (h and h ~= ARGV[1]) or v ~= ARGV[3] then return {0, v} end
local nv = tostring(tonumber(v) + 1)
redis.call('HSET', KEYS[1], 'doc', ARGV[4], 'version', nv, 'id', ARGV[5], 'origin', ARGV[6])
if ARGV[7] == '1' and redis.call('EXISTS', KEYS[4]) == 1 then redis.call('RENAME', KEYS[4], KEYS[5]) end
if tonumber(ARGV[8]) > 0 then redis.call('LTRIM', KEYS[6], tonumber(ARGV[8]), -1) end
local i = 9
while i <= #ARGV do
  local j = math.min(i + 999, #ARGV)
  redis.call('RPUSH', KEYS[4], unpack(ARGV, i, j))
  i = j + 1
end
redis.call('SET', KEYS[3], 'handoff', 'PX', ARGV[2])
if redis.call('LLEN', KEYS[2]) == 0 then redis.call('RPUSH', KEYS[2], 't') end
return {1, nv}
"""

# KEYS: 1 lock token list, 2 holder   ARGV: 1 holder name, 2 lock ttl (ms)
_RELEASE = b"""
local h = redis.call('GET', KEYS[2])
if h and h ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], 'handoff', 'PX', ARGV[2])
if redis.call('LLEN', KEYS[1]) == 0 then redis.call('RPUSH', KEYS[1], 't') end
return 1
"""

# Release without the lock: check each allocation is in the ledger (and not released
# already), and record the release; the next lock holder applies and journals it.
# KEYS: 1 ledger hash, 2 releases recorded without the lock
# ARGV: 1 time, 2 the ledger id this host knows ('' if none), 3 the fencing counter it
#       saw, 4... allocation ids
# Returns {0} when the ledger must be asked under the lock instead: it does not exist,
# is not the one this host knows, or has waiters to wake.
_RELEASE_NOW = rb"""
local meta = redis.call('HMGET', KEYS[1], 'doc', 'id')
local doc = meta[1]
if not doc then return {0} end
if ARGV[2] ~= '' and meta[2] ~= ARGV[2] then return {0} end
local head_end = string.find(doc, '\n', 17, true) or #doc
local head = string.sub(doc, 1, head_end)
if not string.find(head, '"waiters":[]', 1, true) then return {0} end
local counter = tonumber(string.match(head, '"fencing_counter":(%d+)') or '0')
if counter < tonumber(ARGV[3]) then return {0} end
local pending = {}
for _, entry in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  pending[string.match(entry, '^(%S+)')] = true
end
local out = {1}
for i = 4, #ARGV do
  local id = ARGV[i]
  local s = string.find(doc, '\n{"id":"' .. id .. '",', 1, true)
  if s and not pending[id] then
    local e = string.find(doc, '\n', s + 1, true)
    out[#out + 1] = string.sub(doc, s + 1, (e or (#doc + 1)) - 1)
    redis.call('RPUSH', KEYS[2], id .. ' ' .. ARGV[1])
    pending[id] = true
  else
    out[#out + 1] = false
  end
end
return out
"""

_SCRIPTS = {name: (body, hashlib.sha1(body).hexdigest()) for name, body in
            (("acquire", _ACQUIRE), ("commit", _COMMIT), ("release", _RELEASE), ("release_now", _RELEASE_NOW))}
_WAKE_TTL_MS = 60_000
_BLOCK = 0.5  # seconds a waiter blocks for the lock before it checks the holder's expiry


class ReplyError(Exception):
    """An error reply from Redis (``-ERR ...``, ``-NOSCRIPT ...``)."""


@dataclass(frozen=True)
class _Target:
    """Where and how to connect, from a ``redis://``, ``rediss://`` or ``unix://`` URL
    (``unix:///run/redis.sock?db=0``: the server's Unix socket)."""

    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    tls: bool
    socket_path: str | None = None

    @classmethod
    def from_url(cls, url: str) -> _Target:
        parts = urlsplit(url)
        unix = parts.scheme == "unix"
        if unix and not parts.path.startswith("/"):
            raise ValueError("a unix:// ledger needs the socket's path: unix:///path/to/redis.sock?db=0")
        path = "" if unix else parts.path.strip("/")
        query = dict(parse_qsl(parts.query))
        db_text = query.get("db") or path or "0"
        if not db_text.isdigit():
            raise ValueError(f"the database number {db_text!r} is not a number")
        return cls(host=parts.hostname or "localhost", port=parts.port or 6379, db=int(db_text),
                   username=unquote(parts.username) if parts.username else None,
                   password=unquote(parts.password) if parts.password is not None else None,
                   tls=parts.scheme == "rediss", socket_path=parts.path if unix else None)


class _Wire:
    """One connection to Redis speaking RESP2 directly: commands are packed and replies
    parsed here, which costs a fraction of a general-purpose client's time per call and
    keeps the ledger lock short. Used strictly request-reply (or pipelined); closed after
    any error and reopened on the next call. Every connect and every reply is bounded by
    the options' timeouts; nothing is retried."""

    def __init__(self, server_url: str, options: ServerOptions) -> None:
        self.target = _Target.from_url(server_url)
        self.options = options
        self._sock: socket.socket | None = None
        self._reader: Any = None

    def _connect(self) -> None:
        t = self.target
        if t.socket_path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.options.connect_timeout)
                sock.connect(t.socket_path)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection((t.host, t.port), timeout=self.options.connect_timeout)
        try:
            if t.socket_path is None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if t.tls:
                import ssl

                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=t.host)
            sock.settimeout(self.options.io_timeout)
        except BaseException:
            sock.close()
            raise
        self._sock, self._reader = sock, sock.makefile("rb")
        hello: list[tuple[Any, ...]] = []
        if t.password is not None:
            hello.append(("AUTH", t.username, t.password) if t.username else ("AUTH", t.password))
        if t.db:
            hello.append(("SELECT", t.db))
        if hello:
            for reply in self._exchange(hello):
                if isinstance(reply, ReplyError):
                    self.close()
                    raise reply

    def _exchange(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        assert self._sock is not None
        self._sock.sendall(b"".join(_pack(c) for c in commands))
        return [_read_reply(self._reader) for _ in commands]

    def many(self, commands: Sequence[Sequence[Any]], *, extra_timeout: float = 0.0) -> list[Any]:
        """Send ``commands`` in one write and read every reply; an error reply is returned
        as a :class:`ReplyError`, a broken connection or a timeout raises."""
        reused = self._sock is not None
        try:
            return self._send(commands, extra_timeout)
        except (ConnectionError, BrokenPipeError) as exc:
            self.close()
            if not reused or isinstance(exc, TimeoutError):
                raise
            # the connection was closed while idle (a server restart, an idle timeout):
            # send once more on a new one
            try:
                return self._send(commands, extra_timeout)
            except BaseException:
                self.close()
                raise
        except BaseException:
            self.close()
            raise

    def _send(self, commands: Sequence[Sequence[Any]], extra_timeout: float) -> list[Any]:
        if self._sock is None:
            self._connect()
        assert self._sock is not None
        if extra_timeout:  # a blocking command (BLMOVE, BLPOP) takes its own time too
            self._sock.settimeout(self.options.io_timeout + extra_timeout)
        replies = self._exchange(commands)
        if extra_timeout:
            self._sock.settimeout(self.options.io_timeout)
        return replies

    def call(self, *args: Any) -> Any:
        reply = self.many([args])[0]
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def close(self) -> None:
        sock, self._sock, reader, self._reader = self._sock, None, self._reader, None
        for thing in (reader, sock):
            if thing is not None:
                try:
                    thing.close()
                except OSError:
                    pass


def _pack(command: Sequence[Any]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(command)]
    for arg in command:
        if isinstance(arg, bytes):
            raw = arg
        elif isinstance(arg, str):
            raw = arg.encode()
        elif isinstance(arg, float):
            raw = repr(arg).encode()
        else:
            raw = str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def _read_reply(reader: Any) -> Any:
    """One RESP2 reply: bytes, int, None, a list, or a :class:`ReplyError`."""
    line = reader.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("the server closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = reader.read(size + 2)
        if len(data) != size + 2:
            raise ConnectionError("the server closed the connection")
        return data[:-2]
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [_read_reply(reader) for _ in range(count)]
    if kind == b":":
        return int(rest)
    if kind == b"+":
        return rest
    if kind == b"-":
        return ReplyError(rest.decode(errors="replace"))
    raise ConnectionError(f"unexpected reply from the server: {line[:40]!r}")


#: How a Redis ledger URL is written (a password goes in the userinfo, before the host).
_URL_FORMS = ["Give --ledger redis://HOST[:PORT][/DB][?ledger=NAME] or "
              "unix:///path/to/redis.sock[?db=N&ledger=NAME], with a password, if any, as the URL's userinfo."]


class RedisLedger(RemoteLedger):
    """A ledger in Redis, shared by every host that reaches the server."""

    backend = "Redis"

    def __init__(self, url: str, *, state_dir: Path | None = None, options: ServerOptions | None = None) -> None:
        super().__init__(url, state_dir=state_dir, options=options)
        prefix = f"netra-rm:{{{self.name}}}"  # one hash slot for every key of this ledger
        self.keys = {k: f"{prefix}:{k}".encode() for k in ("ledger", "lock", "holder", "journal", "journal.1",
                                                           "released")}
        self._prefix = prefix
        try:
            self._wire = _Wire(self.server_url, self.options)
        except ValueError as exc:
            raise UsageError(f"the Redis ledger URL {self.location} is malformed: {exc}.",
                             remediation=_URL_FORMS) from None
        self._client = os.urandom(6).hex()
        self._counter = itertools.count(1)
        self._holder = b""
        self._token_known = False  # did this process hand the lock token on last time?
        self._hand = f"{prefix}:hand:{self._client}".encode()

    # -- errors --------------------------------------------------------------------------

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn every connection problem and error reply into a :class:`LedgerError`
        naming this ledger (its URL with the password masked) and what to do."""
        try:
            yield
        except LedgerError:
            raise
        except ReplyError as exc:
            text = str(exc)
            if text.startswith(("NOAUTH", "WRONGPASS", "NOPERM")) or "invalid password" in text:
                raise self.error(f"refused the credentials: {text}.",
                                 remediation=["Check the user and password in the ledger URL."]) from None
            raise self.error(f"answered with an error: {text}.", remediation=self._reach_steps()) from None
        except TimeoutError:
            raise self.error(f"did not answer within {self.options.io_timeout:g}s; this command changed nothing "
                             "(a change it sent is refused once its lock has expired).",
                             remediation=self._reach_steps()) from None
        except (OSError, ConnectionError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
            raise self.error(f"cannot be reached: {reason}.", remediation=self._reach_steps()) from None
        except ValueError as exc:
            raise self.error(f"has a malformed URL: {exc}.",
                             remediation=_URL_FORMS
                             ) from None

    def _encode(self, state: LedgerState) -> bytes:
        return self._encode_lines(state)

    def _reach_steps(self) -> list[str]:
        socket_path = urlsplit(self.location).path if self.location.startswith("unix:") else None
        probe = f"redis-cli -s {socket_path} ping" if socket_path else f"redis-cli -u '{self.location}' ping"
        return [f"Check that the Redis server is running and reachable from this host: {probe}",
                "Or use another ledger: --ledger PATH|URL or NETRA_RM_LEDGER."]

    def persistence_advice(self) -> list[str]:
        return ["Turn on persistence on the Redis server (appendonly yes) so that a restart keeps the ledger."]

    # -- scripts -------------------------------------------------------------------------

    def _script(self, name: str, keys: Sequence[bytes], args: Sequence[Any],
                before: Sequence[Sequence[Any]] = (), extra_timeout: float = 0.0) -> Any:
        """Run one of our Lua scripts (after ``before``, in the same round trip); load
        the scripts once if the server does not know them (a restart empties its cache)."""
        sha = _SCRIPTS[name][1]
        command = ("EVALSHA", sha, len(keys), *keys, *args)
        reply = self._wire.many([*before, command], extra_timeout=extra_timeout)[-1]
        if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
            reply = self._wire.many([("SCRIPT", "LOAD", b) for b, _ in _SCRIPTS.values()] + [command])[-1]
        if isinstance(reply, Exception):
            raise reply
        return reply

    # -- the backend's part --------------------------------------------------------------

    def _ttl_ms(self) -> int:
        return max(1, int(self.options.lock_ttl * 1000))

    def _begin(self, cached_version: int) -> Snapshot:
        import time

        k = self.keys
        self._holder = f"{self._client}:{next(self._counter)}".encode()
        keys = (k["ledger"], k["lock"], k["holder"], self._hand, k["journal"], k["released"])
        args = (self._holder, self._ttl_ms(), str(cached_version))
        deadline = time.monotonic() + self.options.lock_wait
        with self._errors():
            if self._token_known:
                # this process handed the token on last time, so it exists: wait for it at once
                block = round(min(_BLOCK, self.options.lock_wait), 3)
                reply = self._script("acquire", keys, args, before=[("BLMOVE", k["lock"], self._hand, "LEFT",
                                                                      "LEFT", block)], extra_timeout=block)
            else:
                reply = self._script("acquire", keys, args)
            while not reply[0]:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self.error(f"is busy: other processes held its lock for {self.options.lock_wait:g}s "
                                     "without a break.", remediation=[
                                         "Try again; if it persists, look for a stuck netra-rm process."])
                block = round(min(_BLOCK, left), 3)
                reply = self._script("acquire", keys, args, before=[("BLMOVE", k["lock"], self._hand, "LEFT",
                                                                      "LEFT", block)], extra_timeout=block)
        return Snapshot(version=int(reply[1]), ledger_id=_text(reply[2]), origin=_text(reply[3]),
                        journal_length=int(reply[4]), doc=reply[5], pending=_pending(reply[6]))

    def _commit(self, snapshot: Snapshot, doc: bytes, meta: dict[str, str], lines: list[bytes],
                rotate: bool) -> int:
        k = self.keys
        with self._errors():
            reply = self._script("commit", (k["ledger"], k["lock"], k["holder"], k["journal"], k["journal.1"],
                                            k["released"]),
                                 (self._holder, self._ttl_ms(), str(snapshot.version), doc, meta["id"],
                                  meta["origin"], "1" if rotate else "", len(snapshot.pending), *lines))
        self._token_known = bool(reply[0])
        if not reply[0]:
            raise self.error(f"changed while this process held its lock (it held it longer than "
                             f"{self.options.lock_ttl:g}s, or the server restarted); this command's change was "
                             "not written.", remediation=["Run the command again."])
        return int(reply[1])

    def _release(self) -> None:
        with self._errors():
            released = self._script("release", (self.keys["lock"], self.keys["holder"]),
                                    (self._holder, self._ttl_ms()))
        self._token_known = bool(released)

    def _abort(self) -> None:
        try:
            self._script("release", (self.keys["lock"], self.keys["holder"]), (self._holder, self._ttl_ms()))
        except Exception:  # noqa: BLE001 - best effort: the holder's expiry frees the lock anyway
            self._wire.close()
        self._token_known = False

    def _snapshot(self, cached_version: int) -> Snapshot:
        k = self.keys
        with self._errors():
            replies = self._wire.many([("MULTI",), ("HMGET", k["ledger"], "version", "id", "origin"),
                                       ("HGET", k["ledger"], "doc"), ("LRANGE", k["released"], 0, -1), ("EXEC",)])
            result = replies[-1]
            if isinstance(result, Exception):
                raise result
        meta, doc, pending = result
        return Snapshot(version=int(meta[0] or 0), ledger_id=_text(meta[1]), origin=_text(meta[2]), doc=doc,
                        pending=_pending(pending))

    def _journal(self) -> tuple[Snapshot, list[bytes], list[str]]:
        k = self.keys
        with self._errors():
            replies = self._wire.many([("MULTI",), ("HMGET", k["ledger"], "version", "id", "origin"),
                                       ("HGET", k["ledger"], "doc"), ("LRANGE", k["journal.1"], 0, -1),
                                       ("LRANGE", k["journal"], 0, -1), ("EXEC",)])
            result = replies[-1]
            if isinstance(result, Exception):
                raise result
        meta, doc, rotated, current = result
        names = [f"{self.location} {name}" for name, lines in (("journal.1", rotated), ("journal", current))
                 if lines]
        snapshot = Snapshot(version=int(meta[0] or 0), ledger_id=_text(meta[1]), origin=_text(meta[2]), doc=doc)
        return snapshot, list(rotated) + list(current), names

    def close(self) -> None:
        self._wire.close()

    # -- releasing without the lock -----------------------------------------------------

    def release_now(self, ids: Sequence[str], *, now: float) -> tuple[list[Allocation], list[str]] | None:
        """Release these allocations in one round trip, without the ledger lock: the
        release is recorded beside the ledger, atomically with the check that each
        allocation is there; the next transaction (whoever runs it) applies and journals
        it before it decides anything, so the capacity is free for every later decision.
        Returns (released, not found), or None when the release must take the lock
        (waiters to wake, or a ledger this host does not recognise).
        """
        with self._lock:
            self._memory.load()
            with self._errors():
                reply = self._script("release_now", (self.keys["ledger"], self.keys["released"]),
                                     (repr(round(now, 3)), self._memory.ledger_id or "", self._memory.counter,
                                      *ids))
        if not reply[0]:
            return None
        released: list[Allocation] = []
        missing: list[str] = []
        for ident, line in zip(ids, reply[1:]):
            if line is None:
                missing.append(ident)
                continue
            try:
                released.append(Allocation.from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError) as exc:
                raise self.error(f"an allocation record is malformed ({exc})", corrupt=True) from None
        return released, missing

    # -- waking waiters ------------------------------------------------------------------

    def _wake_key(self, waiter_id: str) -> bytes:
        return f"{self._prefix}:wake:{waiter_id}".encode()

    def waiter_channel(self, waiter_id: str) -> RedisWakeChannel:
        """A list the waiter blocks on (``BLPOP``); a releaser pushes into it."""
        return RedisWakeChannel(self, self._wake_key(waiter_id))

    def notify(self, waiter_ids: list[str]) -> None:
        """Wake these waiters (best effort: a waiter re-checks on a timer anyway)."""
        commands: list[tuple[Any, ...]] = []
        for waiter_id in waiter_ids:
            key = self._wake_key(waiter_id)
            commands += [("RPUSH", key, "!"), ("PEXPIRE", key, _WAKE_TTL_MS)]
        try:
            with self._lock:
                self._wire.many(commands)
        except Exception:  # noqa: BLE001
            self._wire.close()

    def forget_waiters(self, waiter_ids: list[str]) -> None:
        try:
            with self._lock:
                self._wire.many([("DEL", self._wake_key(w)) for w in waiter_ids])
        except Exception:  # noqa: BLE001
            self._wire.close()


class RedisWakeChannel:
    """The receiving end of one waiter's wake-up list, on its own connection."""

    def __init__(self, ledger: RedisLedger, key: bytes) -> None:
        self.ledger = ledger
        self.key = key
        self._wire = _Wire(ledger.server_url, ledger.options)

    def wait(self, timeout: float) -> bool:
        """Sleep until notified or ``timeout`` seconds pass; True when notified."""
        block = round(max(0.01, timeout), 3)
        try:
            reply = self._wire.many([("BLPOP", self.key, block)], extra_timeout=block)[0]
        except Exception:  # noqa: BLE001 - the waiter's next transaction reports an outage
            self._wire.close()
            return False
        if isinstance(reply, Exception) or reply is None:
            return False
        try:
            self._wire.many([("DEL", self.key)])
        except Exception:  # noqa: BLE001
            self._wire.close()
        return True

    def close(self) -> None:
        try:
            self._wire.many([("DEL", self.key)])
        except Exception:  # noqa: BLE001
            pass
        self._wire.close()

    def __enter__(self) -> RedisWakeChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pending(entries: Any) -> tuple[tuple[str, float], ...]:
    """The recorded releases, as (id, time)."""
    found = []
    for entry in entries or ():
        ident, _, when = _text(entry).partition(" ")  # type: ignore[union-attr]
        try:
            found.append((ident, float(when)))
        except ValueError:
            found.append((ident, 0.0))
    return tuple(found)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
