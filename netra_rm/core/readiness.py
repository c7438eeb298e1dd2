"""The layer gate: are a layer's services (with their dependencies) healthy, and does its
pool have room? Optionally wait, with jittered exponential backoff, under one deadline."""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from netra_rm.backoff import LAYER_READY
from netra_rm.config.graph import transitive_dependencies
from netra_rm.core.engine import Engine


@dataclass(frozen=True)
class LayerVerdict:
    """The answer for one layer: ready or not, and why."""

    layer: str
    ready: bool
    missing: list[str]
    services: dict[str, dict[str, Any]]
    pool: dict[str, Any]
    pool_reasons: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    terminal: bool = False
    waited_seconds: float = 0.0
    attempts: int = 1
    discovery: dict[str, Any] | None = None  # Compose discovery's findings, when it is on

    def to_dict(self) -> dict[str, Any]:
        data = {
            "layer": self.layer, "ready": self.ready, "missing": self.missing, "services": self.services,
            "pool": {**self.pool, "has_room": not self.pool_reasons, "reasons": self.pool_reasons},
            "conflicts": self.conflicts, "waited_seconds": round(self.waited_seconds, 3),
            "attempts": self.attempts,
        }
        if self.discovery is not None:
            data["discovery"] = self.discovery
        return data


def layer_services(engine: Engine, layer: str) -> list[str]:
    """The services a layer needs, with their transitive dependencies, in startup order."""
    spec = engine.config.layer(layer)
    return transitive_dependencies(engine.config.dependencies, spec.services)


def check_service_results(engine: Engine, names: list[str] | None, *, rounds: Any = None) -> dict[str, Any]:
    """Run the checks for ``names`` (all services when None) under the configured deadline.

    ``rounds``, a :class:`~netra_rm.services.rounds.ServiceRounds`, carries what one round
    learnt into the next (a caller that checks again and again, like the monitor).
    """
    if names == []:
        return {}
    from netra_rm.services.rounds import ServiceRounds

    specs, _ = effective_services(engine)
    if rounds is None:
        rounds = ServiceRounds(deadline=engine.config.checks.deadline)
    result: dict[str, Any] = rounds.check(specs, names)
    return result


_DISCOVERY_TTL = 5.0  # seconds a discovery is reused (a `layer --timeout` loop asks often)
_discoveries: weakref.WeakKeyDictionary[Engine, tuple[float, str, Any]] = weakref.WeakKeyDictionary()


def effective_services(engine: Engine, *, discover: str | None = None, announce: bool = True,
                       refresh: bool = False, timeout: float = 5.0) -> tuple[dict[str, Any], Any]:
    """The services as the checks should see them, and the :class:`Discovery` used (or None):
    :func:`netra_rm.services.addresses.resolve_addresses`, reused for a few seconds.

    ``discover`` is ``"compose"`` or ``"none"``; None follows the configuration's
    ``discovery`` section (off unless set, so nothing is run by default). Discovery's
    warnings and notes are logged once per process when ``announce``.
    """
    from netra_rm.services import addresses

    config = engine.config
    if not addresses.discovery_wanted(config, discover):
        return dict(config.services), None
    now = time.monotonic()
    cached = _discoveries.get(engine)
    mode = discover or "config"
    if cached is not None and not refresh and cached[1] == mode and now - cached[0] < _DISCOVERY_TTL:
        found: addresses.Addresses = cached[2]
    else:
        found = addresses.resolve_addresses(config, discover=discover, timeout=timeout)
        _discoveries[engine] = (now, mode, found)
    if announce:
        addresses.announce(found.discovery)
    return dict(found.specs), found.discovery


def check_layer_once(engine: Engine, layer: str,
                     conflicts_for: Callable[[str], list[str]] | None = None, *, rounds: Any = None) -> LayerVerdict:
    """One look at the layer: its services and its pool (``rounds``: see
    :func:`check_service_results`)."""
    needed = layer_services(engine, layer)
    results = check_service_results(engine, needed, rounds=rounds)
    services = {name: r.to_dict() for name, r in results.items()}
    missing = [name for name, r in results.items() if r.status != "healthy"]
    terminal = any(getattr(r, "terminal", False) for r in results.values() if r.status == "unhealthy")
    decision, pool = engine.probe(engine.resolve_request(layer, "readiness-probe"))
    conflicts = conflicts_for(layer) if conflicts_for else []
    ready = not missing and decision.admitted and not conflicts
    _, found = effective_services(engine, announce=False)
    return LayerVerdict(layer=layer, ready=ready, missing=missing, services=services, pool=pool,
                        pool_reasons=list(decision.reasons), conflicts=conflicts, terminal=terminal,
                        discovery=found.to_dict() if found is not None else None)


