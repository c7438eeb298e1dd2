"""What ``up`` and ``down`` did, service by service: the results the CLI renders, the
agent reads and ``--json`` prints. Every text in them is already masked."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from netra_rm.errors import ServiceUnavailableError

#: How ``up`` and ``down`` say what they are doing, one line at a time.
Progress = Callable[[str], None]


class ServiceStartError(ServiceUnavailableError):
    """A service could not be brought up (or down): the service, the command, its exit
    code and the last lines of its output, all masked. Exit code 1."""

    def __init__(self, service_name: str, details: str, remediation_steps: Sequence[str] = (), *,
                 command: str | None = None, exit_code: int | None = None,
                 output_tail: Sequence[str] = (), log: str | None = None) -> None:
        super().__init__(service_name, details, remediation_steps)
        self.message = details  # it names the service already
        self.command = command
        self.command_exit_code = exit_code  # not ``exit_code``: that is netra-rm's own (1)
        self.output_tail = list(output_tail)
        self.log = log



@dataclass(frozen=True)
class ServiceStep:
    """What ``up`` did (or, with ``--dry-run``, would do) with one service.

    ``action`` is one of ``left_alone`` (healthy already), ``started``, ``waited`` (it
    was coming up by itself), ``would_start``, ``would_wait``, ``failed``,
    ``no_start_command``, ``cannot_start`` (it answers, but in a way a restart cannot
    fix), ``cancelled`` (another service of its level failed first) and ``not_reached``
    (the run stopped before its level).
    """

    name: str
    level: int
    action: str
    status: str
    reason: str
    command: str | None = None
    exit_code: int | None = None
    running: bool = False
    seconds: float | None = None
    error: str | None = None
    output_tail: tuple[str, ...] = ()
    log: str | None = None
    url: str | None = None
    restart_count: int = 0
    depends_on: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "level": self.level, "action": self.action, "status": self.status,
                "reason": self.reason, "command": self.command, "exit_code": self.exit_code,
                "running": self.running, "seconds": None if self.seconds is None else round(self.seconds, 3),
                "error": self.error, "output_tail": list(self.output_tail), "log": self.log, "url": self.url,
                "restart_count": self.restart_count, "depends_on": list(self.depends_on)}


@dataclass(frozen=True)
class UpResult:
    """The outcome of :func:`bring_up`; ``failed`` names the service that stopped the run."""

    targets: tuple[str, ...]
    services: tuple[ServiceStep, ...]
    ok: bool
    dry_run: bool
    timeout: float
    elapsed: float
    failed: str | None = None
    message: str | None = None
    remediation: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    discovery: dict[str, Any] | None = None

    @property
    def started(self) -> list[str]:
        """The services this run started, in startup order."""
        return [s.name for s in self.services if s.action == "started"]

    @property
    def missing(self) -> list[str]:
        """The services that are not healthy after the run."""
        return [s.name for s in self.services if s.status != "healthy"]

    def step(self, name: str) -> ServiceStep:
        return next(s for s in self.services if s.name == name)

    def error(self) -> ServiceStartError | None:
        """The failure as an exception (None when the run succeeded)."""
        if self.ok or self.failed is None:
            return None
        step = self.step(self.failed)
        return ServiceStartError(self.failed, self.message or step.error or "could not be brought up",
                                 self.remediation, command=step.command, exit_code=step.exit_code,
                                 output_tail=step.output_tail, log=step.log)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": 1, "targets": list(self.targets), "ok": self.ok, "dry_run": self.dry_run,
                "timeout": self.timeout, "elapsed_seconds": round(self.elapsed, 3), "started": self.started,
                "failed": self.failed, "message": self.message, "remediation": list(self.remediation),
                "services": [s.to_dict() for s in self.services], "notes": list(self.notes),
                "discovery": self.discovery}


@dataclass(frozen=True)
class StopStep:
    """What ``down`` did with one service: ``stopped``, ``gone`` (it had ended already),
    ``failed``, ``cannot_stop`` (no stop command and no process to signal) or ``would_stop``."""

    name: str
    action: str
    method: str | None = None  # "command" or "signal"
    command: str | None = None
    exit_code: int | None = None
    seconds: float | None = None
    error: str | None = None
    output_tail: tuple[str, ...] = ()
    log: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "action": self.action, "method": self.method, "command": self.command,
                "exit_code": self.exit_code, "seconds": None if self.seconds is None else round(self.seconds, 3),
                "error": self.error, "output_tail": list(self.output_tail), "log": self.log}


@dataclass(frozen=True)
class DownResult:
    """The outcome of :func:`bring_down`."""

    services: tuple[StopStep, ...]
    ok: bool
    dry_run: bool
    timeout: float
    elapsed: float
    failed: str | None = None
    message: str | None = None
    remediation: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def stopped(self) -> list[str]:
        return [s.name for s in self.services if s.action == "stopped"]

    def error(self) -> ServiceStartError | None:
        if self.ok or self.failed is None:
            return None
        step = next(s for s in self.services if s.name == self.failed)
        return ServiceStartError(self.failed, self.message or step.error or "could not be stopped",
                                 self.remediation, command=step.command, exit_code=step.exit_code,
                                 output_tail=step.output_tail, log=step.log)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": 1, "ok": self.ok, "dry_run": self.dry_run, "timeout": self.timeout,
                "elapsed_seconds": round(self.elapsed, 3), "stopped": self.stopped, "failed": self.failed,
                "message": self.message, "remediation": list(self.remediation),
                "services": [s.to_dict() for s in self.services], "notes": list(self.notes)}

