"""What each command produces: one result object, from one library call.

Every command of the command line is option parsing, one call here (or into the core
that this module names), and handing the result to the one renderer
(:func:`netra_rm.render.show`), which draws it as a table, prints its JSON document
(``{"schema_version": ..., ...}``), OpenMetrics or GitHub annotations, or its quiet form.
A Python user makes the same calls and gets the same results: ``status_report(engine)``
builds the very document ``netra-rm status --json`` prints.

A result says what it is (``kind``), what the command's exit code is (``exit_code``),
and what its JSON document holds (``document()``, without the envelope).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from netra_rm.errors import ExitCode

if TYPE_CHECKING:
    from netra_rm.config.model import Config
    from netra_rm.core.engine import Engine, Reclaimed
    from netra_rm.core.readiness import LayerVerdict
    from netra_rm.core.verify import Report
    from netra_rm.ledger.migrate import MigrationResult
    from netra_rm.records import Allocation, PoolRecord

#: The version of every JSON document netra-rm prints; bumped on incompatible change.
JSON_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Result:
    """The base of every result: no document, exit 0."""

    kind = "result"

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK

    def document(self) -> dict[str, Any]:
        return {}

    def json_document(self) -> dict[str, Any]:
        """The document in the envelope every ``--json`` output shares."""
        return {"schema_version": JSON_SCHEMA_VERSION, **self.document()}


# -- status and layer ------------------------------------------------------------------------

@dataclass(frozen=True)
class StatusReport(Result):
    """``status``: the services, the pools and allocations, the machine and the conflicts."""

    resources: Mapping[str, Any]
    services: Mapping[str, Any]
    strict: bool = False
    made_at: float = field(default_factory=time.time)
    kind = "status"

    @property
    def conflicts(self) -> list[str]:
        return list(self.resources.get("conflicts") or [])

    @property
    def healthy(self) -> bool:
        return self.services.get("healthy_services", 0) >= self.services.get("total_services", 0)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.UNAVAILABLE if self.strict and not self.healthy else ExitCode.OK

    def document(self) -> dict[str, Any]:
        return {"resources": dict(self.resources), "services": dict(self.services)}


def status_report(engine: Engine, *, strict: bool = False) -> StatusReport:
    """Check every service, sample the machine, read the pools and find the conflicts:
    what ``netra-rm status`` shows, and what its ``--json`` prints."""
    from netra_rm.agent import service_status
    from netra_rm.core.conflicts import find_conflicts
    from netra_rm.machine import live
    from netra_rm.monitor.sampler import Sampler

    sampler = Sampler()
    services = service_status(engine)  # takes a moment: the CPU sample spans it
    sample = sampler.sample()
    resources = engine.resource_status(system_metrics=sample.to_dict())
    live.annotate(resources["active_allocations"], engine.host)  # what each owner uses now
    resources["conflicts"] = find_conflicts(engine, sample=sample)
    return StatusReport(resources=resources, services=services, strict=strict)


@dataclass(frozen=True)
class LayerReport(Result):
    """``layer NAME``: ready or not, and why."""

    verdict: LayerVerdict
    kind = "layer"

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.verdict.ready else ExitCode.UNAVAILABLE

    def document(self) -> dict[str, Any]:
        return self.verdict.to_dict()


def layer_report(engine: Engine, name: str, *, timeout: float = 0.0) -> LayerReport:
    """Is the layer ready: its services (with their dependencies) healthy, its pool with
    room, no conflict in it? With ``timeout``, wait for it (see :func:`check_layer`)."""
    from netra_rm.core.conflicts import find_conflicts
    from netra_rm.core.readiness import check_layer

    return LayerReport(check_layer(engine, name, timeout=timeout,
                                   conflicts_for=lambda layer_name: find_conflicts(engine, layer=layer_name)))


# -- allocations -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Granted(Result):
    """``allocate``: the allocation granted."""

    allocation: Allocation
    kind = "allocation"

    def document(self) -> dict[str, Any]:
        from netra_rm.core.status import allocation_view

        return allocation_view(self.allocation, time.time())


@dataclass(frozen=True)
class Released(Result):
    """``release``: what was released and the ids not found (exit 4 when any)."""

    released: Sequence[Allocation]
    missing: Sequence[str]
    kind = "release"

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.NOT_FOUND if self.missing else ExitCode.OK

    def document(self) -> dict[str, Any]:
        return {"released": [a.id for a in self.released], "missing": list(self.missing)}


def release(engine: Engine, ids: Iterable[str]) -> Released:
    result = engine.release(ids)
    return Released(released=result.released, missing=result.missing)


@dataclass(frozen=True)
class Cleaned(Result):
    """``cleanup``: what was released, and why."""

    reclaimed: Sequence[Reclaimed]
    kind = "cleanup"

    def document(self) -> dict[str, Any]:
        return {"released": [r.to_dict() for r in self.reclaimed]}


def cleanup(engine: Engine, *, force: bool = False) -> Cleaned:
    return Cleaned(engine.cleanup(force=force))


# -- the journal -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Verified(Result):
    """``verify``: the replay's findings (exit 1 when any)."""

    report: Report
    kind = "verify"

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.report.clean else ExitCode.UNAVAILABLE

    def document(self) -> dict[str, Any]:
        data = self.report.to_dict()
        data.pop("schema_version", None)
        return data


def verify(engine: Engine) -> Verified:
    from netra_rm.core.verify import verify_ledger

    return Verified(verify_ledger(engine))


