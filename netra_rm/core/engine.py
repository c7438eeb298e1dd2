"""The engine: admission, release and reclaiming over one ledger, for one configuration.

Everything a command or the Python API does to allocations is a method here, and each
is one ledger transaction (see :mod:`netra_rm.ledger.base`) over the pool keys it
concerns (see :mod:`netra_rm.core.accounting` for which allocations count where). A
transaction first drops what is due: allocations whose time ran out, on a shared ledger
those whose lease lapsed on another host, and those whose owner process on this host is
gone (every transaction on the file ledger; on a server ledger when room is short, and
for the reports, at most once a second).

After a transaction that freed room (a release, a reclaim, a waiter leaving, a pool
grown or resumed), the waiters that can now be served are woken, and only those.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from netra_rm import numbers
from netra_rm.config import env as envmod
from netra_rm.config.model import Config
from netra_rm.core import liveness
from netra_rm.core.accounting import Charge, charges, host_view
from netra_rm.core.admission import Decision, admit, fits, never_fits
from netra_rm.core.capacity import MachineCapacity, read_capacity
from netra_rm.core.model import ResourceRequirements
from netra_rm.core.pools import capacity_words, check_pool_name, masked_capacity
from netra_rm.core.queue import ahead_of, blocking_waiter, give_back, ordered, pass_by
from netra_rm.errors import CapacityMismatchError, NetraRMError, NoCapacityError, UsageError
from netra_rm.ledger import GrantPlan, Ledger, Scope, Snapshot, Txn, open_ledger
from netra_rm.ledger.journal import event_record, limits_record, pool_event
from netra_rm.records import (
    Allocation,
    Capacity,
    Owner,
    PoolRecord,
    Request,
    Usage,
    Waiter,
    cpu_units,
    parse_key,
)
from netra_rm.redact import mask_text

SWEEP_INTERVAL = 1.0  # seconds between two looks for dead owners on a server ledger


@dataclass(frozen=True)
class Reclaimed:
    """An allocation the engine dropped, and why ("expired", "owner gone", "lease
    lapsed", "forced")."""

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
                 clock: Callable[[], float] | None = None,
                 capacity_reader: Callable[[], MachineCapacity] = read_capacity) -> None:
        self.config = config
        self.ledger = ledger
        self.host = envmod.host_id(env)
        self.user = envmod.user_name(env)
        self.capacity_reader = capacity_reader
        self._owners = liveness.ProcessWatch()
        #: a ledger other hosts share: leases apply and host pools count this host only
        self.shared = bool(getattr(ledger, "shared", False))
        #: the host part of this host's keys ("" on the file ledger: one machine)
        self.host_key = self.host if self.shared else ""
        self.view = host_view(config, self.host_key)
        self._clock = clock
        self._last_sweep = 0.0
        self._charges: dict[tuple[Request, Any], tuple[Charge, ...]] = {}
        if hasattr(ledger, "scope_of"):
            ledger.scope_of = self.scope_of

    @classmethod
    def from_options(cls, *, config: Config | None = None, config_path: str | None = None,
                     ledger: str | Ledger | None = None, env: Mapping[str, str] | None = None) -> Engine:
        """Build an engine from paths, as the CLI and ``create_resource_manager`` do."""
        from netra_rm.config import load_config

        cfg = config or load_config(config_path, env=env)
        led = ledger if ledger is not None and not isinstance(ledger, str) else open_ledger(ledger, env=env)
        return cls(cfg, led, env=env)

    def clock(self) -> float:
        """This host's clock (the ledger's own decides expiries and leases)."""
        return self._clock() if self._clock is not None else time.time()

    def scope_of(self, kind: str, name: str) -> str:
        if kind == "layer" and name in self.config.layers:
            return self.config.layers[name].pool.scope
        if kind == "pool" and name in self.config.pools:
            return self.config.pools[name].scope
        return "host" if kind == "layer" else "global"

    # -- requests and owners -------------------------------------------------------------

    def resolve_request(self, layer: str | None, category: str, *, memory_mb: int | None = None,
                        cpu_percent: float | None = None, dedicated: bool = False,
                        requires: Iterable[str] = (), duration_minutes: float | None = None,
                        pools: Iterable[str] = (), instances: int | None = None, priority: int = 0) -> Request:
        """Fill in the defaults and check the request is valid and could ever fit.

        ``pools`` names ad-hoc or configured shared pools to take one instance of besides
        the layer's (``--pool``); ``instances`` is the size of an ad-hoc pool the ledger
        does not know yet (``--instances``). Without a layer, ``pools`` is required.
        """
        if not category or not category.strip():
            raise UsageError("the category must not be empty; name the kind of tests, e.g. --category api_tests.")
        kind = self.config.categories.get(category.strip())  # its defaults; unknown ones refused when strict
        if kind is not None:
            memory_mb = kind.memory_mb if memory_mb is None else memory_mb
            cpu_percent = kind.cpu_percent if cpu_percent is None else cpu_percent
            duration_minutes = kind.duration_minutes if duration_minutes is None else duration_minutes
            if priority == 0 and kind.priority is not None:
                priority = kind.priority
        extra_pools = tuple(dict.fromkeys(pools))
        if layer is None and not extra_pools:
            raise UsageError("give --layer LAYER, or --pool NAME for a pool of its own (or both).")
        spec = self.config.layer(layer) if layer is not None else None
        needed = tuple(dict.fromkeys(requires))
        for name in needed:
            self.config.service(name)
        for name in extra_pools:
            check_pool_name(name)
        if instances is not None:
            instances = int(numbers.finite("--instances", instances, numbers.INSTANCES))
        if spec is not None:
            memory = spec.default_memory_mb if memory_mb is None else memory_mb
            cpu = spec.default_cpu_percent if cpu_percent is None else cpu_percent
            uses = spec.uses
        else:
            memory, cpu, uses = memory_mb or 0, cpu_percent or 0.0, ()
        memory = int(numbers.finite("--memory-mb", memory, numbers.MEMORY_MB))
        cpu = float(numbers.finite("--cpu-percent", cpu, numbers.CPU_PERCENT))
        duration = self.config.default_duration_minutes if duration_minutes is None else duration_minutes
        duration = float(numbers.finite("--duration-minutes", duration, numbers.DURATION_MINUTES))
        priority = int(numbers.finite("--priority", priority, numbers.PRIORITY))
        adhoc = tuple((name, instances) for name in extra_pools if instances is not None)
        request = Request(
            layer=layer, category=mask_text(category.strip()),  # a URL pasted here keeps no password
            memory_mb=memory, cpu_units=cpu_units(cpu), dedicated=dedicated, requires=needed,
            duration_minutes=duration, pools=tuple(dict.fromkeys((*uses, *extra_pools))),
            priority=priority, adhoc=adhoc)
        found = self.charges(request)
        never_fits(request, found, {c.key: c.capacity for c in found if c.capacity is not None})
        return request

    def request_from_requirements(self, layer: str, category: str, requirements: ResourceRequirements | None,
                                  duration_minutes: float | None = None) -> Request:
        req = requirements or ResourceRequirements()
        return self.resolve_request(layer, category, memory_mb=req.min_memory_mb, cpu_percent=req.min_cpu_percent,
                                    dedicated=req.dedicated_resources, requires=req.required_services(),
                                    duration_minutes=duration_minutes, priority=req.priority)

    def charges(self, request: Request) -> tuple[Charge, ...]:
        """The pool keys ``request`` counts against on this host (kept: a process asks for
        the same requests again and again)."""
        key = (request, request.adhoc)
        found = self._charges.get(key)
        if found is None:
            found = tuple(charges(request, self.config, self.host_key, adhoc_instances=dict(request.adhoc)))
            if len(self._charges) > 256:
                self._charges.clear()
            self._charges[key] = found
        return found

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
    def transaction(self, scope: Scope, *, releasing: Collection[str] = (), reset: bool = False,
                    sweep: bool = False) -> Iterator[tuple[Txn, list[Reclaimed]]]:
        """One ledger transaction over ``scope``, with what is due already dropped (except
        ``releasing``: those the caller is about to release, and journal as such).

        When it frees room or shortens the queue, the waiters that can now be served are
        woken once it has committed (see :mod:`netra_rm.ledger.wake`).
        """
        if sweep or not self.shared:
            scope = dataclasses.replace(scope, sweep_host=self.host)
            self._last_sweep = time.monotonic()
        wake: list[str] = []
        with self.ledger.transaction(scope, reset=reset) as txn:
            queued = {w.id for w in txn.waiters}
            reclaimed = self._reclaim(txn, keep=releasing)
            yield txn, reclaimed
            changes = txn.changes
            if queued and (changes.removals or changes.waiters_gone or changes.pools):
                wake = self._servable(txn, exclude={g.id for g in changes.grants})
                if wake and not changes.grants:
                    self._hand_off(txn, wake)
            if not self.shared:  # a holder watching its allocation (run) hears at once that it is gone
                wake += [holder_channel(a.id) for a in changes.removals]
            if wake and changes and self.ledger.wakes_at_commit:
                changes.wake, wake = wake, []  # sent with the commit
        if wake:
            self.ledger.notify(wake)

    def _want_sweep(self) -> bool:
        return not self.shared or time.monotonic() - self._last_sweep >= SWEEP_INTERVAL

    def _reclaim(self, txn: Txn, *, keep: Collection[str] = ()) -> list[Reclaimed]:
        now = txn.now
        gone: list[Reclaimed] = []
        seen: set[str] = set()
        self._owners.refresh()
        alive_cache: dict[tuple[int, str | None], bool] = {}
        candidates = list(txn.snapshot.due)
        if txn.snapshot.host_allocations is not None:
            candidates += [a for a in txn.snapshot.host_allocations if a.owner.host == self.host]
        for a in candidates:
            if a.id in seen or a.id in keep:
                continue
            seen.add(a.id)
            reason = self._reclaim_reason(a, now, alive_cache)
            if reason is not None:
                gone.append(Reclaimed(a, reason))
        for r in gone:
            self._drop(txn, r.allocation, "expire" if r.reason == "expired" else "reclaim",
                       reason=None if r.reason == "expired" else r.reason)
        self._drop_dead_waiters(txn, alive_cache)
        return gone

    def _reclaim_reason(self, a: Allocation, now: float, alive_cache: dict[tuple[int, str | None], bool]) -> str | None:
        """Why ``a`` is to be reclaimed now ("expired", "owner gone", "lease lapsed"), or
        None while it holds."""
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

    def _drop(self, txn: Txn, allocation: Allocation, kind: str, **extra: Any) -> None:
        """Take ``allocation`` out (released, expired, reclaimed), give back what it held
        against the waiters it went past, and journal it."""
        for w in give_back([w for w in txn.waiters if w.id in allocation.behind], allocation):
            txn.put_waiter(w)
        txn.remove(allocation, event_record(kind, allocation, txn.now, **extra))

    def _dead_waiters(self, waiters: Iterable[Waiter], now: float,
                      alive_cache: dict[tuple[int, str | None], bool]) -> list[str]:
        """Waiters whose waiting process on this host is gone, or whose lease lapsed on
        another host (it stopped checking in)."""
        dead: list[str] = []
        for w in waiters:
            owner = w.owner
            if owner.host != self.host:
                if w.lease_expires_at is not None and w.lease_expires_at <= now:
                    dead.append(w.id)
                continue
            if owner.pid is None:
                continue
            key = (owner.pid, owner.start)
            alive = alive_cache.get(key)
            if alive is None:
                alive = alive_cache[key] = self._owners.alive(owner.pid, owner.start)
            if not alive:
                dead.append(w.id)
        return dead

    def _drop_dead_waiters(self, txn: Txn, alive_cache: dict[tuple[int, str | None], bool]) -> None:
        """Dead waiters (see :meth:`_dead_waiters`) leave the queue."""
        dead = self._dead_waiters(txn.waiters, txn.now, alive_cache)
        for waiter_id in dead:
            txn.drop_waiter(waiter_id)
        if dead:
            self.ledger.forget_waiters(dead)

    # -- capacity ------------------------------------------------------------------------

    def _capacities(self, txn: Txn, found: Sequence[Charge], *, register: bool = True
                    ) -> tuple[dict[str, Capacity], set[str]]:
        """What each key may hold now, and the keys that are draining. A central pool the
        ledger does not know yet is registered from this host's configuration; one whose
        configuration disagrees with what the ledger holds is refused (exit 2)."""
        capacity: dict[str, Capacity] = {}
        drained: set[str] = set()
        for charge in found:
            record = txn.pool(charge.key)
            if record is None:
                if charge.capacity is None:
                    raise UsageError(f"pool {charge.name} is not known to the ledger {self.ledger.location}; give "
                                     "--instances N to create it.",
                                     remediation=[f"netra-rm run --pool {charge.name} --instances 1 -- CMD"])
                if charge.central and register:
                    record = PoolRecord(key=charge.key, capacity=masked_capacity(charge.capacity), source="config",
                                        registered_by=self.host, changed_at=round(txn.now, 3),
                                        description=charge.description)
                    txn.put_pool(record, pool_event("register", record, txn.now, host=self.host))
                    record = dataclasses.replace(record, capacity=charge.capacity)  # ours, with its properties
                else:
                    capacity[charge.key] = charge.capacity
                    continue
            elif record.source == "config" and charge.capacity is not None and charge.central \
                    and not record.capacity.same_limits(charge.capacity):
                raise self._mismatch(charge, record)
            capacity[charge.key] = record.capacity
            if record.drained:
                drained.add(charge.key)
        return capacity, drained

    def _mismatch(self, charge: Charge, record: PoolRecord) -> CapacityMismatchError:
        mine = capacity_words(charge.capacity) if charge.capacity is not None else "?"
        theirs = capacity_words(record.capacity)
        by = f" (registered by {record.registered_by})" if record.registered_by else ""
        return CapacityMismatchError(
            f"{charge.label}: this host's configuration says {mine}, but the ledger {self.ledger.location} holds "
            f"{theirs}{by}; a shared pool has one capacity for the whole fleet.",
            remediation=[f"Change it for everyone: netra-rm pool set {charge.name} --instances N [--memory-mb M] "
                         "[--cpu-percent C]", "Or make this host's configuration agree with the ledger."])

    # -- admission -----------------------------------------------------------------------

    def _decide(self, txn: Txn, request: Request, found: Sequence[Charge], *, waiter_id: str | None = None,
                since: float | None = None, capacity_now: MachineCapacity | None = None) -> Decision:
        """Would ``request`` be admitted now? It must fit, and delay none of the waiters
        ranked ahead of it (see :mod:`netra_rm.core.queue`)."""
        capacity, drained = self._capacities(txn, found)
        keys = [c.key for c in found]
        decision = admit(request, found, capacity=capacity, usage={k: txn.usage(k) for k in keys},
                         taken={k: txn.taken(k) for k in keys}, drained=drained,
                         machine_free_mb=self._machine_free_mb(txn, request, capacity_now))
        if not decision.admitted or not txn.waiters:
            return decision
        ahead = ahead_of(txn.waiters, priority=request.priority, since=txn.now if since is None else since,
                         waiter_id=waiter_id, now=txn.now, aging_seconds=self.config.aging_seconds)
        if not ahead:
            return decision
        central = {k: r.capacity for k, r in txn.pools().items()}
        blocker = blocking_waiter(request.usage, keys, ahead, central=central)
        if blocker is None:
            return decision
        place = ordered(txn.waiters, txn.now, self.config.aging_seconds).index(blocker) + 1
        waited = max(0.0, txn.now - blocker.since)
        where = f"in layer {blocker.request.layer}" if blocker.request.layer else \
            f"for pool {', '.join(blocker.request.pools)}"
        return Decision(admitted=False, reasons=(
            f"{len(ahead)} request(s) queued ahead; admitting this one would delay number {place}, "
            f"{blocker.request.category} {where}, waiting for {waited:.0f}s.",))

    def _capacity(self) -> MachineCapacity | None:
        """The machine's capacity, read before a transaction rather than while it holds the
        ledger (it does not depend on the ledger); None when the check is off."""
        return self.capacity_reader() if self.config.machine.check_memory else None

    def _machine_free_mb(self, txn: Txn, request: Request, capacity: MachineCapacity | None) -> float | None:
        """Memory this machine can still give to new reservations: its available memory,
        less the reserve, less what this host's allocations reserved but do not use yet.
        None when the check is off or the request reserves no memory."""
        settings = self.config.machine
        if not settings.check_memory or request.memory_mb == 0:
            return None
        if capacity is None:
            capacity = self.capacity_reader()
        return capacity.memory_available_mb - settings.memory_reserve_mb - self._reserved_unused_mb(txn)

    def _reserved_unused_mb(self, txn: Txn) -> float:
        """Memory reserved on this host but not yet in use by its owner processes (an
        owner's resident memory counts against its reservations; allocations without an
        owner process count in full)."""
        host_allocations = txn.snapshot.host_allocations
        if host_allocations is None:  # not read: count every reservation of this host in full
            return float(txn.usage(self.view.caps.key).memory_mb)
        gone = {r.id for r in txn.changes.removals}
        per_owner: dict[tuple[int, str | None] | None, float] = {}
        for a in host_allocations:
            if a.owner.host != self.host or a.id in gone:
                continue
            key = (a.owner.pid, a.owner.start) if a.owner.pid is not None else None
            per_owner[key] = per_owner.get(key, 0.0) + a.memory_mb
        total = 0.0
        for key, reserved in per_owner.items():
            used = liveness.rss_mb(key[0]) if key is not None else None
            total += max(0.0, reserved - (used or 0.0))
        return total

    def _lease(self, owner: Owner, now: float) -> float | None:
        """When a new allocation or queue entry of ``owner`` lapses without a heartbeat:
        on a shared ledger, for an owner that is a process; else never."""
        if not self.shared or owner.pid is None:
            return None
        return round(now + self.config.lease_seconds, 3)

    def probe(self, request: Request) -> tuple[Decision, dict[str, Any]]:
        """Would ``request`` be admitted now (the ``layer`` gate's question)? A read:
        nothing is written. Also its layer's pool as this host counts it."""
        found = self.charges(request)
        snapshot = self.ledger.read(Scope(keys=frozenset(c.key for c in found), sweep_host=self.host))
        txn = Txn(snapshot)
        self._reclaim(txn)  # what is due counts as free (a transaction would drop it first)
        decision = self._decide(txn, request, found)
        pool: dict[str, Any] = {}
        layer = next((c for c in found if c.kind == "layer"), None)
        if layer is not None:
            record = txn.pool(layer.key)
            capacity = record.capacity if record is not None else layer.capacity
            assert capacity is not None
            from netra_rm.core.status import pool_view

            pool = pool_view(capacity, txn.usage(layer.key), scope=layer.scope)
            pool["drained"] = bool(record and record.drained)
        return decision, pool

    def _scope(self, found: Sequence[Charge], *, waiter_id: str | None = None) -> Scope:
        return Scope(keys=frozenset(c.key for c in found), waiter_id=waiter_id)

    def try_allocate(self, request: Request, owner: Owner) -> tuple[Allocation | None, Decision]:
        """Admit ``request`` if it fits now and delays nobody queued; never waits."""
        capacity = self._capacity()
        found = self.charges(request)
        fast = self._fast_grant(request, owner, found, capacity)
        if isinstance(fast, Allocation):
            return fast, Decision(admitted=True, slots=dict(fast.slots))
        for attempt in (0, 1):
            sweep = attempt == 1 or self._want_sweep()
            with self.transaction(self._scope(found), sweep=sweep) as (txn, _):
                decision = self._decide(txn, request, found, capacity_now=capacity)
                if decision.admitted:
                    return self._grant(txn, request, owner, found, decision), decision
            if sweep or not self.shared:
                return None, decision
        return None, decision

    def _fast_grant(self, request: Request, owner: Owner, found: tuple[Charge, ...],
                    capacity: MachineCapacity | None, *, join: Waiter | None = None,
                    sweep_host: str | None = None) -> Allocation | Waiter | None:
        """Let a backend that can grant in one step try (Redis or PostgreSQL, when nobody
        waits and every pool is known), and, given ``join`` (a queue entry), file it in the
        same step when there is no room (Redis); None: take the transaction."""
        if type(self.ledger).fast_grant is Ledger.fast_grant:
            return None
        plan = GrantPlan(request=request, charges=found, owner=owner, host=self.host,
                         lease_seconds=self.config.lease_seconds if self._lease(owner, 0.0) is not None else None,
                         machine_free_mb=None if capacity is None or request.memory_mb == 0 else
                         capacity.memory_available_mb - self.config.machine.memory_reserve_mb,
                         allocation_id=os.urandom(6).hex() if join is None else join.id,
                         request_id=os.urandom(8).hex(), waiter=join,
                         waiter_lease_seconds=None if join is None or self._lease(join.owner, 0.0) is None
                         else self.config.lease_seconds,
                         sweep_host=sweep_host)
        granted = self.ledger.fast_grant(plan)
        return granted if isinstance(granted, (Allocation, Waiter)) else None

    def _grant(self, txn: Txn, request: Request, owner: Owner, found: Sequence[Charge], decision: Decision,
               *, allocation_id: str | None = None, **extra: Any) -> Allocation:
        now = txn.now
        capacity, _ = self._capacities(txn, found, register=False)
        instances: dict[str, str] = {}
        for key, index in decision.slots.items():
            names = capacity[key].names
            if index < len(names):
                instances[key] = names[index]
        layer_charge = next((c for c in found if c.kind == "layer"), None)
        allocation = Allocation(
            id=allocation_id or _new_id(txn), layer=request.layer, category=request.category,
            memory_mb=request.memory_mb, cpu_units=request.cpu_units, dedicated=request.dedicated,
            requires=request.requires,
            created_at=round(now, 3), expires_at=round(now + request.duration_minutes * 60, 3), owner=owner,
            fencing_token=txn.next_token(), charges=tuple(c.key for c in found), slots=dict(decision.slots),
            instances=instances, pools=request.pools, lease_expires_at=self._lease(owner, now),
            priority=request.priority, slot_key=layer_charge.key if layer_charge else None,
            request_id=txn.changes.request_id)
        others, behind = pass_by(txn.waiters, allocation)
        for w in others:
            if w.id in behind:
                txn.put_waiter(w)
        allocation = dataclasses.replace(allocation, behind=behind)
        txn.grant(allocation, event_record("grant", allocation, now,
                                           limits=limits_record({c.key: capacity[c.key] for c in found}), **extra))
        txn.changes.outcome = allocation.id
        return allocation

    # -- the wait queue ------------------------------------------------------------------

    def allocate_or_join(self, request: Request, owner: Owner, *, waiter_id: str,
                         waiter_owner: Owner) -> tuple[Allocation | None, Waiter | None, Decision]:
        """Admit ``request`` now, or put it in the queue as ``waiter_id``.

        ``owner`` will own the allocation; ``waiter_owner`` is the process that waits.
        """
        capacity = self._capacity()
        found = self.charges(request)
        holder = None if owner == waiter_owner else owner
        join = self._queue_entry(None, waiter_id, request, found, waiter_owner, holder=holder) if self.shared else None
        # the transaction looks for this host's dead holders, at least once a second: the
        # one-step join does not, so it stands aside while this host holds anything then
        fast = self._fast_grant(request, owner, found, capacity, join=join,
                                sweep_host=self.host if self._want_sweep() else None)
        if isinstance(fast, Waiter):  # no room: it joined the queue in the same step
            return None, fast, Decision(admitted=False)
        if fast is not None:
            return fast, None, Decision(admitted=True, slots=dict(fast.slots))
        with self.transaction(self._scope(found, waiter_id=waiter_id), sweep=True) as (txn, _):
            decision = self._decide(txn, request, found, capacity_now=capacity)
            if decision.admitted:
                return self._grant(txn, request, owner, found, decision), None, decision
            waiter = self._queue_entry(txn, waiter_id, request, found, waiter_owner, holder=holder)
            txn.put_waiter(waiter)
            return None, waiter, decision

    def try_admit_waiter(self, waiter: Waiter, owner: Owner, *,
                         handed: Allocation | None = None) -> tuple[Allocation | None, Decision]:
        """Admit the queued ``waiter`` if its turn has come (see :meth:`_decide`).

        An allocation a release already granted on its behalf (see :meth:`_hand_off`) is
        simply taken: ``handed``, when the wake-up carried it (it was sent with the commit
        that granted it), else read; a waiter missing from the queue otherwise (a ledger
        reset, say) joins again.
        """
        if handed is None or handed.id != waiter.id:
            handed = self._handed(waiter.id)
        if handed is not None:  # a release granted it on this waiter's behalf
            return handed, Decision(admitted=True, slots=dict(handed.slots))
        capacity = self._capacity()
        found = self.charges(waiter.request)
        scope = dataclasses.replace(self._scope(found, waiter_id=waiter.id), ids=(waiter.id,))
        with self.transaction(scope, sweep=self._want_sweep()) as (txn, _):
            handed = txn.find(waiter.id)
            if handed is not None:  # handed over while we were getting here
                return handed, Decision(admitted=True, slots=dict(handed.slots))
            entry = txn.waiter(waiter.id)
            if entry is None:
                entry = self._queue_entry(txn, waiter.id, waiter.request, found, waiter.owner, since=waiter.since,
                                          holder=waiter.holder)
                txn.put_waiter(entry)
            elif self.shared and entry.lease_expires_at is not None \
                    and entry.lease_expires_at - txn.now < self.config.lease_seconds * 2 / 3:
                # check in: other hosts drop a waiter whose lease lapsed (it died unseen)
                entry = dataclasses.replace(entry, lease_expires_at=self._lease(waiter.owner, txn.now))
                txn.put_waiter(entry)
            decision = self._decide(txn, waiter.request, found, waiter_id=waiter.id, since=entry.since,
                                    capacity_now=capacity)
            if not decision.admitted:
                return None, decision
            txn.drop_waiter(waiter.id)
            waited = round(max(0.0, txn.now - entry.since), 3)
            return self._grant(txn, waiter.request, owner, found, decision, waited_seconds=waited), decision

    def _queue_entry(self, txn: Txn | None, waiter_id: str, request: Request, found: Sequence[Charge], owner: Owner,
                     *, since: float | None = None, holder: Owner | None = None) -> Waiter:
        """The queue entry of ``owner``'s waiting ``request`` (``holder``: who will own the
        allocation, when not the waiting process). ``txn`` None: the entry a one-step join
        files, whose time, lease and fence the server fills in, with this host's capacities
        (the server checks the registry holds the same)."""
        capacity = {c.key: c.capacity for c in found if c.capacity is not None}
        for c in found:
            record = None if txn is None else txn.pool(c.key)
            if record is not None:
                capacity[c.key] = record.capacity
        entry = Waiter(id=waiter_id, request=request, owner=owner, since=0.0, charges=tuple(c.key for c in found),
                       capacity={k: masked_capacity(v) for k, v in capacity.items()}, holder=holder)
        if txn is None:
            return entry
        return dataclasses.replace(entry, since=round(txn.now if since is None else since, 3),
                                   lease_expires_at=self._lease(owner, txn.now), fence=txn.counter)

    def leave_queue(self, waiter_id: str) -> bool:
        """Take ``waiter_id`` out of the queue (it gave up); True if it was there."""
        peek = self.ledger.read(Scope(waiter_id=waiter_id))
        entry = next((w for w in peek.waiters if w.id == waiter_id), None)
        keys = frozenset(entry.charges) if entry is not None else frozenset()
        with self.transaction(Scope(keys=keys | self._keys_of_waiters_sharing(peek, keys), waiter_id=waiter_id,
                                    ids=(waiter_id,)), releasing={waiter_id}) as (txn, _):
            handed = txn.find(waiter_id)
            if handed is not None:  # granted to it as it gave up: give it back
                self._drop(txn, handed, "release", reason="its waiter left before taking it")
                return True
            return txn.drop_waiter(waiter_id)

    def queue(self) -> list[Waiter]:
        """The waiters, in the order they are served (dead ones already dropped)."""
        with self.transaction(Scope()) as (txn, _):
            return ordered(txn.waiters, txn.now, self.config.aging_seconds)

    def _servable(self, txn: Txn, *, exclude: Collection[str] = ()) -> list[str]:
        """The waiters that can be served now (the head of the queue, and those the
        backfill rule lets through), as if each were granted in turn: a waiter is chosen
        when its every key has room beside what is held and what the waiters chosen
        before it would take, and when it would delay nobody still waiting ahead of it.
        Keys this transaction did not read are taken to have room (the waiter checks for
        itself when woken)."""
        now = txn.now
        queue = [w for w in ordered(txn.waiters, now, self.config.aging_seconds) if w.id not in exclude]
        taking: dict[str, Usage] = {}  # what the waiters chosen so far would take, per key
        chosen: list[Waiter] = []
        for i, w in enumerate(queue):
            want = w.request.usage
            room = True
            for key in w.charges:
                record = txn.pool(key)
                if record is not None and record.drained:
                    room = False
                    break
                cap = record.capacity if record is not None else w.capacity.get(key)
                if cap is not None and not fits(want, txn.usage(key).plus(taking.get(key, Usage())), cap):
                    room = False
                    break
            if not room:
                continue
            delays = False
            for earlier in queue[:i]:
                if earlier in chosen:
                    continue
                for key in earlier.charges:
                    if key not in w.charges:
                        continue
                    record = txn.pool(key)
                    cap = record.capacity if record is not None else earlier.capacity.get(key)
                    if cap is None:
                        continue
                    after = earlier.after.get(key, Usage()).plus(taking.get(key, Usage())).plus(want)
                    if not fits(earlier.request.usage, after, cap):
                        delays = True
                        break
                if delays:
                    break
            if delays:
                continue
            chosen.append(w)
            for key in w.charges:
                taking[key] = taking.get(key, Usage()).plus(want)
        return [w.id for w in chosen]

    def _hand_off(self, txn: Txn, servable: Sequence[str]) -> str | None:
        """Grant, in the transaction that freed the room, the first waiter it can serve:
        the waiter then only reads its allocation when woken (its id is the waiter's), and
        the room is never idle between holders. At most one grant per transaction (a
        transaction reads only the lowest free instance of a pool), only to a holder whose
        process can be watched (were the waiter to die, the grant is reclaimed with it),
        and only where this host can judge the machine check (its own waiters, or no
        memory to check). The others are woken and take their turn themselves."""
        for waiter_id in servable:
            w = txn.waiter(waiter_id)
            if w is None or txn.find(w.id) is not None or not all(txn.has_read(k) for k in w.charges):
                continue  # gone, granted, or it joined with keys this transaction did not read
            holder = w.holder or w.owner
            if holder.pid is None:
                continue
            if w.owner.host != self.host and self.config.machine.check_memory and w.request.memory_mb:
                continue
            found = self._charges_of_waiter(w)
            try:
                decision = self._decide(txn, w.request, found, waiter_id=w.id, since=w.since)
            except NetraRMError:
                continue  # its pool changed under it (a mismatch): it finds out for itself
            if not decision.admitted:
                continue
            waited = round(max(0.0, txn.now - w.since), 3)
            self._grant(txn, w.request, holder, found, decision, allocation_id=w.id, waited_seconds=waited,
                        handed_off=True)
            txn.drop_waiter(w.id)
            return w.id
        return None

    def _charges_of_waiter(self, w: Waiter) -> list[Charge]:
        """The charges a waiter joined with (its own host's keys and capacities)."""
        found = []
        for key in w.charges:
            kind, name, host = parse_key(key)
            found.append(Charge(key=key, kind=kind, name=name, scope="host" if host else "global",
                                capacity=w.capacity.get(key), central=host is None and kind != "caps",
                                slots=kind in ("layer", "pool")))
        return found

    def _handed(self, waiter_id: str) -> Allocation | None:
        """The allocation a release handed to ``waiter_id`` (its id is the waiter's), if any."""
        return self.ledger.read(Scope(ids=(waiter_id,))).known.get(waiter_id)

    def _keys_of_waiters_sharing(self, snapshot: Snapshot, keys: Collection[str]) -> frozenset[str]:
        """The keys of every waiter that shares one of ``keys`` (a release must see them
        to tell which waiters it can serve)."""
        mine = set(keys)
        found: set[str] = set()
        for w in snapshot.waiters:
            if mine.intersection(w.charges):
                found.update(w.charges)
        return frozenset(found)

    def allocate(self, request: Request, owner: Owner) -> Allocation:
        """Admit ``request`` now or raise :class:`NoCapacityError` with the reasons."""
        allocation, decision = self.try_allocate(request, owner)
        if allocation is None:
            what = f"in layer {request.layer}" if request.layer else f"in pool {', '.join(request.pools)}"
            raise NoCapacityError(
                f"no capacity for {request.category} {what}: {join_reasons(decision.reasons)}",
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
        if not wanted:
            return ReleaseResult(released=[], missing=[])
        fast = self.ledger.fast_release(wanted, events={ident: measured for ident in wanted} if measured else None)
        if fast is not None:
            return ReleaseResult(released=fast[0], missing=fast[1])
        with self.transaction(self._release_scope(wanted), releasing=set(wanted)) as (txn, _):
            released = []
            for ident in wanted:
                a = txn.find(ident)
                if a is None:
                    continue
                self._drop(txn, a, "release", **dict(measured or {}))
                released.append(a)
            txn.changes.outcome = [a.id for a in released]
        found = {a.id for a in released}
        return ReleaseResult(released=released, missing=[i for i in wanted if i not in found])

    def _release_scope(self, wanted: Sequence[str]) -> Scope:
        """What a release locks: the keys of the allocations it releases and of the waiters
        sharing one of them (it may hand the room on). A backend that finds them as it
        locks is asked to; for the others they are read first."""
        if self.ledger.widens:
            return Scope(ids=tuple(wanted), widen=True)
        peek = self.ledger.read(Scope(ids=tuple(wanted)))
        keys: set[str] = set()
        for ident in wanted:
            a = peek.known.get(ident)
            if a is not None:
                keys.update(a.charges)
        keys |= self._keys_of_waiters_sharing(peek, keys)
        return Scope(keys=frozenset(keys), ids=tuple(wanted))

    def renew(self, ids: Iterable[str], *, hold_seconds: float | None = None) -> list[str]:
        """Renew the leases of these allocations (a holder's heartbeat, see
        :mod:`netra_rm.core.lease`) and, with ``hold_seconds``, keep each from expiring
        for at least that long from now; the ids the ledger no longer holds. One of them
        past its time but not yet reclaimed by anyone is renewed, not reclaimed."""
        wanted = list(dict.fromkeys(ids))
        # its holder's own renewal does not reclaim an allocation past its time: still in the
        # ledger, its capacity went to nobody, so it is renewed (a late beat, not a loss)
        with self.transaction(Scope(ids=tuple(wanted)), releasing=set(wanted)) as (txn, _):
            now = txn.now
            missing = []
            for ident in wanted:
                a = txn.find(ident)
                if a is None:
                    missing.append(ident)
                    continue
                changes: dict[str, Any] = {}
                lease = self._lease(a.owner, now)
                if lease is not None and lease != a.lease_expires_at:
                    changes["lease_expires_at"] = lease
                if hold_seconds is not None and now + hold_seconds > a.expires_at:
                    changes["expires_at"] = round(now + hold_seconds, 3)
                if changes:
                    txn.update(dataclasses.replace(a, **changes))
        return sorted(missing)

    def why_gone(self, allocation_id: str) -> str:
        """Why the ledger no longer holds ``allocation_id``, from the last journal event
        about it (read from the journal's end): "released", "forced" (``cleanup
        --force``), "expired", "owner gone", "lease lapsed", or "unknown" (no event: the
        ledger was reset or lost it)."""
        try:
            _, lines = self.ledger.journal_tail(2000)
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
            if not isinstance(event, dict) or event.get("id") != allocation_id:
                continue
            kind = event.get("event")
            if kind == "release":
                return "forced" if event.get("reason") == "forced" else "released"
            if kind == "expire":
                return "expired"
            if kind == "reclaim":
                return str(event.get("reason") or "owner gone")
            if kind in ("grant", "migrate"):
                break
        return "unknown"

    def record_lost(self, allocation: Allocation, cause: str, *, action: str) -> None:
        """Journal that the holder of ``allocation`` found it gone (``action``: what it did
        about it, "term" or "warn"). Best effort: the ledger may be the thing that was lost."""
        try:
            with self.transaction(Scope()) as (txn, _):
                txn.journal(event_record("lost", allocation, txn.now, reason=cause, action=action))
        except NetraRMError:
            pass

    def cleanup(self, *, force: bool = False) -> list[Reclaimed]:
        """Drop expired and orphaned allocations; with ``force``, every allocation (and,
        on a ledger that lost its state, start it afresh)."""
        with self.transaction(Scope(everything=True), reset=force, sweep=True) as (txn, reclaimed):
            if force:
                dropped = txn.allocations()
                for a in dropped:
                    self._drop(txn, a, "release", reason="forced")
                reclaimed = reclaimed + [Reclaimed(a, "forced") for a in dropped]
                txn.changes.reset = True
            return reclaimed

    # -- pools (see netra_rm.core.pools) -----------------------------------------------

    def pool_key_for(self, name: str, *, host: str | None = None) -> str:
        from netra_rm.core import pools

        return pools.pool_key_for(self, name, host=host)

    def change_pool(self, name: str, **change: Any) -> PoolRecord:
        """``pool set`` / ``drain`` / ``resume`` (see :func:`netra_rm.core.pools.change_pool`)."""
        from netra_rm.core import pools

        return pools.change_pool(self, name, **change)

    def pools(self) -> list[dict[str, Any]]:
        from netra_rm.core import pools

        return pools.pools(self)

    def instance_environment(self, allocation: Allocation) -> dict[str, str]:
        from netra_rm.core import pools

        return pools.instance_environment(self, allocation)

    # -- status --------------------------------------------------------------------------

    def report(self) -> tuple[Snapshot, list[Reclaimed]]:
        """Everything, for a report, and what was reclaimed on the way: read without the
        lock; what is due (or owned by a dead process here) is reclaimed first, in a
        transaction over the keys it held."""
        snapshot = self.ledger.read(Scope(everything=True, sweep_host=self.host))
        alive_cache: dict[tuple[int, str | None], bool] = {}
        self._owners.refresh()
        mine = [a for a in snapshot.known.values() if a.owner.host == self.host]
        due = [a for a in (*snapshot.due, *mine) if self._reclaim_reason(a, snapshot.now, alive_cache) is not None]
        if not due and not self._dead_waiters(snapshot.waiters, snapshot.now, alive_cache):
            return snapshot, []
        keys: set[str] = set()
        for a in due:
            keys.update(a.charges)
        keys |= self._keys_of_waiters_sharing(snapshot, keys)
        with self.transaction(Scope(keys=frozenset(keys), ids=tuple(a.id for a in due)), sweep=True) as (_, gone):
            pass
        return self.ledger.read(Scope(everything=True)), gone

    def _report_snapshot(self) -> Snapshot:
        return self.report()[0]

    def active_allocations(self) -> list[Allocation]:
        return self._report_snapshot().allocations

    # -- views (see netra_rm.core.status) ----------------------------------------------

    def resource_status(self, *, system_metrics: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The pools, the active allocations and the machine, as the contract's dict."""
        from netra_rm.core import status

        return status.resource_status(self, system_metrics=system_metrics)

    def pool_usage(self) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
        from netra_rm.core import status

        return status.pool_usage(self)

    def pool_status(self, layer: str) -> dict[str, Any]:
        from netra_rm.core import status

        return status.layer_pool_status(self, layer)

#: The journal events that take an allocation away from its holder.
FREEING_EVENTS = ("release", "expire", "reclaim")


def holder_channel(allocation_id: str) -> str:
    """The wake-up channel on which the holder of ``allocation_id`` hears that it was
    taken away (on the file ledger, a FIFO beside the waiters'). An id of its own
    ("e0" and the allocation's id), so it never meets a waiter's."""
    return f"e0{allocation_id}"


def join_reasons(reasons: Iterable[str]) -> str:
    """Several reasons as one sentence."""
    return "; ".join(r.rstrip(".") for r in reasons) + "."


def _new_id(txn: Txn) -> str:
    while True:
        candidate = os.urandom(6).hex()
        if txn.find(candidate) is None:
            return candidate
