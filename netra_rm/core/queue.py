"""The wait queue: who waits for room, in what order, and who may go first.

Pure functions over plain data (waiters and the usage figures they carry), like
admission, so the fairness rule is tested without files, clocks or processes. The queue
is one collection in the ledger shared by every layer and pool; waiters in different
pools only meet where their keys meet (see :mod:`netra_rm.core.accounting`).

**Order.** Waiters are served by *effective priority*, highest first, then by arrival:
a waiter's effective priority is its ``--priority`` plus one for every
``queue.aging_seconds`` (default 60) it has waited, so a low-priority request is never
starved by a stream of higher ones: after ``(p_high - p_low) * aging_seconds`` of
waiting it ranks with them, and arrival order then puts it first.

**Who may go.** A request is admitted when it fits now *and* it delays nobody ranked
ahead of it. The waiter at the head has nobody ahead, so it goes as soon as it fits; a
later waiter (or a newcomer that does not wait) may go past an earlier one ``E`` only
when that does not delay ``E``.

"Delaying" is defined against the point ``E`` is entitled to: the moment the
allocations that were already held when ``E`` joined the queue have all been released.
Admitting ``X`` delays ``E`` when, at that moment, ``E``'s request would not fit beside
what was granted past ``E`` since it joined (still held) plus ``X``. The ledger keeps,
with each waiter, the running sum of what went past it (``Waiter.after``, per pool key),
added when a grant goes past it and taken off when that grant is released: so deciding
costs nothing per active allocation.

Hence the guarantee, an invariant kept at every admission: ``E`` fits beside everything
admitted past it. Once the allocations that were ahead of ``E`` (held when it joined, or
granted to waiters ahead of it) are gone, ``E`` fits: its wait is bounded by the hold
times of what was ahead of it, never by what went past it; and a small request that fits
beside ``E`` is not starved behind it. (Like conservative backfilling, it does not promise
``E`` every earlier chance a partial release might have given it under strict FIFO.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from netra_rm.core.admission import fits
from netra_rm.records import Allocation, Capacity, Usage, Waiter

DEFAULT_AGING_SECONDS = 60.0


def effective_priority(waiter: Waiter, now: float, aging_seconds: float = DEFAULT_AGING_SECONDS) -> int:
    """Its priority, plus one per ``aging_seconds`` waited."""
    waited = max(0.0, now - waiter.since)
    return waiter.request.priority + (int(waited // aging_seconds) if aging_seconds > 0 else 0)


def ordered(waiters: Iterable[Waiter], now: float, aging_seconds: float = DEFAULT_AGING_SECONDS) -> list[Waiter]:
    """The queue in the order it is served: effective priority, then arrival."""
    return sorted(waiters, key=lambda w: (-effective_priority(w, now, aging_seconds), w.since, w.id))


def ahead_of(waiters: Sequence[Waiter], *, priority: int, since: float, waiter_id: str | None, now: float,
             aging_seconds: float = DEFAULT_AGING_SECONDS) -> list[Waiter]:
    """The waiters ranked before a request of ``priority`` that arrived at ``since`` (a
    newcomer arrives now; a queued one is ``waiter_id``)."""
    me = (-(priority + (int(max(0.0, now - since) // aging_seconds) if aging_seconds > 0 else 0)), since,
          waiter_id or "~")
    return [w for w in ordered(waiters, now, aging_seconds)
            if w.id != waiter_id and (-effective_priority(w, now, aging_seconds), w.since, w.id) < me]


def would_delay(want: Usage, keys: Iterable[str], earlier: Waiter, *,
                central: Mapping[str, Capacity] | None = None) -> bool:
    """Would admitting a request holding ``want`` in ``keys`` now delay ``earlier``?

    ``central`` gives the ledger's current capacity of central keys (a ``pool set``
    since ``earlier`` joined counts); other keys use the capacity ``earlier``'s host
    recorded when it joined.
    """
    mine = set(keys)
    need = earlier.request.usage
    for key in earlier.charges:
        if key not in mine:
            continue  # going past in pools it does not use cannot delay it
        capacity = (central or {}).get(key) or earlier.capacity.get(key)
        if capacity is None:
            continue
        after = earlier.after.get(key, Usage()).plus(want)
        if not fits(need, after, capacity):
            return True
    return False


def blocking_waiter(want: Usage, keys: Sequence[str], ahead: Sequence[Waiter], *,
                    central: Mapping[str, Capacity] | None = None) -> Waiter | None:
    """The first waiter in ``ahead`` (in serving order) that admitting the request would
    delay, or None when it may go."""
    for earlier in ahead:
        if would_delay(want, keys, earlier, central=central):
            return earlier
    return None


def pass_by(waiters: Sequence[Waiter], allocation: Allocation) -> tuple[list[Waiter], tuple[str, ...]]:
    """A grant goes past every waiter whose keys it shares: add it to their ``after``
    sums. Returns the waiters (changed where it counted) and the ids it counted for, to
    be stored with the allocation (:attr:`Allocation.behind`)."""
    keys = set(allocation.charges)
    held = allocation.usage
    changed: list[Waiter] = []
    behind: list[str] = []
    for w in waiters:
        shared = [k for k in w.charges if k in keys]
        if not shared:
            changed.append(w)
            continue
        after = dict(w.after)
        for k in shared:
            after[k] = after.get(k, Usage()).plus(held)
        changed.append(replace(w, after=after))
        behind.append(w.id)
    return changed, tuple(behind)


def give_back(waiters: Sequence[Waiter], allocation: Allocation) -> list[Waiter]:
    """An allocation that went past some waiters is gone: take it off their sums."""
    if not allocation.behind:
        return list(waiters)
    ids = set(allocation.behind)
    keys = set(allocation.charges)
    held = allocation.usage
    out: list[Waiter] = []
    for w in waiters:
        if w.id not in ids:
            out.append(w)
            continue
        after = dict(w.after)
        for k in w.charges:
            if k in keys and k in after:
                left = after[k].minus(held)
                after[k] = Usage(*(max(0, v) for v in left.to_list()))
        out.append(replace(w, after=after))
    return out


def waiter_view(waiter: Waiter, place: int, now: float,
                aging_seconds: float = DEFAULT_AGING_SECONDS) -> dict[str, Any]:
    """A waiter as ``status`` shows it: its request, its place (1 is next) and its wait."""
    data = waiter.to_dict()
    for internal in ("capacity", "after", "charges", "fence"):
        data.pop(internal, None)
    data["position"] = place
    data["waited_seconds"] = round(max(0.0, now - waiter.since), 1)
    data["effective_priority"] = effective_priority(waiter, now, aging_seconds)
    return data
