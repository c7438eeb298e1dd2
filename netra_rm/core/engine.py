"""The engine: admission, release and reclaiming over one ledger, for one configuration.

Everything a command or the Python API does to allocations is a method here. Each
method is one ledger transaction that first drops expired allocations and those whose
owner process on this host is gone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from netra_rm.config import env as envmod
from netra_rm.config.model import Config
from netra_rm.core import liveness
from netra_rm.core.admission import Decision, Usage, admit, usage_by_layer, validate_request
from netra_rm.core.capacity import MachineCapacity, read_capacity
from netra_rm.core.model import Allocation, Owner, Request, ResourceRequirements
from netra_rm.errors import AllocationNotFoundError, NoCapacityError, UsageError
from netra_rm.ledger import Ledger, LedgerState, open_ledger


@dataclass(frozen=True)
class Reclaimed:
    """An allocation the engine dropped, and why ("expired", "owner gone", "released", "forced")."""

    allocation: Allocation
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.allocation.id, "layer": self.allocation.layer,
                "category": self.allocation.category, "reason": self.reason}


@dataclass(frozen=True)
class ReleaseResult:
    released: list[Allocation]
    missing: list[str]


class Engine:
    """Admission and bookkeeping of allocations for one configuration and one ledger."""

    def __init__(self, config: Config, ledger: Ledger, *, env: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.time,
                 capacity_reader: Callable[[], MachineCapacity] = read_capacity) -> None:
        self.config = config
        self.ledger = ledger
        self.host = envmod.host_id(env)
        self.user = envmod.user_name(env)
        self.clock = clock
        self.capacity_reader = capacity_reader

    @classmethod
    def from_options(cls, *, config: Config | None = None, config_path: str | None = None,
                     ledger: str | Ledger | None = None, env: Mapping[str, str] | None = None) -> Engine:
        """Build an engine from paths, as the CLI and ``create_resource_manager`` do."""
        from netra_rm.config import load_config

        cfg = config or load_config(config_path, env=env)
        led = ledger if ledger is not None and not isinstance(ledger, str) else open_ledger(ledger, env=env)
        return cls(cfg, led, env=env)

    # -- requests and owners -------------------------------------------------------------

    def resolve_request(self, layer: str, category: str, *, memory_mb: int | None = None,
                        cpu_percent: float | None = None, dedicated: bool = False,
                        requires: Iterable[str] = (), duration_minutes: float | None = None) -> Request:
        """Fill in the layer's defaults and check the request is valid and could ever fit."""
        spec = self.config.layer(layer)
        if not category or not category.strip():
            raise UsageError("the category must not be empty; name the kind of tests, e.g. --category api_tests.")
        needed = tuple(dict.fromkeys(requires))
        for name in needed:
            self.config.service(name)
        request = Request(
            layer=layer, category=category,
            memory_mb=spec.default_memory_mb if memory_mb is None else memory_mb,
            cpu_percent=spec.default_cpu_percent if cpu_percent is None else cpu_percent,
            dedicated=dedicated, requires=needed,
            duration_minutes=self.config.default_duration_minutes if duration_minutes is None else duration_minutes,
        )
        validate_request(request, spec.pool, self.config.limits)
        return request

    def request_from_requirements(self, layer: str, category: str, requirements: ResourceRequirements | None,
                                  duration_minutes: float | None = None) -> Request:
        req = requirements or ResourceRequirements()
        return self.resolve_request(layer, category, memory_mb=req.min_memory_mb, cpu_percent=req.min_cpu_percent,
                                    dedicated=req.dedicated_resources, requires=req.required_services(),
                                    duration_minutes=duration_minutes)

    def owner(self, pid: int | None = None) -> Owner:
        """An owner on this host: process ``pid`` (checked to exist), or no process."""
        if pid is None:
            return Owner(host=self.host, user=self.user)
        token = liveness.start_token(pid)
        if token is None:
            raise UsageError(f"--owner-pid {pid}: no such process on this host.")
        return Owner(host=self.host, user=self.user, pid=pid, start=token)

    def current_process_owner(self) -> Owner:
        pid, token = liveness.current_process()
        return Owner(host=self.host, user=self.user, pid=pid, start=token)

    # -- transactions --------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[tuple[LedgerState, list[Reclaimed]]]:
        """One ledger transaction, with expired and orphaned allocations already dropped."""
        with self.ledger.transaction() as state:
            reclaimed = self._reclaim(state)
            yield state, reclaimed

    def _reclaim(self, state: LedgerState) -> list[Reclaimed]:
        now = self.clock()
        gone: list[Reclaimed] = []
        alive_cache: dict[tuple[int, str | None], bool] = {}
        for a in state.allocations:
            if a.expires_at <= now:
                gone.append(Reclaimed(a, "expired"))
                continue
            owner = a.owner
            if owner.pid is not None and owner.host == self.host:
                key = (owner.pid, owner.start)
                alive = alive_cache.get(key)
                if alive is None:
                    alive = alive_cache[key] = liveness.is_alive(owner.pid, owner.start)
                if not alive:
                    gone.append(Reclaimed(a, "owner gone"))
        if gone:
            state.remove({r.allocation.id for r in gone})
            for r in gone:
                state.events.append(_event("expire" if r.reason == "expired" else "reclaim", r.allocation, now))
        return gone

    # -- admission -----------------------------------------------------------------------

    def decide(self, state: LedgerState, request: Request) -> Decision:
        """Would ``request`` be admitted into ``state`` now?"""
        by_layer = usage_by_layer(state.allocations)
        layer = self.config.layer(request.layer)
        return admit(request, pool=layer.pool, limits=self.config.limits,
                     layer_allocations=by_layer.get(request.layer, ()),
                     all_usage=Usage.of(state.allocations), machine_free_mb=self._machine_free_mb(state))

    def _machine_free_mb(self, state: LedgerState) -> float | None:
        settings = self.config.machine
        if not settings.check_memory:
            return None
        capacity = self.capacity_reader()
        return capacity.memory_available_mb - settings.memory_reserve_mb - self._reserved_unused_mb(state)

    def _reserved_unused_mb(self, state: LedgerState) -> float:
        """Memory reserved on this host but not yet in use by its owner processes.

        An owner's resident memory counts against its reservations; allocations without
        an owner process count in full.
        """
        per_owner: dict[tuple[int, str | None] | None, float] = {}
        for a in state.allocations:
            if a.owner.host != self.host:
                continue
            key = (a.owner.pid, a.owner.start) if a.owner.pid is not None else None
            per_owner[key] = per_owner.get(key, 0.0) + a.memory_mb
        total = 0.0
        for key, reserved in per_owner.items():
            used = liveness.rss_mb(key[0]) if key is not None else None
            total += max(0.0, reserved - (used or 0.0))
        return total

    def try_allocate(self, request: Request, owner: Owner) -> tuple[Allocation | None, Decision]:
        """Admit ``request`` if it fits now; never waits."""
        with self.transaction() as (state, _):
            decision = self.decide(state, request)
            if not decision.admitted:
                return None, decision
            now = self.clock()
            allocation = Allocation(
                id=_new_id(state), layer=request.layer, category=request.category, memory_mb=request.memory_mb,
                cpu_percent=request.cpu_percent, dedicated=request.dedicated, requires=request.requires,
                created_at=round(now, 3), expires_at=round(now + request.duration_minutes * 60, 3),
                slot=decision.slot or 0, owner=owner, fencing_token=state.next_fencing_token(),
            )
            state.add(allocation)
            state.events.append(_event("grant", allocation, now))
            return allocation, decision

    def allocate(self, request: Request, owner: Owner) -> Allocation:
        """Admit ``request`` now or raise :class:`NoCapacityError` with the reasons."""
        allocation, decision = self.try_allocate(request, owner)
        if allocation is None:
            raise NoCapacityError(
                f"no capacity for {request.category} in layer {request.layer}: {join_reasons(decision.reasons)}",
                reasons=decision.reasons,
                remediation=["Wait for running allocations to finish (`netra-rm status` lists them), "
                             "or release stale ones with `netra-rm cleanup`."])
        return allocation

    # -- release and cleanup -------------------------------------------------------------

    def release(self, ids: Iterable[str]) -> ReleaseResult:
        """Release these allocations; the ids not found are reported, the others released."""
        wanted = list(dict.fromkeys(ids))
        with self.transaction() as (state, _):
            released = state.remove(set(wanted))
            now = self.clock()
            for a in released:
                state.events.append(_event("release", a, now))
        found = {a.id for a in released}
        return ReleaseResult(released=released, missing=[i for i in wanted if i not in found])

    def release_or_raise(self, ids: Iterable[str]) -> list[Allocation]:
        result = self.release(ids)
        if result.missing:
            raise AllocationNotFoundError(
                f"allocation {', '.join(result.missing)} not found (already released or expired).",
                ids=result.missing)
        return result.released

    def cleanup(self, *, force: bool = False) -> list[Reclaimed]:
        """Drop expired and orphaned allocations; with ``force``, every allocation."""
        with self.transaction() as (state, reclaimed):
            if force and state.allocations:
                now = self.clock()
                dropped = state.remove({a.id for a in state.allocations})
                for a in dropped:
                    state.events.append(_event("release", a, now, reason="forced"))
                reclaimed = reclaimed + [Reclaimed(a, "forced") for a in dropped]
            if force:
                state.changed = True  # write a fresh, valid ledger even when it was empty
            return reclaimed

    # -- status --------------------------------------------------------------------------

    def active_allocations(self) -> list[Allocation]:
        with self.transaction() as (state, _):
            return list(state.allocations)

    def resource_status(self, *, system_metrics: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The pools, the active allocations and the machine, as the contract's dict."""
        with self.transaction() as (state, _):
            allocations = list(state.allocations)
            waiters = list(state.waiters)
        now = self.clock()
        by_layer = usage_by_layer(allocations)
        pools = {name: pool_status(layer.pool, by_layer.get(name, ())) for name, layer in self.config.layers.items()}
        total = Usage.of(allocations)
        limits = self.config.limits
        capacity = self.capacity_reader()
        metrics: dict[str, Any] = dict(system_metrics or {})
        metrics.setdefault("capacity", capacity.to_dict())
        return {
            "total_allocations": len(allocations),
            "resource_pools": pools,
            "active_allocations": [allocation_view(a, now) for a in allocations],
            "global_limits": {
                "max_memory_mb": limits.max_memory_mb, "allocated_memory_mb": total.memory_mb,
                "max_cpu_percent": limits.max_cpu_percent, "allocated_cpu_percent": total.cpu_percent,
                "max_parallel_instances": limits.max_parallel_instances, "active_instances": total.instances,
                "sources": dict(limits.sources),
            },
            "system_metrics": metrics,
            "waiters": waiters,
            "ledger": self.ledger.location,
        }

    def pool_status(self, layer: str) -> dict[str, Any]:
        """One layer's pool with its usage now."""
        spec = self.config.layer(layer)
        with self.transaction() as (state, _):
            in_layer = [a for a in state.allocations if a.layer == layer]
        return pool_status(spec.pool, in_layer)


def pool_status(pool: Any, allocations: Iterable[Allocation]) -> dict[str, Any]:
    """The contract's per-layer pool dict."""
    used = Usage.of(allocations)
    return {
        "max_memory_mb": pool.memory_mb, "allocated_memory_mb": used.memory_mb,
        "available_memory_mb": max(0, pool.memory_mb - used.memory_mb),
        "max_cpu_percent": pool.cpu_percent, "allocated_cpu_percent": used.cpu_percent,
        "available_cpu_percent": round(max(0.0, pool.cpu_percent - used.cpu_percent), 6),
        "max_parallel_instances": pool.instances, "active_instances": used.instances,
        "available_instances": max(0, pool.instances - used.instances) if not used.dedicated else 0,
        "dedicated": used.dedicated,
    }


def allocation_view(allocation: Allocation, now: float) -> dict[str, Any]:
    """An allocation as shown to users: the ledger record plus age and time left."""
    data = allocation.to_dict()
    data["age_seconds"] = round(max(0.0, now - allocation.created_at), 1)
    data["expires_in_seconds"] = round(allocation.expires_at - now, 1)
    return data


def join_reasons(reasons: Iterable[str]) -> str:
    """Several reasons as one sentence."""
    return "; ".join(r.rstrip(".") for r in reasons) + "."


def _new_id(state: LedgerState) -> str:
    taken = {a.id for a in state.allocations}
    while True:
        candidate = os.urandom(6).hex()
        if candidate not in taken:
            return candidate


def _event(kind: str, allocation: Allocation, now: float, **extra: Any) -> dict[str, Any]:
    event = {"time": round(now, 3), "event": kind, "id": allocation.id, "layer": allocation.layer,
             "category": allocation.category, "memory_mb": allocation.memory_mb,
             "cpu_percent": allocation.cpu_percent, "dedicated": allocation.dedicated,
             "slot": allocation.slot, "fencing_token": allocation.fencing_token,
             "owner": allocation.owner.to_dict()}
    event.update(extra)
    return event