def check_layer(engine: Engine, layer: str, *, timeout: float = 0.0,
                conflicts_for: Callable[[str], list[str]] | None = None,
                sleep: Callable[[float], None] = time.sleep,
                clock: Callable[[], float] = time.monotonic) -> LayerVerdict:
    """Check the layer; with ``timeout`` > 0, keep checking until it is ready, a failure is
    terminal, or the deadline passes. Backoff (:data:`netra_rm.backoff.LAYER_READY`) starts
    at 0.25 s and doubles up to 5 s, with jitter, and never sleeps past the deadline.
    While waiting, a service whose port still refuses is only knocked on (see
    :class:`~netra_rm.services.rounds.ServiceRounds`)."""
    from netra_rm.services.rounds import ServiceRounds

    engine.config.layer(layer)  # unknown layer: fail before any waiting
    rounds = ServiceRounds(deadline=engine.config.checks.deadline)
    start = clock()
    deadline = start + max(0.0, timeout)
    pauses, attempts = LAYER_READY.pauses(), 0
    while True:
        attempts += 1
        verdict = check_layer_once(engine, layer, conflicts_for, rounds=rounds)
        left = deadline - clock()
        if verdict.ready or verdict.terminal or left <= 0:
            return LayerVerdict(**{**verdict.__dict__, "waited_seconds": clock() - start, "attempts": attempts})
        sleep(min(left, next(pauses)))


def missing_details(verdict: LayerVerdict) -> list[Mapping[str, Any]]:
    """The missing services' results, root causes (not blocked ones) first."""
    rows = [{"name": name, **verdict.services[name]} for name in verdict.missing if name in verdict.services]
    return sorted(rows, key=lambda r: r.get("status") == "blocked")


def require_services(engine: Engine, names: Collection[str], *, wait: bool = False, timeout: float | None = None,
                     sleep: Callable[[float], None] = time.sleep,
                     clock: Callable[[], float] = time.monotonic) -> float:
    """The ``--requires`` gate: the named services and what they depend on must be
    healthy (the checks ``layer`` runs). With ``wait``, they are waited for, with
    backoff, up to ``timeout`` seconds (None: until a failure is terminal); returns the
    seconds spent, which the caller takes off the time left for pool room.

    Raises :class:`~netra_rm.errors.ServiceUnavailableError` naming the root cause (the
    first unhealthy service in dependency order) with its remediation steps.
    """
    if not names:
        return 0.0
    from netra_rm.errors import ServiceUnavailableError
    from netra_rm.services.rounds import ServiceRounds

    for name in names:
        engine.config.service(name)  # an unknown name is bad input, before any check
    needed = transitive_dependencies(engine.config.dependencies, list(names))
    rounds = ServiceRounds(deadline=engine.config.checks.deadline)
    start = clock()
    deadline = None if timeout is None else start + max(0.0, timeout)
    pauses = LAYER_READY.pauses()
    while True:
        results = check_service_results(engine, needed, rounds=rounds)
        down = [name for name in needed if name in results and results[name].status != "healthy"]
        if not down:
            return clock() - start
        terminal = any(getattr(results[n], "terminal", False) for n in down if results[n].status == "unhealthy")
        left = None if deadline is None else deadline - clock()
        if not wait or terminal or (left is not None and left <= 0):
            roots = [n for n in down if results[n].status != "blocked"] or down
            root = results[roots[0]]
            waited = f" (waited {clock() - start:.0f}s)" if wait else ""
            detail = (root.error or root.status) + waited
            steps = list(root.remediation)
            blocked = [n for n in down if n != roots[0]]
            if blocked:
                steps.append(f"Also not ready: {', '.join(blocked)}.")
            raise ServiceUnavailableError(roots[0], detail, steps)
        pause = next(pauses)
        sleep(pause if left is None else min(left, pause))
