"""The state ``up`` and ``down`` keep: what ``netra-rm up`` started, kept next to the
ledger so ``down`` (a later process) knows what to stop and ``get_service_status()`` can
say ``started_by_netra_rm``; the lock that keeps two runs apart; the logs directory.

One small JSON file, ``<ledger>.started.json``, written like the ledger: a temp file in
the same directory, fsync, ``os.replace``, fsync of the directory. Readers need no lock
(a rename is atomic); ``up`` and ``down`` hold an exclusive ``flock`` on the sibling
``<ledger>.started.lock`` (never deleted) for their whole run, so two of them never start
or stop the same service at once. The file holds no command line and no URL, so no
secret. Start and stop output goes to ``<ledger>.logs/<service>.log``.

The ledger may sit in a directory other users can write, so every one of these files is
opened through :mod:`netra_rm.fsutil`: no symbolic link is followed, a file or directory
someone else made is refused (exit 5), the logs directory is private (0700, or 2770
shared within a group with ``NETRA_RM_SHARED_GROUP=1``). A planted record could
otherwise make ``down`` signal any process, and a planted log link make ``up`` append to
any file.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netra_rm.backoff import START_LOCK
from netra_rm.errors import LedgerError, NetraRMError
from netra_rm.fsutil import ensure_private_dir, fsync_dir, make_missing_dirs, open_private, write_atomically

if TYPE_CHECKING:
    from netra_rm.core.engine import Engine

SCHEMA_VERSION = 1


class StartLockTimeout(NetraRMError, TimeoutError):
    """Another ``netra-rm up``/``down`` kept the services busy until the deadline (exit 1)."""


@dataclass(frozen=True)
class StartRecord:
    """One service that ``netra-rm up`` started.

    ``pid``/``pid_start`` identify a start command that kept running (a server in the
    foreground), which ``down`` stops by signal when there is no stop command;
    ``restart_count`` counts the starts after the first (the service had gone down).
    """

    name: str
    started_at: float
    host: str
    restart_count: int = 0
    pid: int | None = None
    pid_start: str | None = None
    log: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StartRecord:
        return cls(name=str(data["name"]), started_at=float(data["started_at"]), host=str(data["host"]),
                   restart_count=int(data.get("restart_count", 0)), pid=data.get("pid"),
                   pid_start=data.get("pid_start"), log=data.get("log"))


class StartedServices:
    """The record of started services for one ledger."""

    def __init__(self, ledger_path: str | Path, *, group_shared: bool = False) -> None:
        ledger = Path(ledger_path).expanduser().absolute()
        self.path = ledger.with_name(ledger.name + ".started.json")
        self.lock_path = ledger.with_name(ledger.name + ".started.lock")
        self.log_dir = ledger.with_name(ledger.name + ".logs")
        self.group_shared = group_shared

    def log_path(self, service: str) -> Path:
        """Where the output of ``service``'s start and stop commands goes."""
        return self.log_dir / f"{service}.log"

    def check_log_dir(self) -> Path:
        """The logs directory, created private or checked to be (raises
        :class:`~netra_rm.errors.UnsafePathError` when another user could write to it)."""
        return ensure_private_dir(self.log_dir, group_shared=self.group_shared)

    def open_log(self, service: str) -> int:
        """``service``'s log, opened to append: never through a symbolic link, never a
        file another user made (:class:`~netra_rm.errors.UnsafePathError`)."""
        self.check_log_dir()
        return open_private(self.log_path(service), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                            group_shared=self.group_shared)

    # -- reading -------------------------------------------------------------------------

    def read(self) -> dict[str, StartRecord]:
        """The started services by name (empty when nothing was started)."""
        try:
            fd = open_private(self.path, os.O_RDONLY, group_shared=self.group_shared)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise LedgerError(f"cannot read {self.path}: {exc.strerror or exc}.",
                              remediation=["Check the file's owner and permissions (it should be yours)."]) from None
        with os.fdopen(fd, "rb") as f:
            raw = f.read()
        try:
            data = json.loads(raw)
            version = data["schema_version"]
            if not isinstance(version, int) or version > SCHEMA_VERSION:
                raise LedgerError(f"{self.path} was written by a newer netra-rm (schema version {version}).",
                                  remediation=["Upgrade netra-rm, or use another ledger with --ledger PATH."])
            return {name: StartRecord.from_dict({**entry, "name": name})
                    for name, entry in data["services"].items()}
        except LedgerError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LedgerError(f"{self.path} is corrupt and cannot be parsed ({exc.__class__.__name__}); it was "
                              "left untouched.",
                              remediation=[f"Move it aside (mv {self.path} {self.path}.bad): netra-rm then forgets "
                                           "what `up` started, and `down` stops nothing until the next `up`."]
                              ) from None

    # -- writing (only under :meth:`exclusive`) --------------------------------------------

    def write(self, records: Mapping[str, StartRecord]) -> None:
        """Replace the file atomically with ``records``."""
        payload = json.dumps({"schema_version": SCHEMA_VERSION,
                              "services": {name: {k: v for k, v in r.to_dict().items() if k != "name"}
                                           for name, r in records.items()}},
                             indent=2, sort_keys=True).encode() + b"\n"
        try:
            write_atomically(self.path, payload, make_parents=True, group_shared=self.group_shared)
        except OSError as exc:
            raise LedgerError(f"cannot write {self.path}: {exc.strerror or exc}.",
                              remediation=["Free disk space or fix the directory's permissions."]) from None
        fsync_dir(self.path.parent)

    def update(self, change: Callable[[dict[str, StartRecord]], None]) -> dict[str, StartRecord]:
        """Read, apply ``change`` to the records, write back; the records written."""
        records = self.read()
        change(records)
        self.write(records)
        return records

    # -- the run lock ----------------------------------------------------------------------

    @contextmanager
    def exclusive(self, *, deadline_at: float, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold the run lock; wait for another ``up``/``down`` until ``deadline_at``
        (``time.monotonic()``), calling ``on_wait`` once when there is a wait."""
        try:
            make_missing_dirs(self.lock_path.parent, group_shared=self.group_shared)
            fd = open_private(self.lock_path, os.O_RDWR | os.O_CREAT, group_shared=self.group_shared)
        except OSError as exc:
            raise LedgerError(f"cannot open {self.lock_path}: {exc.strerror or exc}.",
                              remediation=["Check that the directory exists and you may write to it, or use "
                                           "another ledger with --ledger PATH."]) from None
        try:
            pauses, told = START_LOCK.pauses(), False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                        raise
                left = deadline_at - time.monotonic()
                if left <= 0:
                    raise StartLockTimeout(
                        "another `netra-rm up` or `netra-rm down` was still starting or stopping services when "
                        "the deadline ran out.",
                        remediation=["Wait for it to finish, or give this one a longer --timeout."])
                if not told and on_wait is not None:
                    on_wait()
                    told = True
                threading.Event().wait(min(next(pauses), left))
            yield
        finally:
            os.close(fd)  # releases the lock; the lock file stays


def started_services(engine: Engine) -> StartedServices:
    """The record of started services that belongs to ``engine``'s ledger."""
    from netra_rm.config import env as envmod

    path = getattr(engine.ledger, "path", None)
    if path is None:
        from netra_rm.ledger import default_ledger_path

        path = default_ledger_path()
    return StartedServices(path, group_shared=envmod.shared_group())


def start_info(engine: Engine) -> dict[str, dict[str, Any]]:
    """Per configured service: ``started_by_netra_rm`` and ``restart_count``."""
    records = started_services(engine).read()
    return {name: {"started_by_netra_rm": name in records,
                   "restart_count": records[name].restart_count if name in records else 0}
            for name in engine.config.services}
