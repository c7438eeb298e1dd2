"""The engine: admission, release and reclaiming over one ledger, for one configuration.

Everything a command or the Python API does to allocations is a method here. Each
method is one ledger transaction that first drops expired allocations, those whose
owner process on this host is gone and, on a ledger shared by several hosts (Redis,
PostgreSQL), those whose lease lapsed (see :mod:`netra_rm.core.lease`).

Pool scopes. On a shared ledger a ``host`` pool (the default) and the global caps count
the allocations of this host only, a ``global`` pool every host's; a layer may also
draw from shared pools (``uses:``), all or nothing, in the same transaction. On the file
ledger every allocation is on this machine, so every pool counts them all.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from netra_rm.config import env as envmod
from netra_rm.config.model import Config, SharedPool
from netra_rm.core import liveness
from netra_rm.core.admission import Decision, Usage, admit, admit_shared, usage_by_layer, validate_request
from netra_rm.core.capacity import MachineCapacity, read_capacity
from netra_rm.core.model import Allocation, Owner, Request, ResourceRequirements
from netra_rm.core.queue import Waiter, blocking_waiter, waiter_view
from netra_rm.errors import AllocationNotFoundError, NetraRMError, NoCapacityError, RequestTooLargeError, UsageError
from netra_rm.ledger import Ledger, LedgerState, open_ledger
from netra_rm.redact import mask_text


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
        self._owners = liveness.ProcessWatch()
        #: a ledger other hosts share: leases apply and host pools count this host only
        self.shared = bool(getattr(ledger, "shared", False))

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
        kind = self.config.categories.get(category.strip())  # its defaults; unknown ones refused when strict
        if kind is not None:
            memory_mb = kind.memory_mb if memory_mb is None else memory_mb
            cpu_percent = kind.cpu_percent if cpu_percent is None else cpu_percent
            duration_minutes = kind.duration_minutes if duration_minutes is None else duration_minutes
        needed = tuple(dict.fromkeys(requires))
        for name in needed:
            self.config.service(name)
        request = Request(
            layer=layer, category=mask_text(category.strip()),  # a URL pasted here keeps no password
            memory_mb=spec.default_memory_mb if memory_mb is None else memory_mb,
            cpu_percent=spec.default_cpu_percent if cpu_percent is None else cpu_percent,
            dedicated=dedicated, requires=needed,
            duration_minutes=self.config.default_duration_minutes if duration_minutes is None else duration_minutes,
            pools=spec.uses,
        )
        validate_request(request, spec.pool, self.config.limits)
        for name in request.pools:
            shared = self.config.pools[name]
            for dimension, wanted, maximum, unit in (("memory", request.memory_mb, shared.memory_mb, "MB"),
                                                     ("CPU", request.cpu_percent, shared.cpu_percent, "%")):
                if maximum is not None and wanted > maximum:
                    raise RequestTooLargeError(
                        f"the request for {wanted:g}{unit} of {dimension} can never fit: pool {name} holds at most "
                        f"{maximum:g}{unit}.", remediation=[f"Ask for at most {maximum:g}{unit}, or raise the "
                                                            "limit in the configuration."])
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
    def transaction(self, *, releasing: Collection[str] = (),
                    reset: bool = False) -> Iterator[tuple[LedgerState, list[Reclaimed]]]:
        """One ledger transaction, with expired and orphaned allocations already dropped
        (except ``releasing``: those the caller is about to release, and journal as such).

        When it frees capacity or shortens the queue while others wait, the waiters are
        woken once it has committed (see :mod:`netra_rm.ledger.wake`). ``reset`` lets a
        shared ledger that lost its state start afresh (``cleanup --force``).
        """
        wake: list[str] = []
        opened = self.ledger.transaction(reset=True) if reset and self.shared else self.ledger.transaction()  # type: ignore[call-arg]
        with opened as state:
            queued = len(state.waiters)
            reclaimed = self._reclaim(state, keep=releasing)
            yield state, reclaimed
            if state.waiters and state.changed:
                if len(state.waiters) < queued or any(e["event"] != "grant" for e in state.events):
                    wake = [w["id"] for w in state.waiters]
            if not self.shared and state.changed:  # a holder watching its allocation (run) hears at once
                wake += [holder_channel(e["id"]) for e in state.events if e["event"] in FREEING_EVENTS]
        if wake:
            notify = getattr(self.ledger, "notify", None)
            if notify is not None:
                notify(wake)

    def _reclaim(self, state: LedgerState, *, keep: Collection[str] = ()) -> list[Reclaimed]:
        now = self.clock()
        gone: list[Reclaimed] = []
        alive_cache: dict[tuple[int, str | None], bool] = {}
        self._owners.refresh()
        for a in state.allocations:
            if keep and a.id in keep:
                continue
            reason = self._reclaim_reason(a, now, alive_cache)
            if reason is not None:
                gone.append(Reclaimed(a, reason))
        if gone:
            state.remove({r.allocation.id for r in gone})
            for r in gone:
                if r.reason == "expired":
                    state.events.append(_event("expire", r.allocation, now))
                else:
                    state.events.append(_event("reclaim", r.allocation, now, reason=r.reason))
        if state.waiters:
            self._drop_dead_waiters(state, alive_cache)
        return gone

    def _reclaim_reason(self, a: Allocation, now: float,
                        alive_cache: dict[tuple[int, str | None], bool]) -> str | None:
        """Why ``a`` is to be reclaimed now (``"expired"``, ``"owner gone"``, ``"lease
        lapsed"``), or None while it holds."""
        if a.expires_at <= now:
            return "expired"
        owner = a.owner
        if owner.pid is not None and owner.host == self.host:
            key = (owner.pid, owner.start)
            alive = alive_cache.get(key)
            if alive is None:
                alive = alive_cache[key] = self._owners.alive(owner.pid, owner.start)
            # a live owner on this host keeps its allocation even if its lease lapsed:
            # this host can see it run (other hosts cannot, and reclaim it then)
            return None if alive else "owner gone"
        if a.lease_expires_at is not None and a.lease_expires_at <= now:
            return "lease lapsed"
        return None

    def _drop_dead_waiters(self, state: LedgerState, alive_cache: dict[tuple[int, str | None], bool]) -> None:
        """Waiters whose waiting process on this host is gone leave the queue."""
        dead: list[str] = []
        now = self.clock()
        for w in state.waiters:
            owner = w.get("owner") or {}
            pid = owner.get("pid")
            if owner.get("host") != self.host:
                lease = w.get("lease_expires_at")
                if lease is not None and lease <= now:
                    dead.append(w["id"])  # a waiter on another host that stopped checking in
                continue
            if pid is None:
                continue
            key = (pid, owner.get("start"))
            alive = alive_cache.get(key)
            if alive is None:
                alive = alive_cache[key] = self._owners.alive(pid, owner.get("start"))
            if not alive:
                dead.append(w["id"])
        if dead:
            state.waiters = [w for w in state.waiters if w["id"] not in dead]
            state.changed = True
            forget = getattr(self.ledger, "forget_waiters", None)
            if forget is not None:
                forget(dead)

    # -- admission -----------------------------------------------------------------------

    def decide(self, state: LedgerState, request: Request, *, waiter_id: str | None = None,
               capacity: MachineCapacity | None = None) -> Decision:
        """Would ``request`` be admitted into ``state`` now?

        It must fit, and delay none of the waiters queued ahead of it (all of them for a
        newcomer; those before ``waiter_id`` for a queued request): see
        :mod:`netra_rm.core.queue`.
        """
        layer = self.config.layer(request.layer)
        local = self._local(state.allocations)
        in_layer = [a for a in (local if layer.pool.scope == "host" else state.allocations) if a.layer == request.layer]
        decision = admit(request, pool=layer.pool, limits=self.config.limits, layer_allocations=in_layer,
                         all_usage=Usage.of(local), machine_free_mb=self._machine_free_mb(state, capacity))
        if request.pools:
            shared_reasons = admit_shared(request, pools=self.config.pools,
                                          holders=self._shared_holders(state.allocations, request.pools, local))
            if shared_reasons:  # all or nothing: the layer's pool and every shared pool, or none
                decision = Decision(admitted=False, reasons=(*decision.reasons, *shared_reasons))
        if not decision.admitted or not state.waiters:
            return decision
        ahead = []
        for w in state.waiters:
            if w["id"] == waiter_id:
                break
            ahead.append(Waiter.from_dict(w))
        if not ahead:
            return decision
        pools = {name: spec.pool for name, spec in self.config.layers.items()}
        blocker = blocking_waiter(request, ahead, allocations=state.allocations, pools=pools,
                                  limits=self.config.limits, shared_pools=self.config.pools,
                                  candidate_host=self.host if self.shared else None)
        if blocker is None:
            return decision
        place = ahead.index(blocker) + 1
        waited = max(0.0, self.clock() - blocker.since)
        return Decision(admitted=False, reasons=(
            f"{len(ahead)} request(s) queued ahead; admitting this one would delay number {place}, "
            f"{blocker.request.category} in layer {blocker.request.layer}, waiting for {waited:.0f}s.",))

    def _capacity(self) -> MachineCapacity | None:
        """The machine's capacity, read before a transaction rather than while it holds the
        ledger (it does not depend on the ledger); None when the check is off."""
        return self.capacity_reader() if self.config.machine.check_memory else None

    def _local(self, allocations: list[Allocation]) -> list[Allocation]:
        """The allocations that count against this host's host-scoped pools and caps: on a
        shared ledger this host's, on the file ledger all of them (all are on this machine)."""
        if not self.shared:
            return allocations
        return [a for a in allocations if a.owner.host == self.host]

    def _shared_holders(self, allocations: list[Allocation], names: Iterable[str],
                        local: list[Allocation]) -> dict[str, list[Allocation]]:
        """Per shared pool, the allocations that count against it (this host's for a
        host-scoped pool, everyone's for a global one)."""
        holders: dict[str, list[Allocation]] = {}
        for name in names:
            pool = self.config.pools.get(name)
            source = local if pool is not None and pool.scope == "host" else allocations
            holders[name] = [a for a in source if name in a.pools]
        return holders

    def _lease(self, owner: Owner, now: float) -> float | None:
        """When a new allocation or queue entry of ``owner`` lapses without a heartbeat:
        on a shared ledger, for an owner that is a process; else never."""
        if not self.shared or owner.pid is None:
            return None
        return round(now + self.config.lease_seconds, 3)

    def _machine_free_mb(self, state: LedgerState, capacity: MachineCapacity | None = None) -> float | None:
        settings = self.config.machine
        if not settings.check_memory:
            return None
        if capacity is None:
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
        """Admit ``request`` if it fits now and delays nobody queued; never waits."""
        capacity = self._capacity()
        with self.transaction() as (state, _):
            decision = self.decide(state, request, capacity=capacity)
            if not decision.admitted:
                return None, decision
            return self._grant(state, request, owner, decision), decision

    def _grant(self, state: LedgerState, request: Request, owner: Owner, decision: Decision,
               **extra: Any) -> Allocation:
        now = self.clock()
        allocation = Allocation(
            id=_new_id(state), layer=request.layer, category=request.category, memory_mb=request.memory_mb,
            cpu_percent=request.cpu_percent, dedicated=request.dedicated, requires=request.requires,
            created_at=round(now, 3), expires_at=round(now + request.duration_minutes * 60, 3),
            slot=decision.slot or 0, owner=owner, fencing_token=state.next_fencing_token(),
            pools=request.pools, lease_expires_at=self._lease(owner, now),
        )
        state.add(allocation)
        state.events.append(_event("grant", allocation, now, limits=self._limits_record(request), **extra))
        return allocation

    def _limits_record(self, request: Request) -> dict[str, Any]:
        """The limits a grant is admitted under, for its journal event: ``verify`` judges
        each grant by them, though the configuration or the MAX_* caps change later."""
        pool = self.config.layer(request.layer).pool
        limits = self.config.limits
        record: dict[str, Any] = {
            "pool": {"memory_mb": pool.memory_mb, "cpu_percent": pool.cpu_percent, "instances": pool.instances,
                     "scope": pool.scope},
            "global": {"max_memory_mb": limits.max_memory_mb, "max_cpu_percent": limits.max_cpu_percent,
                       "max_parallel_instances": limits.max_parallel_instances},
        }
        if request.pools:
            record["shared"] = {name: {"instances": shared.instances, "scope": shared.scope,
                                       "memory_mb": shared.memory_mb, "cpu_percent": shared.cpu_percent}
                                for name in request.pools if (shared := self.config.pools.get(name)) is not None}
        return record

    # -- the wait queue ------------------------------------------------------------------

    def allocate_or_join(self, request: Request, owner: Owner, *, waiter_id: str,
                         waiter_owner: Owner) -> tuple[Allocation | None, Waiter | None, Decision]:
        """Admit ``request`` now, or put it at the tail of the queue as ``waiter_id``.

        ``owner`` will own the allocation; ``waiter_owner`` is the process that waits.
        """
        capacity = self._capacity()
        with self.transaction() as (state, _):
            decision = self.decide(state, request, capacity=capacity)
            if decision.admitted:
                return self._grant(state, request, owner, decision), None, decision
            waiter = Waiter(id=waiter_id, request=request, owner=waiter_owner, since=round(self.clock(), 3),
                            fence=state.fencing_counter)
            state.waiters.append(self._queue_entry(waiter))
            state.changed = True
            return None, waiter, decision

    def try_admit_waiter(self, waiter: Waiter, owner: Owner) -> tuple[Allocation | None, Decision]:
        """Admit the queued ``waiter`` if its turn has come (see :meth:`decide`).

        A waiter missing from the queue (a ledger reset, say) joins again at the tail.
        """
        capacity = self._capacity()
        with self.transaction() as (state, _):
            entry = next((w for w in state.waiters if w["id"] == waiter.id), None)
            if entry is None:
                state.waiters.append(self._queue_entry(waiter))
                state.changed = True
            elif self.shared and entry.get("lease_expires_at") is not None:
                # check in: other hosts drop a waiter whose lease lapsed (it died unseen)
                now = self.clock()
                if entry["lease_expires_at"] - now < self.config.lease_seconds * 2 / 3:
                    entry["lease_expires_at"] = self._lease(waiter.owner, now)
                    state.changed = True
            decision = self.decide(state, waiter.request, waiter_id=waiter.id, capacity=capacity)
            if not decision.admitted:
                return None, decision
            state.waiters = [w for w in state.waiters if w["id"] != waiter.id]
            waited = round(max(0.0, self.clock() - waiter.since), 3)
            return self._grant(state, waiter.request, owner, decision, waited_seconds=waited), decision

    def _queue_entry(self, waiter: Waiter) -> dict[str, Any]:
        entry = waiter.to_dict()
        lease = self._lease(waiter.owner, self.clock())
        if lease is not None:
            entry["lease_expires_at"] = lease
        return entry

    def leave_queue(self, waiter_id: str) -> bool:
        """Take ``waiter_id`` out of the queue (it gave up); True if it was there."""
        with self.transaction() as (state, _):
            kept = [w for w in state.waiters if w["id"] != waiter_id]
            if len(kept) == len(state.waiters):
                return False
            state.waiters = kept
            state.changed = True
            return True

    def queue(self) -> list[Waiter]:
        """The waiters, oldest first (dead ones already dropped)."""
        with self.transaction() as (state, _):
            return [Waiter.from_dict(w) for w in state.waiters]

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

    def release(self, ids: Iterable[str], *, measured: Mapping[str, Any] | None = None) -> ReleaseResult:
        """Release these allocations; the ids not found are reported, the others released.

        ``measured`` (what the holder used: ``peak_memory_mb``, ``cpu_seconds``,
        ``wall_seconds``, ``oom_killed``) is added to each release event in the journal.
        """
        wanted = list(dict.fromkeys(ids))
        release_now = getattr(self.ledger, "release_now", None)
        if release_now is not None and wanted and not measured:  # Redis: one round trip, without the lock
            outcome = release_now(wanted, now=self.clock())
            if outcome is not None:
                return ReleaseResult(released=outcome[0], missing=outcome[1])
        with self.transaction(releasing=set(wanted)) as (state, _):
            released = state.remove(set(wanted))
            now = self.clock()
            for a in released:
                state.events.append(_event("release", a, now, **dict(measured or {})))
        found = {a.id for a in released}
        return ReleaseResult(released=released, missing=[i for i in wanted if i not in found])

    def renew(self, ids: Iterable[str], *, hold_seconds: float | None = None) -> list[str]:
        """Renew the leases of these allocations (a holder's heartbeat, see
        :mod:`netra_rm.core.lease`) and, with ``hold_seconds``, keep each from expiring
        for at least that long from now; the ids the ledger no longer holds. One of them
        past its time but not yet reclaimed by anyone is renewed, not reclaimed."""
        wanted = set(ids)
        # its holder's own renewal does not reclaim an allocation past its time: still in the
        # ledger, its capacity went to nobody, so it is renewed (a late beat, not a loss)
        with self.transaction(releasing=wanted) as (state, _):
            now = self.clock()
            found: set[str] = set()
            renewed = []
            for a in state.allocations:
                if a.id in wanted:
                    found.add(a.id)
                    changes: dict[str, Any] = {}
                    lease = self._lease(a.owner, now)
                    if lease is not None and lease != a.lease_expires_at:
                        changes["lease_expires_at"] = lease
                    if hold_seconds is not None and now + hold_seconds > a.expires_at:
                        changes["expires_at"] = now + hold_seconds
                    if changes:
                        a = dataclasses.replace(a, **changes)
                        state.changed = True
                renewed.append(a)
            if state.changed:
                state.allocations = renewed
        return sorted(wanted - found)

    def why_gone(self, allocation_id: str) -> str:
        """Why the ledger no longer holds ``allocation_id``, from the last journal event
        about it: "released", "forced" (``cleanup --force``), "expired", "owner gone",
        "lease lapsed", or "unknown" (no event: the ledger was reset or lost it)."""
        reader = getattr(self.ledger, "read_with_journal", None)
        if reader is None:
            return "unknown"
        try:
            _, lines, _ = reader()
        except NetraRMError:
            return "unknown"
        needle = allocation_id.encode()
        for line in reversed(lines):
            if needle not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("id") != allocation_id:
                continue
            kind = event.get("event")
            if kind == "release":
                return "forced" if event.get("reason") == "forced" else "released"
            if kind == "expire":
                return "expired"
            if kind == "reclaim":
                return str(event.get("reason") or "owner gone")
            if kind == "grant":
                break
        return "unknown"

    def record_lost(self, allocation: Allocation, cause: str, *, action: str) -> None:
        """Journal that the holder of ``allocation`` found it gone (``action``: what it did
        about it, "term" or "warn"). Best effort: the ledger may be the thing that was lost."""
        try:
            with self.transaction() as (state, _):
                state.events.append(_event("lost", allocation, self.clock(), reason=cause, action=action))
                state.changed = True
        except NetraRMError:
            pass

    def release_or_raise(self, ids: Iterable[str]) -> list[Allocation]:
        result = self.release(ids)
        if result.missing:
            raise AllocationNotFoundError(
                f"allocation {', '.join(result.missing)} not found (already released or expired).",
                ids=result.missing)
        return result.released

    def cleanup(self, *, force: bool = False) -> list[Reclaimed]:
        """Drop expired and orphaned allocations; with ``force``, every allocation (and,
        on a server ledger that lost its state, start it afresh: see
        :mod:`netra_rm.ledger.remote`)."""
        with self.transaction(reset=force) as (state, reclaimed):
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
            queued = [Waiter.from_dict(w) for w in state.waiters]
        now = self.clock()
        waiters = [waiter_view(w, i, now) for i, w in enumerate(queued, 1)]
        local = self._local(allocations)
        pools = self._pools(allocations, local)
        total = Usage.of(local)
        limits = self.config.limits
        holders = self._shared_holders(allocations, self.config.pools, local)
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
            "host": self.host,
            "shared_pools": {name: shared_pool_status(pool, holders.get(name, ()))
                             for name, pool in self.config.pools.items()},
        }

    def pool_usage(self) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
        """The layers' pools and the active allocations, for a view that asks every second.

        A read, not a transaction: it takes no write lock and writes nothing, unless it
        sees an allocation to reclaim (expired, owner gone, lease lapsed), which it then
        reclaims in a transaction as :meth:`resource_status` would. Unlike that, it leaves
        out the machine's capacity, the queue and the shared pools.
        """
        allocations = self.ledger.read().allocations
        now = self.clock()
        alive_cache: dict[tuple[int, str | None], bool] = {}
        self._owners.refresh()
        if any(self._reclaim_reason(a, now, alive_cache) is not None for a in allocations):
            with self.transaction() as (state, _):
                allocations = list(state.allocations)
            now = self.clock()
        return self._pools(allocations, self._local(allocations)), [allocation_view(a, now) for a in allocations]

    def _pools(self, allocations: list[Allocation], local: list[Allocation]) -> dict[str, dict[str, Any]]:
        """Each layer's pool with its usage: this host's allocations for a host-scoped
        pool, everyone's for a global one."""
        by_layer = usage_by_layer(allocations)
        local_by_layer = usage_by_layer(local)
        return {name: pool_status(layer.pool, (local_by_layer if layer.pool.scope == "host" else by_layer)
                                  .get(name, ()))
                for name, layer in self.config.layers.items()}

    def pool_status(self, layer: str) -> dict[str, Any]:
        """One layer's pool with its usage now."""
        spec = self.config.layer(layer)
        with self.transaction() as (state, _):
            source = self._local(state.allocations) if spec.pool.scope == "host" else state.allocations
            in_layer = [a for a in source if a.layer == layer]
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
        "scope": getattr(pool, "scope", "host"),
    }


