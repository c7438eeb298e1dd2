"""Waiting for room, fairly: join the ledger's FIFO queue and sleep until it is our turn.

The order and the rule for going past the head live in :mod:`netra_rm.core.queue`;
this module is the loop around them. A waiter

1. opens its wake-up channel (a FIFO beside the ledger, :mod:`netra_rm.ledger.wake`)
   *before* joining, so no release between joining and sleeping is missed;
2. is admitted at once if it fits and the queue lets it, else joins the tail;
3. sleeps on the channel; a process that frees capacity (or leaves the queue) writes a
   byte into it after committing, so the waiter re-checks within a few milliseconds. It
   also re-checks on a timer, with backoff from 50 ms to ``max_pause`` (1 s), because an
   expiry or a dead holder frees capacity without anyone to wake it. Without FIFOs (a
   filesystem that refuses them) it polls with the backoff capped at 200 ms;
4. leaves the queue when it is admitted, when time runs out (:class:`WaitTimeoutError`,
   exit 3) or when it is interrupted. A waiter killed outright is dropped from the queue
   by the next transaction, which sees its process is gone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from netra_rm.backoff import Backoff
from netra_rm.core.engine import Engine, join_reasons
from netra_rm.core.model import Allocation, Owner, Request
from netra_rm.core.queue import Waiter
from netra_rm.errors import NoCapacityError, WaitTimeoutError

FIRST_PAUSE = 0.05
MAX_PAUSE = 1.0
MAX_PAUSE_WITHOUT_WAKEUPS = 0.2


def allocate_waiting(engine: Engine, request: Request, owner: Owner, *, wait: bool = False,
                     timeout: float | None = None, waiter_owner: Owner | None = None,
                     first_pause: float = FIRST_PAUSE, max_pause: float = MAX_PAUSE,
                     clock: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], None] = time.sleep) -> Allocation:
    """Admit ``request`` for ``owner``; with ``wait``, queue until admitted or until
    ``timeout`` seconds (None: no limit) run out.

    ``waiter_owner`` is the process that waits (default: this one); the queue drops the
    request when it dies. Between checks it sleeps ``first_pause`` seconds, doubling up to
    ``max_pause``, unless woken. Raises :class:`NoCapacityError` (no wait) or
    :class:`WaitTimeoutError`, both exit 3.
    """
    if not wait:
        return engine.allocate(request, owner)
    deadline = None if timeout is None else clock() + timeout
    waiter_id = os.urandom(6).hex()
    channel = engine.ledger.waiter_channel(waiter_id)
    if channel is None:
        max_pause = min(max_pause, MAX_PAUSE_WITHOUT_WAKEUPS)
    elif engine.shared:
        # woken when it can be served; it re-checks (and renews its queue entry's lease, so
        # other hosts know it is alive) three times a lease, for room that came back with
        # nobody to wake it (an expiry, a holder that died)
        max_pause = max(max_pause, min(engine.config.lease_seconds / 3, 5.0))
        first_pause = max_pause  # woken when it can be served: checking sooner only costs the server
    waiter: Waiter | None = None
    admitted = False
    # from here on a signal (^C, run's SIGTERM) may come after the join was committed and
    # before it returned: leaving the queue is then up to us
    queued = True
    try:
        try:
            allocation, waiter, decision = engine.allocate_or_join(
                request, owner, waiter_id=waiter_id, waiter_owner=waiter_owner or engine.current_process_owner())
        except Exception:
            queued = False  # the join failed (the ledger unreachable, say): there is nothing to leave
            raise
        pauses = Backoff(first_pause, max_pause).pauses()
        pause = next(pauses)
        while allocation is None:
            assert waiter is not None
            left = None if deadline is None else deadline - clock()
            if left is not None and left <= 0:
                if not decision.reasons:  # it joined in one step, without the reasons: a last look
                    allocation, decision = engine.try_admit_waiter(waiter, owner)
                    if allocation is not None:
                        break
                raise WaitTimeoutError(
                    f"no capacity for {request.category} in layer {request.layer} after waiting {timeout:g}s: "
                    f"{join_reasons(decision.reasons)}", reasons=decision.reasons,
                    remediation=["Wait longer with a larger --timeout, or see who holds the pool and who "
                                 "waits with `netra-rm status`."])
            nap = pause if left is None else min(pause, left)
            if channel is not None:
                woken = channel.wait(nap)
            else:
                sleep(nap)
                woken = False
            if not woken:
                pause = next(pauses)
            allocation, decision = engine.try_admit_waiter(
                waiter, owner, handed=channel.handed if channel is not None and woken else None)
        admitted = True
        return allocation
    finally:
        if queued and not admitted:
            try:
                engine.leave_queue(waiter_id)
            except Exception:  # noqa: BLE001 - leaving is best effort: a dead waiter is dropped anyway
                pass
        if channel is not None:
            channel.close()


__all__ = ["NoCapacityError", "WaitTimeoutError", "allocate_waiting"]
