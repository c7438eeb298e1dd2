"""Waiting for room: try now, and with ``wait`` keep trying until the deadline."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from netra_rm.core.engine import Engine, join_reasons
from netra_rm.core.model import Allocation, Owner, Request
from netra_rm.errors import NoCapacityError, WaitTimeoutError


def allocate_waiting(engine: Engine, request: Request, owner: Owner, *, wait: bool = False,
                     timeout: float | None = None, sleep: Callable[[float], None] = time.sleep,
                     clock: Callable[[], float] = time.monotonic) -> Allocation:
    """Admit ``request``; with ``wait``, retry with backoff until ``timeout`` seconds
    (None: no limit) and raise :class:`WaitTimeoutError` when it runs out."""
    if not wait:
        return engine.allocate(request, owner)
    deadline = None if timeout is None else clock() + timeout
    delay = 0.05
    while True:
        allocation, decision = engine.try_allocate(request, owner)
        if allocation is not None:
            return allocation
        left = None if deadline is None else deadline - clock()
        if left is not None and left <= 0:
            raise WaitTimeoutError(
                f"no capacity for {request.category} in layer {request.layer} after waiting {timeout:g}s: "
                f"{join_reasons(decision.reasons)}", reasons=decision.reasons,
                remediation=["Wait longer with a larger --timeout, or see who holds the pool with "
                             "`netra-rm status`."])
        pause = delay * random.uniform(0.5, 1.0)
        sleep(pause if left is None else min(pause, left))
        delay = min(delay * 2, 1.0)


__all__ = ["NoCapacityError", "allocate_waiting"]
