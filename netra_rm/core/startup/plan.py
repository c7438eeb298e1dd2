"""Planning ``up``: which services it needs, and what it will do with each, decided from
the configuration and one round of checks. Pure: no processes, files or clocks, so each
decision has tests of its own (``tests/test_up_plan.py``).

A needed service that is healthy is left alone; one coming up by itself (a reason in
:data:`WAIT_REASONS`) is waited for; one that is down and has a start command is started.
One that is down without a start command, or answers in a way a restart cannot fix,
fails the run before anything is started, naming what needs it.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from netra_rm.config import graph
from netra_rm.config.commands import command_line, mask_command
from netra_rm.config.service import ServiceSpec
from netra_rm.core.startup.results import ServiceStep
from netra_rm.errors import UnknownNameError
from netra_rm.redact import mask_url

if TYPE_CHECKING:
    from netra_rm.config.model import Config
    from netra_rm.services.result import ServiceResult

#: Check reasons that mean "coming up, or up and busy": wait for it, do not start it again.
WAIT_REASONS = frozenset({"starting", "loading", "too_many_connections"})
#: The planned actions that fail the run before anything starts.
_CANNOT = ("cannot_start", "no_start_command")


def resolve_targets(config: Config, targets: Iterable[str]) -> list[str]:
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


def dependents(deps: Mapping[str, Sequence[str]], name: str, among: Iterable[str]) -> list[str]:
    """The services in ``among`` that depend on ``name``, directly or through others."""
    pool = list(among)
    return [other for other in pool
            if other != name and name in graph.transitive_dependencies(deps, [other])]


@dataclass(frozen=True)
class UpPlan:
    """What ``up`` will do with each needed service (in startup order).

    ``actions`` holds the decision per service: ``left_alone``, ``wait``, ``start``,
    ``cannot_start`` or ``no_start_command``; ``steps`` the results as they stand before
    anything runs (a dry run's answer). When a service cannot be started, ``failed`` names
    it, with the message and remediation for the run's error, and nothing is to be done;
    otherwise ``levels`` lists, level by level, the services to start or wait for.
    """

    steps: dict[str, ServiceStep] = field(default_factory=dict)
    actions: dict[str, str] = field(default_factory=dict)
    levels: dict[int, tuple[str, ...]] = field(default_factory=dict)
    failed: str | None = None
    message: str | None = None
    remediation: tuple[str, ...] = ()


def plan_up(needed: Sequence[str], specs: Mapping[str, ServiceSpec], results: Mapping[str, ServiceResult],
            deps: Mapping[str, Sequence[str]], *, targets: Sequence[str] = (), dry_run: bool = False,
            secrets: Sequence[str] = ()) -> UpPlan:
    """Decide what ``up`` does with each of ``needed`` (a target's services in startup
    order, see :func:`resolve_targets`), given each one's check ``results``.

    ``deps`` is the whole dependency graph, ``targets`` what was asked for (named in the
    failure), ``secrets`` what command lines must not show. With ``dry_run`` the steps say
    ``would_start`` and ``would_wait``.
    """
    level_of = {name: i for i, level in enumerate(graph.startup_levels(deps)) for name in level}
    steps: dict[str, ServiceStep] = {}
    actions: dict[str, str] = {}
    for name in needed:
        spec, result = specs[name], results[name]
        steps[name] = ServiceStep(name=name, level=level_of[name], action="left_alone", status=result.status,
                                  reason=result.reason, error=result.error, url=mask_url(spec.url),
                                  depends_on=tuple(spec.depends_on),
                                  command=mask_command(command_line(spec.start, shell=spec.shell), secrets)
                                  if spec.start else None)
        actions[name] = _action(spec, result)
    for name in needed:
        if actions[name] in _CANNOT:
            message, remediation = _failure(name, actions[name], specs[name], results[name],
                                            dependents(deps, name, needed), targets)
            for other in needed:
                action = actions[other]
                if other == name or action in _CANNOT:
                    steps[other] = replace(steps[other], action=action)
                elif action != "left_alone":
                    steps[other] = replace(steps[other], action=f"would_{action}" if dry_run else "not_reached")
            return UpPlan(steps, actions, failed=name, message=message, remediation=tuple(remediation))
    levels: dict[int, list[str]] = {}
    for name in needed:
        if actions[name] != "left_alone":
            levels.setdefault(level_of[name], []).append(name)
            if dry_run:
                steps[name] = replace(steps[name], action=f"would_{actions[name]}")
    return UpPlan(steps, actions, {level: tuple(names) for level, names in sorted(levels.items())})


def _action(spec: ServiceSpec, result: ServiceResult) -> str:
    if result.status == "healthy":
        return "left_alone"
    if result.reason in WAIT_REASONS:
        return "wait"
    if result.terminal:
        return "cannot_start"
    if not spec.start:
        return "no_start_command"
    return "start"


def _failure(name: str, action: str, spec: ServiceSpec, result: ServiceResult, needed_by_these: Sequence[str],
             targets: Sequence[str]) -> tuple[str, list[str]]:
    """The run's error when ``name`` cannot be started: the message and remediation."""
    needed_by = ""
    if needed_by_these:
        needed_by = f"; {', '.join(needed_by_these)} {'depends' if len(needed_by_these) == 1 else 'depend'} on it"
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


