"""The checks ``up`` and ``down`` run: each service on its own (its dependencies are the
plan's business), cut at its timeout or the time the run has left."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from netra_rm.config.service import ServiceSpec
from netra_rm.core.startup.results import Progress
from netra_rm.redact import mask_url

if TYPE_CHECKING:
    from netra_rm.services.result import ServiceResult


def check_alone(spec: ServiceSpec, left: float) -> ServiceResult:
    """One check of ``spec`` alone, cut at its timeout or ``left`` seconds."""
    from netra_rm.services.rounds import check_services

    alone = replace(spec, depends_on=())
    return check_services({spec.name: alone}, [spec.name], deadline=max(0.05, min(spec.timeout, left)))[spec.name]


def check_each_alone(specs: Mapping[str, ServiceSpec], names: Sequence[str],
                     deadline: float) -> dict[str, ServiceResult]:
    """``names`` checked at once, each alone, all cut at ``deadline`` seconds."""
    from netra_rm.services.rounds import check_services

    alone = {name: replace(specs[name], depends_on=()) for name in names}
    return check_services(alone, list(names), deadline=max(0.05, deadline))


def not_healthy_at_deadline(spec: ServiceSpec) -> ServiceResult:
    """The result of a check the run had no time left for."""
    from netra_rm.services.result import ServiceResult

    return ServiceResult(name=spec.name, kind=spec.kind, status="unhealthy", url=mask_url(spec.url),
                         reason="timeout", error=f"{spec.name}: not healthy at the deadline")


def announce(notes: Sequence[str], say: Progress) -> None:
    """Say each discovery note once per process ("Docker is not installed; ...")."""
    if notes:
        from netra_rm.services.compose import say_once

        for note in say_once(notes):
            say(note)
