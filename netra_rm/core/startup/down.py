"""``netra-rm down``: stop what ``up`` started (:mod:`netra_rm.core.startup.state`),
dependents first: the service's stop command, else SIGTERM to the process group its start
command left running; then check that the service no longer answers."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from netra_rm.backoff import SERVICE_STATE
from netra_rm.config import env as envmod
from netra_rm.config import graph
from netra_rm.config.commands import command_line, mask_command, secrets_of_all
from netra_rm.config.service import ServiceSpec
from netra_rm.core.startup.checks import announce, check_alone
from netra_rm.core.startup.commands import TERM_GRACE, group_alive, launch, ours, stop_group, wait_group_gone
from netra_rm.core.startup.plan import resolve_targets
from netra_rm.core.startup.results import DownResult, Progress, StopStep
from netra_rm.core.startup.state import StartedServices, StartRecord, started_services
from netra_rm.redact import mask_url

if TYPE_CHECKING:
    from netra_rm.core.engine import Engine
    from netra_rm.services.result import ServiceResult

#: ``down``'s default deadline, in seconds.
DEFAULT_DOWN_TIMEOUT = 60.0


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
            announce(notes, say)
        secrets = secrets_of_all(specs.values())
        steps: list[StopStep] = []
        first: tuple[str, str, list[str]] | None = None
        for name in names:
            record, spec = records[name], specs.get(name)
            if dry_run:
                if spec is not None and spec.stop:
                    steps.append(StopStep(name, "would_stop", "command",
                                          mask_command(command_line(spec.stop, shell=spec.shell), secrets)))
                elif record.pid is not None and ours(record.pid, record.pid_start) and group_alive(record.pid):
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
        launched = launch(spec, spec.stop, verb="down", store=store, secrets=secrets, env=env)
        log = launched.log
        say(f"stopping {name}: {launched.command}")
        if launched.process is None:
            message = f"the stop command of {name} `{launched.command}` could not be run: {launched.error}"
            return StopStep(name, "failed", "command", launched.command, error=message, log=str(log)), \
                (message, [f"Fix services.{name}.stop in the configuration."])
        process = launched.process
        try:
            code: int | None = process.wait(timeout=max(0.0, deadline_at - time.monotonic()))
        except subprocess.TimeoutExpired:
            stop_group(process.pid, grace=1.0, process=process)
            code = None
        tail = launched.tail(secrets)
        if code != 0:
            message = (f"the stop command of {name} `{launched.command}` exited with code {code}"
                       if code is not None else
                       f"the stop command of {name} `{launched.command}` was still running at the deadline")
            return StopStep(name, "failed", "command", launched.command, code, time.monotonic() - began, message,
                            tail, str(log)), (message, [f"Its whole output is in {log}."])
        # a stop command may return before the server is gone (e.g. redis-cli shutdown)
        if record.pid is not None and same_host and ours(record.pid, record.pid_start):
            wait_group_gone(record.pid, min(deadline_at, time.monotonic() + TERM_GRACE))
        step = StopStep(name, "stopped", "command", launched.command, code, None, None, tail, str(log))
    elif record.pid is not None and same_host and ours(record.pid, record.pid_start) \
            and group_alive(record.pid):
        say(f"stopping {name}: SIGTERM to process group {record.pid}")
        stop_group(record.pid, grace=min(TERM_GRACE, max(0.1, deadline_at - time.monotonic())))
        step = StopStep(name, "stopped", "signal", f"SIGTERM to process group {record.pid}")
    elif spec is not None and check_alone(spec, max(0.05, deadline_at - time.monotonic())).status != "healthy":
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


def _wait_down(spec: ServiceSpec, deadline_at: float) -> ServiceResult:
    """Check until ``spec`` no longer answers as healthy, or the deadline; the last result."""
    pauses = SERVICE_STATE.pauses()
    while True:
        left = deadline_at - time.monotonic()
        result = check_alone(spec, max(0.05, left))
        if result.status != "healthy" or deadline_at - time.monotonic() <= 0:
            return result
        threading.Event().wait(min(next(pauses), max(0.0, deadline_at - time.monotonic())))