def shared_pool_status(pool: SharedPool, allocations: Iterable[Allocation]) -> dict[str, Any]:
    """A shared pool (configuration ``pools:``) with its usage: instances, and memory and
    CPU where it limits them."""
    used = Usage.of(allocations)
    return {"scope": pool.scope, "max_parallel_instances": pool.instances, "active_instances": used.instances,
            "available_instances": max(0, pool.instances - used.instances),
            "max_memory_mb": pool.memory_mb, "allocated_memory_mb": used.memory_mb,
            "max_cpu_percent": pool.cpu_percent, "allocated_cpu_percent": used.cpu_percent}


def allocation_view(allocation: Allocation, now: float) -> dict[str, Any]:
    """An allocation as shown to users: the ledger record plus age and time left."""
    data = allocation.to_dict()
    data["age_seconds"] = round(max(0.0, now - allocation.created_at), 1)
    data["expires_in_seconds"] = round(allocation.expires_at - now, 1)
    return data


#: The journal events that take an allocation away from its holder.
FREEING_EVENTS = ("release", "expire", "reclaim")


def holder_channel(allocation_id: str) -> str:
    """The name of the wake-up channel on which the holder of ``allocation_id`` hears that
    it was taken away (on the file ledger, a FIFO beside the waiters')."""
    return f"held-{allocation_id}"


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
    if allocation.pools:
        event["pools"] = list(allocation.pools)
    event.update(extra)
    return event
