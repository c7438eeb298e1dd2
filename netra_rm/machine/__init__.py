"""Holding a command to its allocation on this machine: measuring it, and enforcing its limits.

:mod:`~netra_rm.machine.measure` measures a command's process tree. The mechanisms that
enforce an allocation's memory and CPU, one per module behind
:class:`~netra_rm.machine.base.Mechanism`, are tried in this order and the first that
works is used: a delegated cgroup v2 subtree, the cgroup v1 controllers, a systemd
scope, and the watchdog.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from netra_rm.errors import UsageError
from netra_rm.machine.base import Confinement, Limits, Mechanism, Used

__all__ = ["Confinement", "Limits", "Mechanism", "Used", "MECHANISM_NAMES", "default_mechanisms", "confine"]

#: The mechanisms, in the order they are tried.
MECHANISM_NAMES = ("cgroup-v2", "cgroup-v1", "systemd-run", "watchdog")


def default_mechanisms(names: Iterable[str] | None = None) -> list[Mechanism]:
    """The mechanisms to try, in order: ``names`` (a subset of :data:`MECHANISM_NAMES`,
    as ``NETRA_RM_ENFORCE_WITH`` gives them), else all of them."""
    from netra_rm.machine.cgroup_v1 import CgroupV1
    from netra_rm.machine.cgroup_v2 import CgroupV2
    from netra_rm.machine.systemd import SystemdRun
    from netra_rm.machine.watchdog import Watchdog

    makers = {"cgroup-v2": CgroupV2, "cgroup-v1": CgroupV1, "systemd-run": SystemdRun, "watchdog": Watchdog}
    chosen = list(names) if names is not None else list(MECHANISM_NAMES)
    unknown = [n for n in chosen if n not in makers]
    if unknown or not chosen:
        raise UsageError(f"unknown enforcement mechanism {', '.join(unknown) or '(none given)'}: choose from "
                         f"{', '.join(MECHANISM_NAMES)}.")
    return [makers[n]() for n in chosen]


def confine(key: str, limits: Limits, mechanisms: Sequence[Mechanism]) -> tuple[Confinement, list[str]]:
    """Confine with the first mechanism that works; it, and why earlier ones were passed
    over. Raises :class:`UsageError` when none works."""
    passed: list[str] = []
    for mechanism in mechanisms:
        if not mechanism.available():
            passed.append(f"{mechanism.name}: not available here")
            continue
        try:
            return mechanism.confine(key, limits), passed
        except OSError as exc:
            passed.append(f"{mechanism.name}: {exc.strerror or exc}")
    raise UsageError("--enforce: no way to enforce the allocation works here (" + "; ".join(passed) + ").",
                     remediation=["Run as root or in a delegated cgroup, or leave out --enforce."])
