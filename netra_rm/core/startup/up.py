"""``netra-rm up``: start what the targets need and is down, in dependency order.

:func:`bring_up` checks the services the targets need (with their transitive
dependencies) once, plans from that (:func:`~netra_rm.core.startup.plan.plan_up`), and
starts the others level by level in the startup order of the dependency graph: a level's
services start in parallel, and the next level starts only when each of them answers
its checker. One deadline covers the whole run; every step gets the time that is left.
The first failure stops the run and is named: the service, its command, the command's
exit code and the last lines of its output.

A start command may return at once (``pg_ctl start``, ``redis-server --daemonize yes``,
``docker compose up -d``) or keep running as the server itself (``redis-server --port
6390``); either way the service is started when its checker says healthy. A command that
exits non-zero fails the run; a command still running when its service is healthy is the
server, and its pid is recorded (:mod:`netra_rm.core.startup.state`) so that ``down`` can
stop it (SIGTERM to its process group) when there is no stop command. A command still
running when the deadline passes is stopped again.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from netra_rm.backoff import SERVICE_STATE
from netra_rm.config import env as envmod
from netra_rm.config.commands import mask_command, secrets_of_all
from netra_rm.config.service import ServiceSpec
from netra_rm.core import liveness
from netra_rm.core.startup.checks import announce, check_alone, check_each_alone, not_healthy_at_deadline
from netra_rm.core.startup.commands import TERM_GRACE, launch, stop_group
from netra_rm.core.startup.plan import plan_up, resolve_targets
from netra_rm.core.startup.results import Progress, ServiceStep, UpResult
from netra_rm.core.startup.state import StartedServices, StartRecord, started_services
from netra_rm.errors import ExitCode, NetraRMError

if TYPE_CHECKING:
    from netra_rm.core.engine import Engine
    from netra_rm.services.result import ServiceResult

#: ``up``'s default deadline for the whole run, in seconds.
DEFAULT_UP_TIMEOUT = 60.0
_RETURN_GRACE = 0.5  # seconds a start command gets to return once its service is healthy


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
    specs, found = effective_services(engine, discover=discover, announce=False,
                                      timeout=max(0.1, min(5.0, deadline_at - time.monotonic())))
    notes = tuple(found.messages) if found is not None else ()
    discovery = found.to_dict() if found is not None else None
    announce(notes, say)
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
        results = check_each_alone(specs, needed, min(config.checks.deadline, deadline_at - time.monotonic()))
        plan = plan_up(needed, specs, results, deps, targets=target_list, dry_run=dry_run, secrets=secrets)
        steps = dict(plan.steps)
        if plan.failed is not None or dry_run:
            return finish(steps, failed=plan.failed, message=plan.message, remediation=plan.remediation)
        run = _Run(specs=dict(specs), store=store, deadline_at=deadline_at, timeout=timeout,
                   secrets=secrets, progress=say, env=env)
        if found is not None and found.source == "engine":
            run.refresh = lambda: effective_services(engine, discover=discover, announce=False, refresh=True,
                                                     timeout=max(0.1, min(5.0, run.left())))[0]
        if plan.levels:
            store.check_log_dir()  # a logs directory another user could write fails the run (exit 5)
        for level, group in plan.levels.items():
            if run.left() <= 0:
                name = group[0]
                message = (f"the deadline of {timeout:g} s ran out before {name} could be started "
                           f"(its dependencies took the time)")
                for other in needed:
                    if plan.actions[other] != "left_alone" and steps[other].action == "left_alone":
                        steps[other] = replace(steps[other], action="not_reached")
                return finish(steps, failed=name, message=message,
                              remediation=[f"Give the run more time: --timeout {max(timeout * 2, 30):g}."])
            failure = _run_level(run, group, steps, plan.actions)
            if failure is not None:
                for other in needed:
                    if plan.actions[other] != "left_alone" and steps[other].level > level:
                        steps[other] = replace(steps[other], action="not_reached")
                return finish(steps, failed=failure[0], message=failure[1], remediation=failure[2])
        return finish(steps)

    if dry_run:
        return body()

    def waiting() -> None:
        say("waiting for another `netra-rm up`/`down` to finish")

    with store.exclusive(deadline_at=deadline_at, on_wait=waiting):
        return body()


def _run_level(run: _Run, group: Sequence[str], steps: dict[str, ServiceStep],
               actions: Mapping[str, str]) -> tuple[str, str, list[str]] | None:
    """Start (or wait for) the services of one level at once, each in a thread; their
    steps are updated in ``steps``. The first failure (service, message, remediation), or None."""
    outcomes: dict[str, tuple[ServiceStep, str | None, list[str]]] = {}
    threads = []
    for name in group:
        def work(name: str = name) -> None:
            try:
                outcomes[name] = _bring_one(run, steps[name], actions[name])
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
            thread.join(TERM_GRACE)
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
    return first_failure


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

    launched = launch(spec, spec.start, verb="up", store=run.store, secrets=run.secrets, env=run.env)
    log = launched.log
    step = replace(step, command=launched.command, log=str(log))
    if launched.process is None:
        message = f"the start command of {name} `{launched.command}` could not be run: {launched.error}"
        return replace(step, action="failed", status="unhealthy", seconds=time.monotonic() - began,
                       error=message), message, [f"Fix services.{name}.start in the configuration."]
    process = launched.process
    run.progress(f"starting {name}: {launched.command}")
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
    tail = launched.tail(run.secrets)
    steps = [f"Its whole output is in {log}."]
    if code is not None and code != 0:
        run.record(restore)
        message = f"the start command of {name} `{launched.command}` exited with code {code}"
        steps.insert(0, f"Run it by hand to see why: {launched.command}")
        return replace(step, action="failed", status=result.status, reason=result.reason, exit_code=code,
                       seconds=seconds, error=message, output_tail=tail), message, steps
    check = result.error or result.reason
    action = "failed"
    if run.cancel.is_set():
        action = "cancelled"
        message = (f"stopped waiting for {name}: {run.first_failure} failed" if run.first_failure
                   else f"interrupted while waiting for {name} to become healthy")
    elif result.terminal:
        message = f"the start command of {name} `{launched.command}` ran, but {name} is not usable: {check}"
    else:
        message = (f"{name} did not become healthy within the {run.timeout:g} s deadline after its start "
                   f"command `{launched.command}`")
        message += (" (which exited with code 0)" if code == 0 else
                    " (which was still running and has been stopped)")
        message += f"; the last check said: {check}"
        steps = [f"If {name} is only slow to start, give the run more time: --timeout "
                 f"{max(run.timeout * 2, 30):g}.", *steps]
    if code is None:  # not healthy, still running: stop it again, it is not a server we can use
        stop_group(process.pid, grace=TERM_GRACE, process=process)
        run.record(restore)
        tail = launched.tail(run.secrets)
    elif spec.stop:  # it returned: what it started may run; `down` runs the stop command
        pass
    else:  # it returned and there is nothing `down` could do
        run.record(restore)
    steps.extend(result.remediation or ())
    return replace(step, action=action, status=result.status, reason=result.reason, exit_code=code,
                   running=False, seconds=seconds, error=message, output_tail=tail), message, steps


def _wait_healthy(run: _Run, spec: ServiceSpec, process: subprocess.Popen[bytes] | None) -> ServiceResult:
    """Check ``spec`` with backoff until healthy, a terminal failure, the start command
    failing, the run being cancelled, or the deadline; the last check's result."""
    pauses = SERVICE_STATE.pauses()
    refreshed = False
    last = not_healthy_at_deadline(spec)
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
        last = check_alone(spec, left)
        if last.status == "healthy" or last.terminal:
            return last
        left = run.left()
        if left <= 0 or run.cancel.wait(min(next(pauses), left)):
            return last
