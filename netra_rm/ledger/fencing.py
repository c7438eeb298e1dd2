"""What a host remembers of each server ledger it used: the ledger's id and the highest
fencing counter it saw.

Servers can lose data: a Redis restarted without persistence starts empty, a snapshot
restore goes back in time. Every host remembers, per ledger location, the id the ledger
was given when it was created and the highest fencing counter it has seen (in memory,
and in ``$XDG_STATE_HOME/netra-rm/remote/``). When the ledger is gone, or its counter
went below what this host saw, or another id appeared that no one created on purpose, a
server backend refuses with exit 5 instead of starting over: allocations granted before
are unknown, and granting again could hand out the same capacity twice. ``netra-rm
cleanup --force`` is the deliberate reset.

Whatever a host remembers, a ledger that starts again starts its fencing counter from
the clock (:func:`netra_rm.records.token_floor`), so its tokens are above any the old
one handed out: a host that never used the old ledger cannot be given a token that
another host already holds.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from netra_rm.fsutil import ensure_private_dir, write_atomically


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
            if self.path.stat().st_uid not in (0, __import__("os").geteuid()):
                return  # not ours: ignore what it says
            data = json.loads(self.path.read_bytes())
            ledger_id, counter = data.get("ledger_id"), int(data.get("fencing_counter", 0))
        except (OSError, ValueError, TypeError, AttributeError, OverflowError):
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
        try:
            ensure_private_dir(self.path.parent)
            write_atomically(self.path, payload, fsync=False)
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
