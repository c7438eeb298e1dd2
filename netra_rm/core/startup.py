"""Bring services up in dependency order, and down again: ``netra-rm up`` / ``down``.

``bring_up`` checks the services the targets need (with their transitive dependencies),
leaves the healthy ones alone and starts the others level by level in the startup order
of the dependency graph: a level's services start in parallel, and the next level starts
only when each of them answers its checker. One deadline covers the whole run; every
step gets the time that is left. The first failure stops the run and is named: the
service, its command, the command's exit code and the last lines of its output.

The start-command policy: a start command runs in its own session with its output
appended to ``<ledger>.logs/<service>.log`` through a masking relay
(:mod:`netra_rm.core.logrelay`), so every configured secret is masked before it is
written; the logs directory is private and no log is opened through a link. It may return at once (``pg_ctl start``,
``redis-server --daemonize yes``, ``docker compose up -d``) or keep running as the
server itself (``redis-server --port 6390``); either way the service is started when
its checker says healthy. A command that exits non-zero fails the run; a command still
running when its service is healthy is the server, and its pid is recorded so that
``down`` can stop it (SIGTERM to its process group) when there is no stop command.
A command still running when the deadline passes is stopped again.

``bring_down`` stops what ``up`` started (see :mod:`netra_rm.core.started`), dependents
first: the stop command, else that signal; then it checks that the service no longer
answers.

Everything shown is masked: URLs, command lines and output tails never carry a password.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netra_rm import procfs
from netra_rm.backoff import PROCESS_EXIT, SERVICE_STATE
from netra_rm.config import env as envmod
from netra_rm.config import graph
from netra_rm.config.commands import command_line, mask_command, secrets_of_all
from netra_rm.config.service import ServiceSpec
from netra_rm.core import liveness
from netra_rm.core.started import StartedServices, StartRecord, started_services
from netra_rm.errors import ExitCode, NetraRMError, ServiceUnavailableError, UnknownNameError
from netra_rm.fsutil import CLOEXEC, NOFOLLOW
from netra_rm.redact import mask_url

if TYPE_CHECKING:
    from netra_rm.core.engine import Engine

#: ``up``'s default deadline for the whole run, in seconds.
DEFAULT_UP_TIMEOUT = 60.0
#: ``down``'s default deadline, in seconds.
DEFAULT_DOWN_TIMEOUT = 60.0
#: Check reasons that mean "coming up, or up and busy": wait for it, do not start it again.
WAIT_REASONS = frozenset({"starting", "loading", "too_many_connections"})
#: How many lines of a failed command's output are shown.
TAIL_LINES = 15
_TERM_GRACE = 10.0  # seconds between SIGTERM and SIGKILL
_RETURN_GRACE = 0.5  # seconds a start command gets to return once its service is healthy

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


# -- results -------------------------------------------------------------------------------

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


# -- targets -------------------------------------------------------------------------------

def resolve_targets(config: Any, targets: Iterable[str]) -> list[str]:
    """Layer and service names -> the services they need, with transitive dependencies,
    in startup order (every service when ``targets`` is empty). A name that is both a
    layer and a service means the layer."""
    deps = config.dependencies
    roots: list[str] = []
    given = list(targets)
    for target in given:
        if target in config.layers:
            roots.extend(config.layers[target].services)
        elif target in config.services:
            roots.append(target)
        else:
            layers = ", ".join(config.layers) or "none"
            services = ", ".join(config.services) or "none"
            raise UnknownNameError(f"unknown layer or service {target!r}; layers: {layers}; services: {services}.",
                                   remediation=["`netra-rm graph` shows the layers, the services and their order."])
    if not given:
        roots = list(config.services)
    return graph.transitive_dependencies(deps, roots)


# -- checks ----------------------------------------------------------------------------------

def _check(spec: ServiceSpec, left: float) -> Any:
    """One check of ``spec`` on its own (its dependencies are the plan's business), cut at
    its timeout or the time left."""
    from netra_rm.services.rounds import check_services

    alone = replace(spec, depends_on=())
    return check_services({spec.name: alone}, [spec.name], deadline=max(0.05, min(spec.timeout, left)))[spec.name]


def _check_all(specs: Mapping[str, ServiceSpec], names: Sequence[str], deadline: float) -> dict[str, Any]:
    from netra_rm.services.rounds import check_services

    alone = {name: replace(specs[name], depends_on=()) for name in names}
    return check_services(alone, list(names), deadline=max(0.05, deadline))


def _dependents(deps: Mapping[str, Sequence[str]], name: str, among: Iterable[str]) -> list[str]:
    """The services in ``among`` that depend on ``name``, directly or through others."""
    pool = list(among)
    return [other for other in pool
            if other != name and name in graph.transitive_dependencies(deps, [other])]


# -- running commands --------------------------------------------------------------------------

#: How long a finished command's masking relay gets to write the last of its output.
_RELAY_GRACE = 2.0


@dataclass
class _Launch:
    """A start or stop command that was started: its process, where its output goes and
    the relay that masks it on the way."""

    process: subprocess.Popen[bytes] | None
    command: str  # masked
    log: Path
    offset: int
    error: str | None = None  # why it could not be started at all
    relay: subprocess.Popen[bytes] | None = None

    def drain(self) -> None:
        """Once the command has ended, let the relay write the rest of its output (it ends
        when nothing holds the pipe any more; a daemon the command left behind may)."""
        if self.relay is not None and self.process is not None and self.process.poll() is not None:
            try:
                self.relay.wait(timeout=_RELAY_GRACE)
            except subprocess.TimeoutExpired:
                pass

    def tail(self, secrets: Sequence[str]) -> tuple[str, ...]:
        """The last lines of the command's output, masked (see :func:`_tail`)."""
        self.drain()
        return _tail(self.log, self.offset, secrets)


def _launch(spec: ServiceSpec, argv: Sequence[str], *, verb: str, store: StartedServices, secrets: Sequence[str],
            env: Mapping[str, str] | None) -> _Launch:
    """Start ``argv`` of ``spec`` in its own session, its output appended, masked, to its
    log (which is opened safely: see :meth:`StartedServices.open_log`)."""
    shown = mask_command(command_line(argv, shell=spec.shell), secrets)
    log = store.log_path(spec.name)
    stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    fd = store.open_log(spec.name)
    with os.fdopen(fd, "ab") as out:
        out.write(f"==> {stamp} netra-rm {verb} {spec.name}: {shown}\n".encode())
        out.flush()
        offset = out.tell()
        if spec.workdir and not Path(spec.workdir).is_dir():
            return _Launch(None, shown, log, offset,
                           f"its working directory {spec.workdir} does not exist (services.{spec.name}.workdir)")
        try:
            relay, pipe = _start_relay(out, secrets)
        except OSError as exc:
            return _Launch(None, shown, log, offset, f"cannot start the masking relay for its output: "
                                                     f"{exc.strerror or exc}")
        args: Any = argv[0] if spec.shell else list(argv)
        try:
            process = subprocess.Popen(args, shell=spec.shell, cwd=spec.workdir or None,
                                       env=envmod.child_environment(spec.environment, env),
                                       stdin=subprocess.DEVNULL, stdout=pipe, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        except FileNotFoundError:
            return _Launch(None, shown, log, offset, f"cannot run {argv[0]!r}: no such program (PATH is searched "
                                                     f"for names without a slash)", relay)
        except PermissionError:
            return _Launch(None, shown, log, offset, f"cannot run {argv[0]!r}: permission denied", relay)
        except OSError as exc:
            return _Launch(None, shown, log, offset, f"cannot run {argv[0]!r}: {exc.strerror or exc}", relay)
        finally:
            os.close(pipe)  # the command holds the write end now; the relay ends when it lets go
    return _Launch(process, shown, log, offset, relay=relay)


def _start_relay(log: Any, secrets: Sequence[str]) -> tuple[subprocess.Popen[bytes], int]:
    """Start :mod:`netra_rm.core.logrelay` appending to ``log``; the relay and the write end
    of its pipe, the secrets already written down it (never in an argument list)."""
    read_end, write_end = os.pipe()
    try:
        package_root = str(Path(__file__).resolve().parent.parent.parent)
        code = f"import sys; sys.path.insert(0, {package_root!r}); from netra_rm.core.logrelay import main; main()"
        relay = subprocess.Popen([sys.executable, "-c", code], stdin=read_end, stdout=log,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    header = json.dumps(list(secrets)).encode() + b"\n"
    view = memoryview(header)
    while view:
        view = view[os.write(write_end, view):]
    return relay, write_end


def _tail(log: Path, offset: int, secrets: Sequence[str], lines: int = TAIL_LINES) -> tuple[str, ...]:
    """The last ``lines`` non-empty lines written to ``log`` after ``offset``, masked."""
    try:
        fd = os.open(log, os.O_RDONLY | NOFOLLOW | CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ()
    found = [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]
    return tuple(mask_command(line[:400], secrets) for line in found)


def _group_alive(pgid: int) -> bool:
    """True while a live (not zombie) process is in process group ``pgid``."""
    if not procfs.HAS_PROC:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for pid in procfs.process_ids():
        try:
            found = procfs.process_stat(pid)
        except (OSError, IndexError, ValueError):
            continue
        if found is not None and not found.zombie and found.process_group == pgid:
            return True
    return False


def _ours(pgid: int, start: str | None) -> bool:
    """Is process group ``pgid`` still the one a start command made? Its leader is the
    process we started, or the leader is gone and members remain (a pid in use as a
    group id is never handed out again, so those members are the start command's)."""
    token = liveness.start_token(pgid)
    if token is not None:
        return start is None or token == start
    return _group_alive(pgid)


def _stop_group(pgid: int, *, grace: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM process group ``pgid``, SIGKILL after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        if _wait_group_gone(pgid, time.monotonic() + grace, process):
            return


def _wait_group_gone(pgid: int, until: float, process: subprocess.Popen[bytes] | None = None) -> bool:
    pauses = PROCESS_EXIT.pauses()
    while True:
        if process is not None:
            process.poll()  # reap our own child
        if not _group_alive(pgid):
            return True
        left = until - time.monotonic()
        if left <= 0:
            return False
        threading.Event().wait(min(next(pauses), left))


# -- up ------------------------------------------------------------------------------------------

@dataclass
class _Run:
    """The state of one ``up`` run shared by the threads of a level."""

    specs: dict[str, ServiceSpec]
    store: StartedServices
    deadline_at: float
    timeout: float
    secrets: list[str]
    progress: Progress
    env: Mapping[str, str] | None
    refresh: Callable[[], dict[str, ServiceSpec]] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    first_failure: str | None = None  # the service whose failure stopped the run
    fatal: NetraRMError | None = None  # a ledger-side file that may not be used (exit 5), from a thread

    def left(self) -> float:
        return self.deadline_at - time.monotonic()

    def fail(self, name: str) -> None:
        """``name`` failed: the run stops, and its level's other services stop waiting."""
        with self.lock:
            if self.first_failure is None:
                self.first_failure = name
        self.cancel.set()

    def record(self, change: Callable[[dict[str, StartRecord]], None]) -> None:
        with self.lock:
            self.store.update(change)


def bring_up(engine: Engine, targets: Iterable[str] = (), *, timeout: float = DEFAULT_UP_TIMEOUT,
             dry_run: bool = False, discover: str | None = None, progress: Progress | None = None,
             env: Mapping[str, str] | None = None) -> UpResult:
    """Start what ``targets`` (layers or services; all services when empty) need and is
    down, in dependency order, within ``timeout`` seconds for the whole run.

    Returns an :class:`UpResult` whether or not it succeeded (``result.error()`` is the
    exception to raise); raises :class:`UnknownNameError` for an unknown target.
    """
    from netra_rm.core.readiness import effective_services

    began = time.monotonic()
    deadline_at = began + max(0.0, timeout)
    say = progress or (lambda _text: None)
    config = engine.config
    target_list = tuple(targets)
    needed = resolve_targets(config, target_list)
    deps = config.dependencies
    level_of = {name: i for i, level in enumerate(graph.startup_levels(deps)) for name in level}
    specs, found = effective_services(engine, discover=discover, announce=False,
                                      timeout=max(0.1, min(5.0, deadline_at - time.monotonic())))
    notes = tuple(found.messages) if found is not None else ()
    discovery = found.to_dict() if found is not None else None
    _announce(notes, say)
    secrets = secrets_of_all(specs.values())
    store = started_services(engine)

    def finish(steps: dict[str, ServiceStep], *, failed: str | None = None, message: str | None = None,
               remediation: Sequence[str] = ()) -> UpResult:
        records = store.read()
        ordered = tuple(replace(steps[n], restart_count=records[n].restart_count if n in records else 0)
                        for n in needed)
        return UpResult(targets=target_list, services=ordered, ok=failed is None, dry_run=dry_run,
                        timeout=timeout, elapsed=time.monotonic() - began, failed=failed,
                        message=mask_command(message, secrets) if message else None,
                        remediation=tuple(mask_command(r, secrets) for r in remediation), notes=notes,
                        discovery=discovery)

    def body() -> UpResult:
        results = _check_all(specs, needed, min(config.checks.deadline, deadline_at - time.monotonic()))
        steps: dict[str, ServiceStep] = {}
        plan: dict[str, str] = {}
        for name in needed:
            spec, result = specs[name], results[name]
            base = ServiceStep(name=name, level=level_of[name], action="left_alone", status=result.status,
                               reason=result.reason, error=result.error, url=mask_url(spec.url),
                               depends_on=tuple(spec.depends_on),
                               command=mask_command(command_line(spec.start, shell=spec.shell), secrets)
                               if spec.start else None)
            if result.status == "healthy":
                plan[name] = "left_alone"
            elif result.reason in WAIT_REASONS:
                plan[name] = "wait"
            elif result.terminal:
                plan[name] = "cannot_start"
            elif not spec.start:
                plan[name] = "no_start_command"
            else:
                plan[name] = "start"
            steps[name] = base
        # a service that cannot be started fails the run before anything is started
        for name in needed:
            if plan[name] in ("cannot_start", "no_start_command"):
                message, remediation = _plan_failure(name, plan[name], specs[name], results[name],
                                                     _dependents(deps, name, needed), target_list)
                for other in needed:
                    action = plan[other]
                    if other == name or action in ("cannot_start", "no_start_command"):
                        steps[other] = replace(steps[other], action=action)
                    elif action != "left_alone":
                        steps[other] = replace(steps[other], action=f"would_{action}" if dry_run
                                               else "not_reached")
                return finish(steps, failed=name, message=message, remediation=remediation)
        if dry_run:
            for name in needed:
                if plan[name] != "left_alone":
                    steps[name] = replace(steps[name], action=f"would_{plan[name]}")
            return finish(steps)
        run = _Run(specs=dict(specs), store=store, deadline_at=deadline_at, timeout=timeout,
                   secrets=secrets, progress=say, env=env)
        if found is not None and found.source == "engine":
            run.refresh = lambda: effective_services(engine, discover=discover, announce=False, refresh=True,
                                                     timeout=max(0.1, min(5.0, run.left())))[0]
        levels: dict[int, list[str]] = {}
        for name in needed:
            if plan[name] != "left_alone":
                levels.setdefault(level_of[name], []).append(name)
        if levels:
            store.check_log_dir()  # a logs directory another user could write fails the run (exit 5)
        for level in sorted(levels):
            group = levels[level]
            if run.left() <= 0:
                name = group[0]
                message = (f"the deadline of {timeout:g} s ran out before {name} could be started "
                           f"(its dependencies took the time)")
                for other in needed:
                    if plan[other] != "left_alone" and steps[other].action == "left_alone":
                        steps[other] = replace(steps[other], action="not_reached")
                return finish(steps, failed=name, message=message,
                              remediation=[f"Give the run more time: --timeout {max(timeout * 2, 30):g}."])
            outcomes: dict[str, tuple[ServiceStep, str | None, list[str]]] = {}
            threads = []
            for name in group:
                def work(name: str = name, outcomes: dict[str, Any] = outcomes) -> None:
                    try:
                        outcomes[name] = _bring_one(run, steps[name], plan[name])
                    except BaseException as exc:  # noqa: BLE001 - a bug is a failed step, not a hang
                        if isinstance(exc, NetraRMError) and exc.exit_code == ExitCode.LEDGER:
                            run.fatal = exc
                        outcomes[name] = (replace(steps[name], action="failed", status="unhealthy",
                                                  error=f"{type(exc).__name__}: {exc}"),
                                          f"{type(exc).__name__}: {exc}", [])
                    if outcomes[name][1] is not None and outcomes[name][0].action != "cancelled":
                        run.fail(name)
                thread = threading.Thread(target=work, name=f"netra-rm-up-{name}", daemon=True)
                threads.append(thread)
                thread.start()
            try:
                for thread in threads:
                    thread.join()
            except KeyboardInterrupt:
                run.cancel.set()
                for thread in threads:
                    thread.join(_TERM_GRACE)
                raise
            if run.fatal is not None:
                raise run.fatal
            first_failure: tuple[str, str, list[str]] | None = None
            if run.first_failure is not None and run.first_failure in outcomes:
                outcome = outcomes[run.first_failure]
                first_failure = (run.first_failure, outcome[1] or "", outcome[2])
            for name in group:
                outcome = outcomes[name]
                steps[name] = outcome[0]
                if outcome[1] is not None and first_failure is None:
                    first_failure = (name, outcome[1], outcome[2])
            if first_failure is not None:
                for other in needed:
                    if plan[other] != "left_alone" and level_of[other] > level:
                        steps[other] = replace(steps[other], action="not_reached")
                return finish(steps, failed=first_failure[0], message=first_failure[1],
                              remediation=first_failure[2])
        return finish(steps)

    if dry_run:
        return body()

    def waiting() -> None:
        say("waiting for another `netra-rm up`/`down` to finish")

    with store.exclusive(deadline_at=deadline_at, on_wait=waiting):
        return body()


def _announce(notes: Sequence[str], say: Progress) -> None:
    """Say each discovery note once per process ("Docker is not installed; ...")."""
    if notes:
        from netra_rm.services.compose import say_once

        for note in say_once(notes):
            say(note)


def _plan_failure(name: str, action: str, spec: ServiceSpec, result: Any, dependents: Sequence[str],
                  targets: Sequence[str]) -> tuple[str, list[str]]:
    needed_by = ""
    if dependents:
        needed_by = f"; {', '.join(dependents)} {'depends' if len(dependents) == 1 else 'depend'} on it"
    elif targets:
        needed_by = f"; {', '.join(targets)} {'needs' if len(targets) == 1 else 'need'} it"
    steps = list(result.remediation or ())
    if action == "no_start_command":
        message = (f"{name} is down ({result.reason}) and has no start command, so netra-rm cannot start "
                   f"it{needed_by}")
        compose = spec.origin.compose
        words = ", ".join([*shlex.split(compose.command), "up", "-d", compose.service]) if compose is not None \
            else f"docker, compose, up, -d, {name}"
        steps.insert(0, f"Give it one in the configuration, e.g. `services.{name}.start: [{words}]`, or start "
                        f"{name} yourself and run `netra-rm up` again.")
        return message, steps
    message = (f"{name} answers but is not usable, and starting it again would not help: "
               f"{result.error or result.reason}{needed_by}")
    return message, steps


def _bring_one(run: _Run, step: ServiceStep, action: str) -> tuple[ServiceStep, str | None, list[str]]:
    """Start (or wait for) one service until its checker says healthy or the deadline passes.

    Returns the step, and the failure message and remediation when it failed.
    """
    name = step.name
    spec = run.specs[name]
    began = time.monotonic()
    if action == "wait":
        run.progress(f"waiting for {name}: {step.error or step.reason}")
        result = _wait_healthy(run, spec, None)
        seconds = time.monotonic() - began
        if result.status == "healthy":
            run.progress(f"{name} is healthy ({seconds:.1f} s)")
            return replace(step, action="waited", status="healthy", reason="ok", error=None,
                           seconds=seconds), None, []
        if run.cancel.is_set():
            message = (f"stopped waiting for {name}: {run.first_failure} failed" if run.first_failure
                       else f"interrupted while waiting for {name} to become healthy")
            return replace(step, action="cancelled", status=result.status, reason=result.reason,
                           error=result.error, seconds=seconds), message, []
        message = (f"{name} was coming up by itself ({step.reason}) but was not healthy when the deadline of "
                   f"{run.timeout:g} s ran out: {result.error or result.reason}")
        return replace(step, action="failed", status=result.status, reason=result.reason, error=result.error,
                       seconds=seconds), message, list(result.remediation)

    launch = _launch(spec, spec.start, verb="up", store=run.store, secrets=run.secrets, env=run.env)
    log = launch.log
    step = replace(step, command=launch.command, log=str(log))
    if launch.process is None:
        message = f"the start command of {name} `{launch.command}` could not be run: {launch.error}"
        return replace(step, action="failed", status="unhealthy", seconds=time.monotonic() - began,
                       error=message), message, [f"Fix services.{name}.start in the configuration."]
    process = launch.process
    run.progress(f"starting {name}: {launch.command}")
    previous: dict[str, StartRecord | None] = {}

    def remember(records: dict[str, StartRecord]) -> None:
        before = records.get(name)
        previous["record"] = before
        records[name] = StartRecord(name=name, started_at=time.time(), host=envmod.host_id(run.env),
                                    restart_count=before.restart_count + 1 if before else 0,
                                    pid=process.pid, pid_start=liveness.start_token(process.pid), log=str(log))

    run.record(remember)

    def restore(records: dict[str, StartRecord]) -> None:
        before = previous.get("record")
        if before is None:
            records.pop(name, None)
        else:
            records[name] = before

    result = _wait_healthy(run, spec, process)
    seconds = time.monotonic() - began
    code = process.poll()
    if result.status == "healthy" and code is None:
        # a command that starts a daemon may return a moment after the server answers
        try:
            code = process.wait(timeout=max(0.0, min(_RETURN_GRACE, run.left())))
        except subprocess.TimeoutExpired:
            code = None
    if result.status == "healthy":
        run.progress(f"{name} is healthy ({seconds:.1f} s)")
        return replace(step, action="started", status="healthy", reason="ok", error=None, exit_code=code,
                       running=code is None, seconds=seconds), None, []
    tail = launch.tail(run.secrets)
    steps = [f"Its whole output is in {log}."]
    if code is not None and code != 0:
        run.record(restore)
        message = f"the start command of {name} `{launch.command}` exited with code {code}"
        steps.insert(0, f"Run it by hand to see why: {launch.command}")
        return replace(step, action="failed", status=result.status, reason=result.reason, exit_code=code,
                       seconds=seconds, error=message, output_tail=tail), message, steps
    check = result.error or result.reason
    action = "failed"
    if run.cancel.is_set():
        action = "cancelled"
        message = (f"stopped waiting for {name}: {run.first_failure} failed" if run.first_failure
                   else f"interrupted while waiting for {name} to become healthy")
    elif result.terminal:
        message = f"the start command of {name} `{launch.command}` ran, but {name} is not usable: {check}"
    else:
        message = (f"{name} did not become healthy within the {run.timeout:g} s deadline after its start "
                   f"command `{launch.command}`")
        message += (" (which exited with code 0)" if code == 0 else
                    " (which was still running and has been stopped)")
        message += f"; the last check said: {check}"
        steps = [f"If {name} is only slow to start, give the run more time: --timeout "
                 f"{max(run.timeout * 2, 30):g}.", *steps]
    if code is None:  # not healthy, still running: stop it again, it is not a server we can use
        _stop_group(process.pid, grace=_TERM_GRACE, process=process)
        run.record(restore)
        tail = launch.tail(run.secrets)
    elif spec.stop:  # it returned: what it started may run; `down` runs the stop command
        pass
    else:  # it returned and there is nothing `down` could do
        run.record(restore)
    steps.extend(result.remediation or ())
    return replace(step, action=action, status=result.status, reason=result.reason, exit_code=code,
                   running=False, seconds=seconds, error=message, output_tail=tail), message, steps


def _wait_healthy(run: _Run, spec: ServiceSpec, process: subprocess.Popen[bytes] | None) -> Any:
    """Check ``spec`` with backoff until healthy, a terminal failure, the start command
    failing, the run being cancelled, or the deadline; the last check's result."""
    pauses = SERVICE_STATE.pauses()
    refreshed = False
    last = _timed_out(spec)
    while True:
        code = process.poll() if process is not None else None
        if code is not None and code != 0:
            return last
        if code == 0 and run.refresh is not None and not refreshed:
            refreshed = True  # the engine knows the ports only once the container runs
            fresh = run.refresh().get(spec.name)
            if fresh is not None:
                spec = fresh
        left = run.left()
        if left <= 0 or run.cancel.is_set():
            return last
        last = _check(spec, left)
        if last.status == "healthy" or last.terminal:
            return last
        left = run.left()
        if left <= 0 or run.cancel.wait(min(next(pauses), left)):
            return last


def _timed_out(spec: ServiceSpec) -> Any:
    from netra_rm.services.result import ServiceResult

    return ServiceResult(name=spec.name, kind=spec.kind, status="unhealthy", url=mask_url(spec.url),
                         reason="timeout", error=f"{spec.name}: not healthy at the deadline")


# -- down ------------------------------------------------------------------------------------------

def bring_down(engine: Engine, targets: Iterable[str] = (), *, timeout: float = DEFAULT_DOWN_TIMEOUT,
               dry_run: bool = False, discover: str | None = None, progress: Progress | None = None,
               env: Mapping[str, str] | None = None) -> DownResult:
    """Stop what ``up`` started (only those among ``targets`` and what depends on them,
    when given), dependents first, and check that each no longer answers."""
    from netra_rm.core.readiness import effective_services

    began = time.monotonic()
    deadline_at = began + max(0.0, timeout)
    say = progress or (lambda _text: None)
    config = engine.config
    target_list = tuple(targets)
    selected = set(resolve_targets(config, target_list)) if target_list else None
    store = started_services(engine)
    deps = config.dependencies

    def body() -> DownResult:
        records = store.read()
        names = list(records)
        if selected is not None:
            # the targets, and what was started on top of them
            names = [n for n in names if n in selected
                     or (n in deps and selected & set(graph.transitive_dependencies(deps, [n])))]
        order = [n for level in graph.startup_levels(deps) for n in level]
        unknown = [n for n in names if n not in deps]
        names = unknown + [n for n in reversed(order) if n in names]
        specs: dict[str, ServiceSpec] = dict(config.services)
        notes: tuple[str, ...] = ()
        if names and not dry_run:
            specs, found = effective_services(engine, discover=discover, announce=False,
                                              timeout=max(0.1, min(5.0, deadline_at - time.monotonic())))
            notes = tuple(found.messages) if found is not None else ()
            _announce(notes, say)
        secrets = secrets_of_all(specs.values())
        steps: list[StopStep] = []
        first: tuple[str, str, list[str]] | None = None
        for name in names:
            record, spec = records[name], specs.get(name)
            if dry_run:
                if spec is not None and spec.stop:
                    steps.append(StopStep(name, "would_stop", "command",
                                          mask_command(command_line(spec.stop, shell=spec.shell), secrets)))
                elif record.pid is not None and _ours(record.pid, record.pid_start) and _group_alive(record.pid):
                    steps.append(StopStep(name, "would_stop", "signal", f"SIGTERM to process group {record.pid}"))
                else:
                    steps.append(StopStep(name, "cannot_stop", error=_cannot_stop(name)))
                continue
            step, failure = _stop_one(record, spec, store, secrets, deadline_at, say, env)
            steps.append(step)
            if failure is None or step.action == "cannot_stop":
                _forget(store, name)
            if failure is not None and first is None:
                first = (name, failure[0], failure[1])
        failed = first[0] if first else None
        return DownResult(services=tuple(steps), ok=first is None and not any(
            s.action == "cannot_stop" for s in steps), dry_run=dry_run, timeout=timeout,
            elapsed=time.monotonic() - began, failed=failed,
            message=mask_command(first[1], secrets) if first else None,
            remediation=tuple(mask_command(r, secrets) for r in first[2]) if first else (), notes=notes)

    if dry_run:
        return body()
    with store.exclusive(deadline_at=deadline_at,
                         on_wait=lambda: say("waiting for another `netra-rm up`/`down` to finish")):
        return body()


def _forget(store: StartedServices, name: str) -> None:
    """``name`` is stopped (or cannot be): no longer started by netra-rm."""
    def change(records: dict[str, StartRecord]) -> None:
        records.pop(name, None)
    store.update(change)


def _cannot_stop(name: str) -> str:
    return (f"netra-rm started {name} with a command that returned, and {name} has no stop command; "
            f"stop it yourself")


def _stop_one(record: StartRecord, spec: ServiceSpec | None, store: StartedServices, secrets: Sequence[str],
              deadline_at: float, say: Progress,
              env: Mapping[str, str] | None) -> tuple[StopStep, tuple[str, list[str]] | None]:
    name = record.name
    began = time.monotonic()
    same_host = record.host == envmod.host_id(env)
    if spec is not None and spec.stop:
        launch = _launch(spec, spec.stop, verb="down", store=store, secrets=secrets, env=env)
        log = launch.log
        say(f"stopping {name}: {launch.command}")
        if launch.process is None:
            message = f"the stop command of {name} `{launch.command}` could not be run: {launch.error}"
            return StopStep(name, "failed", "command", launch.command, error=message, log=str(log)), \
                (message, [f"Fix services.{name}.stop in the configuration."])
        process = launch.process
        try:
            code: int | None = process.wait(timeout=max(0.0, deadline_at - time.monotonic()))
        except subprocess.TimeoutExpired:
            _stop_group(process.pid, grace=1.0, process=process)
            code = None
        tail = launch.tail(secrets)
        if code != 0:
            message = (f"the stop command of {name} `{launch.command}` exited with code {code}"
                       if code is not None else
                       f"the stop command of {name} `{launch.command}` was still running at the deadline")
            return StopStep(name, "failed", "command", launch.command, code, time.monotonic() - began, message,
                            tail, str(log)), (message, [f"Its whole output is in {log}."])
        # a stop command may return before the server is gone (e.g. redis-cli shutdown)
        if record.pid is not None and same_host and _ours(record.pid, record.pid_start):
            _wait_group_gone(record.pid, min(deadline_at, time.monotonic() + _TERM_GRACE))
        step = StopStep(name, "stopped", "command", launch.command, code, None, None, tail, str(log))
    elif record.pid is not None and same_host and _ours(record.pid, record.pid_start) \
            and _group_alive(record.pid):
        say(f"stopping {name}: SIGTERM to process group {record.pid}")
        _stop_group(record.pid, grace=min(_TERM_GRACE, max(0.1, deadline_at - time.monotonic())))
        step = StopStep(name, "stopped", "signal", f"SIGTERM to process group {record.pid}")
    elif spec is not None and _check(spec, max(0.05, deadline_at - time.monotonic())).status != "healthy":
        say(f"{name} had stopped already")
        return StopStep(name, "gone", seconds=time.monotonic() - began), None
    else:
        message = _cannot_stop(name)
        return StopStep(name, "cannot_stop", error=message), \
            (message, [f"Give it a stop command (services.{name}.stop) so `netra-rm down` can stop it."])
    if spec is not None:
        result = _wait_down(spec, deadline_at)
        if result is not None and result.status == "healthy":
            message = f"{name} still answers after {step.command or 'being stopped'}"
            return replace(step, action="failed", seconds=time.monotonic() - began, error=message), \
                (message, [f"Check what else runs {name} at {mask_url(spec.url)}."])
    say(f"{name} is stopped")
    return replace(step, seconds=time.monotonic() - began), None


def _wait_down(spec: ServiceSpec, deadline_at: float) -> Any:
    """Check until ``spec`` no longer answers as healthy, or the deadline; the last result."""
    pauses = SERVICE_STATE.pauses()
    while True:
        left = deadline_at - time.monotonic()
        result = _check(spec, max(0.05, left))
        if result.status != "healthy" or deadline_at - time.monotonic() <= 0:
            return result
        threading.Event().wait(min(next(pauses), max(0.0, deadline_at - time.monotonic())))
