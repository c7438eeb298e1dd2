"""One exception hierarchy and one table of exit codes for the whole of netra-rm.

Every error carries what a user needs: the thing at fault, why, and what to do about it.
The command line maps each error to its exit code here and nowhere else.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Sequence


class ExitCode(IntEnum):
    """The process exit codes, the same for every command (see the README)."""

    OK = 0
    UNAVAILABLE = 1  # a needed service is unavailable, or the layer is not ready
    USAGE = 2  # bad input: usage, unknown layer or service, invalid value, bad config
    NO_CAPACITY = 3  # allocation refused, or a wait ran out
    NOT_FOUND = 4  # allocation id not found
    LEDGER = 5  # the ledger cannot be used
    LOST = 6  # run only: its allocation was lost while CMD ran, and CMD was stopped
    INTERRUPTED = 130


class NetraRMError(Exception):
    """Base of every error netra-rm raises on purpose."""

    exit_code: ExitCode = ExitCode.UNAVAILABLE

    def __init__(self, message: str, *, remediation: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.remediation: list[str] = list(remediation)

    def __str__(self) -> str:
        return self.message


class UsageError(NetraRMError, ValueError):
    """Bad input from the user: an unknown name, an invalid value."""

    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    """The configuration file is malformed or inconsistent."""

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None,
                 remediation: Sequence[str] = ()) -> None:
        where = ""
        if path and key:
            where = f"{path}: {key}: "
        elif path:
            where = f"{path}: "
        elif key:
            where = f"{key}: "
        super().__init__(where + message, remediation=remediation)
        self.path = path
        self.key = key


class ComposeError(UsageError):
    """A compose project netra-rm cannot read: malformed YAML, a broken ``.env``, a
    ``${VAR:?message}`` whose variable is unset, a configured file that does not exist.

    ``status``, ``layer``, ``up``, the monitor and the plugin turn it into a warning and
    keep the configured addresses; ``config validate`` reports it as an error (exit 2).
    """


class UnknownNameError(UsageError):
    """A layer, service or option value that the configuration does not know."""


class RequestTooLargeError(UsageError):
    """A request that its pool could never hold, however long it waited."""


class NoCapacityError(NetraRMError):
    """The pools have no room now (or a wait ran out)."""

    exit_code = ExitCode.NO_CAPACITY

    def __init__(self, message: str, *, reasons: Sequence[str] = (),
                 remediation: Sequence[str] = ()) -> None:
        super().__init__(message, remediation=remediation)
        self.reasons = list(reasons)


class WaitTimeoutError(NoCapacityError, TimeoutError):
    """Waiting for capacity ran out of time."""


class AllocationNotFoundError(NetraRMError, KeyError):
    """An allocation id that the ledger does not hold."""

    exit_code = ExitCode.NOT_FOUND

    def __init__(self, message: str, *, ids: Sequence[str] = (),
                 remediation: Sequence[str] = ()) -> None:
        super().__init__(message, remediation=remediation)
        self.ids = list(ids)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class LedgerError(NetraRMError):
    """The ledger cannot be used: corrupt, unreadable, wrong permissions, backend down."""

    exit_code = ExitCode.LEDGER


class UnsafePathError(LedgerError):
    """A file or directory netra-rm would use, beside the ledger or in its cache, that
    someone else could have planted or could change: owned by another user, writable by
    others, or a symbolic link. The message names the path, its owner and mode, and the fix."""

    def __init__(self, message: str, *, path: str, remediation: Sequence[str] = ()) -> None:
        super().__init__(message, remediation=remediation)
        self.path = path


class LedgerBusyError(LedgerError, TimeoutError):
    """Another process held the ledger's lock past the wait allowed (``NETRA_RM_LOCK_TIMEOUT``)."""


class CapacityMismatchError(UsageError):
    """This host's configuration disagrees with the capacity the shared ledger holds for a pool."""


class LedgerLostError(LedgerError):
    """A server ledger lost its state (emptied, restored from an older copy, started
    again from scratch): every allocation it held is gone."""


class AllocationLostError(NetraRMError):
    """An allocation was taken away from its holder while it was in use."""

    exit_code = ExitCode.LOST


class ServiceUnavailableError(NetraRMError):
    """A service a layer needs is not healthy.

    ``service_name`` names the root cause (the first unhealthy service in the dependency
    chain), ``details`` says what went wrong and ``remediation_steps`` how to fix it.
    """

    exit_code = ExitCode.UNAVAILABLE

    def __init__(self, service_name: str, details: str,
                 remediation_steps: Sequence[str] = ()) -> None:
        super().__init__(f"service {service_name} is unavailable: {details}",
                         remediation=remediation_steps)
        self.service_name = service_name
        self.details = details
        self.remediation_steps = list(remediation_steps)


class ServiceCheckError(NetraRMError):
    """A checker failed; raised inside checkers, turned into an unhealthy result.

    ``terminal`` failures (bad credentials, unknown database, unresolvable host,
    malformed URL) will not go away by waiting; transient ones (refused, timeout,
    loading) may.
    """

    def __init__(self, message: str, *, terminal: bool = False, reason: str = "error",
                 remediation: Sequence[str] = ()) -> None:
        super().__init__(message, remediation=remediation)
        self.terminal = terminal
        self.reason = reason
