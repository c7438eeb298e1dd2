"""Bringing services up in dependency order, and down again: ``netra-rm up`` / ``down``.

One module per part:

- :mod:`.plan`: which services the targets need and what ``up`` does with each (pure);
- :mod:`.up` and :mod:`.down`: the runs, under one deadline each;
- :mod:`.commands`: start and stop commands in their own sessions, their output masked
  into logs, and the process groups they leave;
- :mod:`.checks`: each service checked on its own, within the time left;
- :mod:`.state`: what ``up`` started (``<ledger>.started.json``), the run lock, the logs;
- :mod:`.results`: what a run did, service by service.

Everything shown is masked: URLs, command lines and output tails never carry a password.
"""

from __future__ import annotations

from netra_rm.core.startup.down import DEFAULT_DOWN_TIMEOUT, bring_down
from netra_rm.core.startup.plan import UpPlan, plan_up, resolve_targets
from netra_rm.core.startup.results import DownResult, ServiceStartError, ServiceStep, StopStep, UpResult
from netra_rm.core.startup.state import StartedServices, StartRecord, start_info, started_services
from netra_rm.core.startup.up import DEFAULT_UP_TIMEOUT, bring_up

__all__ = [
    "DEFAULT_DOWN_TIMEOUT", "DEFAULT_UP_TIMEOUT", "DownResult", "ServiceStartError", "ServiceStep", "StartRecord",
    "StartedServices", "StopStep", "UpPlan", "UpResult", "bring_down", "bring_up", "plan_up", "resolve_targets",
    "start_info", "started_services",
]
