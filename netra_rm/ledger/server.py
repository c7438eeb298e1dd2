"""What the server ledgers (Redis, PostgreSQL) share, whatever the server: their URL
options, the bounds on every call, error messages that name the ledger with its password
masked, and the base class.

Both keep the records of :mod:`netra_rm.records` in the server's own data model (keys in
Redis, tables in PostgreSQL), judge time by the server's clock, and remember what they
saw (:mod:`netra_rm.ledger.fencing`) to refuse a ledger that lost its state.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from netra_rm import numbers
from netra_rm.errors import LedgerError
from netra_rm.ledger.base import Ledger
from netra_rm.ledger.fencing import FencingMemory, memory_path
from netra_rm.ledger.upgrade import ScopeOf, host_scoped
from netra_rm.records import RecordError, Waiter
from netra_rm.redact import mask_text, mask_url, url_password

#: The URL query parameter that names a ledger inside one server (several may share it).
LEDGER_PARAMETER = "ledger"
#: The URL query parameter that bounds connecting and each reply, in seconds.
TIMEOUT_PARAMETER = "timeout"
DEFAULT_LEDGER_NAME = "default"
#: Journal lines kept before the journal starts again with a checkpoint (the previous
#: lines are kept, as the file backend keeps ``journal.1``).
DEFAULT_JOURNAL_MAX_LINES = 20000
#: Seconds a process takes the queue it saw to be still there (see ServerLedger.queue_seen).
QUEUE_MEMORY = 1.0


@dataclass(frozen=True)
class ServerOptions:
    """Bounds on every call to a server, in seconds.

    ``connect_timeout`` and ``io_timeout`` bound each connection attempt and each reply;
    ``lock_ttl`` is how long a holder of a lock may keep it before others may take it (a
    process killed mid-transaction blocks the others at most this long); ``lock_wait`` is
    how long a transaction waits for a lock before it gives up (exit 5). A command's
    ``--timeout`` shortens all of them (see :mod:`netra_rm.deadline`).
    """

    connect_timeout: float = 2.0
    io_timeout: float = 5.0
    lock_ttl: float = 5.0
    lock_wait: float = 30.0
    journal_max_lines: int = DEFAULT_JOURNAL_MAX_LINES


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
    seconds = float(numbers.finite(f"timeout= in the ledger URL {location}", text, numbers.NETWORK_SECONDS,
                                   remediation=f"Set timeout= to {numbers.NETWORK_SECONDS.describe()}."))
    return replace(options, connect_timeout=seconds, io_timeout=seconds)


class ServerLedger(Ledger):
    """The part of a server ledger that does not depend on the server: its URL, options,
    fencing memory and error messages. Backends implement :class:`Ledger`'s methods."""

    backend = "server"
    #: allocations here may belong to processes on other hosts: leases apply
    shared = True

    def __init__(self, url: str, *, state_dir: Path | None = None, options: ServerOptions | None = None,
                 group_shared: bool = False) -> None:
        self.url = url
        self.server_url, self.name, parameters = split_location(url)
        self.location = mask_url(url) or url
        self.options = options_from(parameters, self.location, options)
        self._password = url_password(url)
        identity = f"{mask_url(self.server_url)}#{self.name}"  # the same ledger, whatever the options
        self.memory = FencingMemory(memory_path(state_dir, identity), self.location)
        #: how the configuration scopes pools, for upgrading a schema-1 ledger
        self.scope_of: ScopeOf = host_scoped
        self._queue_until = 0.0
        self._waiters_parsed: dict[str | bytes, Waiter] = {}

    def queue_seen(self) -> bool:
        """Did this process see waiters in the queue within the last second? The one-step
        paths need an empty queue: while there is one, they are not tried (a call saved)."""
        return time.monotonic() < self._queue_until

    def see_queue(self, waiting: bool) -> None:
        self._queue_until = time.monotonic() + QUEUE_MEMORY if waiting else 0.0

    def parsed_waiter(self, raw: str | bytes) -> Waiter:
        """A queue entry as the server stored it (JSON text), parsed and checked once: the
        same entries come back with every transaction while they wait, and a release
        reads them all. Raises :class:`RecordError` for one that is not a waiter."""
        waiter = self._waiters_parsed.get(raw)
        if waiter is None:
            try:
                data = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                raise RecordError(f"a waiter is not JSON: {raw[:60]!r}") from None
            waiter = Waiter.from_dict(data)
            if len(self._waiters_parsed) > 10_000:
                self._waiters_parsed.clear()
            self._waiters_parsed[raw] = waiter
        return waiter

    def fencing_problem(self, *, exists: bool, ledger_id: str | None, origin: str | None, counter: int
                        ) -> tuple[str, list[str]] | None:
        """Why the ledger as read cannot be trusted, given what this host remembers of it
        (see :mod:`netra_rm.ledger.fencing`): it is gone, its counter went back, or another
        ledger took its place that nobody started on purpose. The message and the steps to
        recover, or None when it is the ledger this host knows."""
        self.memory.load()
        seen_id, seen = self.memory.ledger_id, self.memory.counter
        if seen_id is None:
            return None
        where = f"the {self.backend} ledger at {self.location}"
        if not exists:
            message = (f"{where} lost its state: this host saw its fencing counter at {seen} and it is now empty "
                       f"(was the server restarted without persistence?). Allocations granted before are unknown, "
                       f"so nothing is granted or released until it is reset.")
        elif ledger_id == seen_id:
            if counter >= seen:
                return None
            message = (f"{where}: the fencing counter went backwards, from {seen} (seen by this host) to "
                       f"{counter} (was it restored from an older copy?). Nothing is granted or released until it "
                       "is reset.")
        elif origin == "reset" and counter >= seen:
            return None  # reset on purpose by someone, and fencing continues above what we saw
        else:
            message = (f"{where} was started again from scratch: it is not the ledger this host used (was the "
                       "server restarted without persistence, or its keys evicted?), so allocations granted "
                       "before are unknown. Nothing is granted or released until it is reset.")
        return message, self.reset_steps(seen)

    def reset_steps(self, seen: int) -> list[str]:
        return [f"Once the jobs that held allocations in it have ended, start a fresh ledger: netra-rm --ledger "
                f"'{self.location}' cleanup --force (its fencing tokens continue above {seen}).",
                *self.persistence_advice()]

    def persistence_advice(self) -> list[str]:
        return []

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
        return mask_text(text, [self._password] if self._password else [])