@dataclass(frozen=True)
class History(Result):
    """``history``: the last events, oldest first, and the journal lines that could not
    be read among those read."""

    events: Sequence[Mapping[str, Any]]
    unreadable: Sequence[int] = ()
    kind = "history"

    def document(self) -> dict[str, Any]:
        return {"events": list(self.events), "unreadable_lines": len(self.unreadable)}


def history(engine: Engine, *, limit: int | None = 20) -> History:
    from netra_rm.core.verify import history_report

    events, unreadable = history_report(engine, limit=limit)
    return History(events=events, unreadable=unreadable)


@dataclass(frozen=True)
class Recommendations(Result):
    """``recommend``: per layer and category, what was used and what to reserve."""

    found: Sequence[Any]
    kind = "recommend"

    def document(self) -> dict[str, Any]:
        return {"recommendations": [r.to_dict() for r in self.found]}


def recommend(engine: Engine, *, layer: str | None = None) -> Recommendations:
    from netra_rm.core.recommend import recommend as right_size
    from netra_rm.core.verify import ledger_history

    if layer is not None:
        engine.config.layer(layer)  # an unknown layer is bad input
    return Recommendations(right_size(ledger_history(engine), cpus=os.cpu_count() or 1, layer=layer))


# -- pools and ledgers -----------------------------------------------------------------------

@dataclass(frozen=True)
class Pools(Result):
    """``pool show``: each pool's capacity, use and state."""

    pools: Sequence[Mapping[str, Any]]
    kind = "pools"

    def document(self) -> dict[str, Any]:
        return {"pools": list(self.pools)}


def pools(engine: Engine, *, name: str | None = None) -> Pools:
    found = engine.pools()
    if name is not None:
        found = [p for p in found if p["name"] == name]
        if not found:
            from netra_rm.errors import UnknownNameError

            raise UnknownNameError(f"unknown pool {name!r}; `netra-rm pool show` lists them.")
    return Pools(found)


@dataclass(frozen=True)
class PoolChanged(Result):
    """``pool set/drain/resume``: the pool as the ledger now holds it."""

    name: str
    record: PoolRecord
    kind = "pool"

    def document(self) -> dict[str, Any]:
        return {"pool": self.record.to_dict()}


def change_pool(engine: Engine, name: str, **change: Any) -> PoolChanged:
    if all(v is None for k, v in change.items() if k != "host"):
        from netra_rm.errors import UsageError

        raise UsageError("say what to change: --instances N, --memory-mb M or --cpu-percent C.")
    return PoolChanged(name=name, record=engine.change_pool(name, **change))


@dataclass(frozen=True)
class Migrated(Result):
    """``ledger migrate``: what was copied."""

    result: MigrationResult
    kind = "migrate"

    def document(self) -> dict[str, Any]:
        data = self.result.to_dict()
        data.pop("schema_version", None)
        return data


def migrate(source: str, target: str, *, engine: Engine) -> Migrated:
    from netra_rm.ledger import open_ledger
    from netra_rm.ledger.migrate import migrate as copy

    return Migrated(copy(open_ledger(source), open_ledger(target), scope_of=engine.scope_of))


# -- the configuration -----------------------------------------------------------------------

@dataclass(frozen=True)
class Graph(Result):
    """``graph``: who depends on whom, the startup levels, and each layer's services."""

    dependencies: Mapping[str, Sequence[str]]
    levels: Sequence[Sequence[str]]
    layers: Mapping[str, Sequence[str]]
    kind = "graph"

    def document(self) -> dict[str, Any]:
        return {"dependencies": {k: list(v) for k, v in self.dependencies.items()},
                "levels": [list(level) for level in self.levels],
                "layers": {k: list(v) for k, v in self.layers.items()}}


def graph(config: Config) -> Graph:
    from netra_rm.config.graph import startup_levels

    deps = {name: list(d) for name, d in config.dependencies.items()}
    return Graph(dependencies=deps, levels=startup_levels(deps),
                 layers={n: list(layer.services) for n, layer in config.layers.items()})


@dataclass(frozen=True)
class ConfigShown(Result):
    """``config show``: the effective configuration, secrets masked."""

    config: Config
    kind = "config"

    def document(self) -> dict[str, Any]:
        from netra_rm.config.show import effective_config, origins

        return {"source": self.config.source, "origins": origins(self.config), **effective_config(self.config)}


@dataclass(frozen=True)
class ConfigChecked(Result):
    """``config validate``: the file is valid (anything else is an error, exit 2)."""

    config: Config
    kind = "config-valid"

    def document(self) -> dict[str, Any]:
        return {"valid": True, "source": self.config.source, "layers": len(self.config.layers),
                "services": len(self.config.services)}


def config_validate(path: str | None) -> ConfigChecked:
    """Check a configuration file (the built-in one when ``path`` is None) and, with
    Compose discovery on, the compose project it reads: an error names the key at fault."""
    from netra_rm.config import load_config, validate_file
    from netra_rm.services.addresses import validate_discovery

    cfg = validate_file(path) if path else load_config(env={})
    validate_discovery(cfg)  # a compose project that discovery cannot read is an error here
    return ConfigChecked(cfg)


@dataclass(frozen=True)
class Started(Result):
    """``up`` / ``down``: what was started or stopped (exit 1 naming the service that failed)."""

    result: Any
    verb: str  # "up" or "down"
    kind = "startup"

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.result.error() is None else ExitCode.UNAVAILABLE

    def document(self) -> dict[str, Any]:
        data = dict(self.result.to_dict())
        data.pop("schema_version", None)
        return data
