"""The wait queue: who waits for room, in what order, and who may go first.

Pure functions over plain data (waiters, allocations, pools, caps), like admission, so
the fairness rule is tested without files, clocks or processes. The queue is one list
in the ledger, oldest first, shared by every layer: waiters in different layers only
meet through the global caps.

The rule. A request is admitted when it fits now *and* it delays nobody queued ahead of
it. The waiter at the head has nobody ahead, so it goes as soon as it fits; a later
waiter (or a newcomer that does not wait) may go past the head only when that does not
delay it.

"Delaying" is defined against the point every earlier waiter ``E`` is entitled to: the
moment the allocations that were already held when ``E`` joined the queue have all
been released. Admitting ``X`` delays ``E`` when, at that moment, ``E``'s request would
not fit beside the allocations granted *after* ``E`` joined (still held, as far as we
know) plus ``X``. Those later grants are recognised by their fencing token: the ledger's
counter only grows, and each waiter records its value when it joins.

Hence the guarantee, an invariant kept at every admission: ``E`` fits beside everything
admitted past it. So once the allocations that were ahead of ``E`` (held when it joined,
or granted to waiters ahead of it) are gone, ``E`` fits: its wait is bounded by the hold
times of what was ahead of it, never by what went past it; and a small request that fits
beside ``E`` is not starved behind it. (Like conservative backfilling, it does not promise
``E`` every earlier chance a partial release might have given it under strict FIFO.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from netra_rm.config.model import Limits, Pool, SharedPool
from netra_rm.core.admission import Usage, admit, admit_shared
from netra_rm.core.model import Allocation, Owner, Request


@dataclass(frozen=True)
class Waiter:
    """A request waiting in the queue.

    ``owner`` is the waiting process (the queue drops it when that process is gone),
    not necessarily the allocation's future owner. ``fence`` is the ledger's fencing
    counter when it joined: allocations with a larger token were granted after it.
    """

    id: str
    request: Request
    owner: Owner
    since: float
    fence: int

    def to_dict(self) -> dict[str, Any]:
        r = self.request
        data = {"id": self.id, "layer": r.layer, "category": r.category, "memory_mb": r.memory_mb,
                "cpu_percent": r.cpu_percent, "dedicated": r.dedicated, "requires": list(r.requires),
                "duration_minutes": r.duration_minutes, "since": self.since, "fence": self.fence,
                "owner": self.owner.to_dict()}
        if r.pools:
            data["pools"] = list(r.pools)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Waiter:
        request = Request(layer=data["layer"], category=data.get("category", ""), memory_mb=data["memory_mb"],
                          cpu_percent=data["cpu_percent"], dedicated=data.get("dedicated", False),
                          requires=tuple(data.get("requires", ())),
                          duration_minutes=data.get("duration_minutes", 30.0), pools=tuple(data.get("pools", ())))
        return cls(id=data["id"], request=request, owner=Owner.from_dict(data["owner"]),
                   since=data.get("since", 0.0), fence=data.get("fence", 0))


def would_delay(candidate: Request, earlier: Waiter, *, allocations: Iterable[Allocation],
                pools: Mapping[str, Pool], limits: Limits, shared_pools: Mapping[str, SharedPool] | None = None,
                candidate_host: str | None = None) -> bool:
    """Would admitting ``candidate`` now delay ``earlier`` (see the module's definition)?

    With ``candidate_host`` (a ledger shared by several hosts), only what counts against
    ``earlier``'s pools from its own host's point of view is considered: a host-scoped
    pool and the global caps count the allocations of ``earlier``'s host, a global pool
    every host's.
    """
    pool = pools.get(earlier.request.layer)
    if pool is None:  # its layer left the configuration: it can never be admitted anyway
        return False
    after_it = [a for a in allocations if a.fencing_token > earlier.fence]
    after_it.append(_as_allocation(candidate, host=candidate_host or ""))
    if candidate_host is None:
        local = after_it
        same_layer = [a for a in after_it if a.layer == earlier.request.layer]
    else:
        host = earlier.owner.host
        local = [a for a in after_it if a.owner.host == host]
        same_layer = [a for a in (local if pool.scope == "host" else after_it) if a.layer == earlier.request.layer]
    decision = admit(earlier.request, pool=pool, limits=limits, layer_allocations=same_layer,
                     all_usage=Usage.of(local), machine_free_mb=None)
    if not decision.admitted:
        return True
    if not earlier.request.pools:
        return False
    shared = shared_pools or {}
    holders = {name: [a for a in (local if name in shared and shared[name].scope == "host" else after_it)
                      if name in a.pools] for name in earlier.request.pools}
    return bool(admit_shared(earlier.request, pools=shared, holders=holders))


def blocking_waiter(candidate: Request, ahead: Sequence[Waiter], *, allocations: Sequence[Allocation],
                    pools: Mapping[str, Pool], limits: Limits, shared_pools: Mapping[str, SharedPool] | None = None,
                    candidate_host: str | None = None) -> Waiter | None:
    """The first waiter in ``ahead`` (oldest first) that admitting ``candidate`` would
    delay, or None when it may go."""
    for earlier in ahead:
        if would_delay(candidate, earlier, allocations=allocations, pools=pools, limits=limits,
                       shared_pools=shared_pools, candidate_host=candidate_host):
            return earlier
    return None


def position(waiters: Sequence[Waiter], waiter_id: str) -> int | None:
    """The index of ``waiter_id`` in the queue (0 is the head), or None if not queued."""
    return next((i for i, w in enumerate(waiters) if w.id == waiter_id), None)


def waiter_view(waiter: Waiter, place: int, now: float) -> dict[str, Any]:
    """A waiter as ``status`` shows it: its request, its place (1 is next) and its wait."""
    data = waiter.to_dict()
    data["position"] = place
    data["waited_seconds"] = round(max(0.0, now - waiter.since), 1)
    return data


def _as_allocation(request: Request, *, host: str = "") -> Allocation:
    """The request as if granted, for the arithmetic of :func:`admit` (it is never stored)."""
    return Allocation(id="", layer=request.layer, category=request.category, memory_mb=request.memory_mb,
                      cpu_percent=request.cpu_percent, dedicated=request.dedicated, requires=request.requires,
                      created_at=0.0, expires_at=0.0, slot=-1, owner=Owner(host=host, user=""),
                      fencing_token=1 << 62, pools=request.pools)
