"""How long to pause between two tries of something that is not ready yet: one helper for
every retry loop, and every loop's figures side by side.

A :class:`Backoff` is a policy (first pause, growth, ceiling, jitter); :meth:`Backoff.pauses`
yields the pauses of one wait. The loop itself (what to try, what deadline, what may wake
it early) stays with its caller, which never sleeps past its deadline: it sleeps
``min(pause, time_left)``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Pauses of ``first`` seconds, each ``factor`` times the one before, up to ``most``.

    With ``jitter`` (0 to 1) each pause is shortened at random by up to that fraction, so
    that many waiters started together do not try again together.
    """

    first: float
    most: float
    factor: float = 2.0
    jitter: float = 0.0

    def pauses(self) -> Iterator[float]:
        """The pauses of one wait, endless: ``for pause in policy.pauses()`` or ``next()``."""
        pause = min(self.first, self.most)
        while True:
            yield pause * random.uniform(1.0 - self.jitter, 1.0) if self.jitter else pause
            pause = min(pause * self.factor, self.most)


#: ``up``/``down`` checking whether a service came up (went down): quick at first, as a
#: server often answers within a few hundred ms, then twice a second.
SERVICE_STATE = Backoff(first=0.05, most=0.5, factor=1.5)
#: a signalled process group ending.
PROCESS_EXIT = Backoff(first=0.01, most=0.2)
#: another ``up``/``down`` holding the start lock.
START_LOCK = Backoff(first=0.02, most=0.25)
#: ``layer --timeout`` (and ``ensure_layer_resources_available``) waiting for a layer, and
#: ``--requires`` waiting for services: each round checks every service, so rounds grow
#: to 5 s apart, jittered.
LAYER_READY = Backoff(first=0.25, most=5.0, jitter=0.5)
# A request waiting in the queue (core/waiting.py) builds its Backoff from its own
# FIRST_PAUSE and MAX_PAUSE: the ceiling depends on the ledger's wake-ups and lease.
