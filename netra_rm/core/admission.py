"""Admission: does a request fit these pools, given what they hold?

A pure function over plain data (the request, its charges, each key's capacity and
usage, the instance indices taken), so it is tested without files, clocks or sockets.
The engine gathers the inputs from the ledger and the configuration and calls
:func:`admit`; the queue asks :func:`fits` the same question for the waiters.

Every quantity is exact: memory in whole MB, CPU in thousandths of a percent (see
:mod:`netra_rm.records`). A quantity that is not a finite number is refused here too,
as a second line of defence behind the input checks: a comparison with NaN is never
"fits".
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from netra_rm.core.accounting import Charge
from netra_rm.errors import RequestTooLargeError, UsageError
from netra_rm.records import Capacity, Request, Usage, cpu_percent


@dataclass(frozen=True)
class Decision:
    """The verdict: admitted with an instance index per pool that hands them out, or
    refused with one sentence per reason. ``drained`` is set when a refusal is because
    a pool is draining."""

    admitted: bool
    slots: Mapping[str, int] = field(default_factory=dict)
    reasons: tuple[str, ...] = ()
    drained: bool = False

    @property
    def slot(self) -> int | None:
        return next(iter(self.slots.values()), None)


def _finite(value: object) -> bool:
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def valid_amounts(request: Request) -> bool:
    """Are the request's quantities whole numbers (MB, CPU units), not negative, with a
    finite duration above zero?"""
    return (_whole(request.memory_mb) and _whole(request.cpu_units) and request.memory_mb >= 0
            and request.cpu_units >= 0 and _finite(request.duration_minutes) and request.duration_minutes > 0)


def shortfalls(label: str, usage: Usage, want: Usage, capacity: Capacity, *, dedicated: bool,
               names: tuple[str, str, str] | None = None) -> list[str]:
    """Why ``want`` does not fit beside ``usage`` in a pool of ``capacity`` (none: it fits).
    ``names`` say each dimension (default: the label and "memory", "CPU", "instances")."""
    memory, cpu, instances = names or (f"{label} memory", f"{label} CPU", f"{label} instances")
    reasons: list[str] = []
    if capacity.memory_mb is not None and usage.memory_mb + want.memory_mb > capacity.memory_mb:
        reasons.append(f"{memory}: {usage.memory_mb} of {capacity.memory_mb} MB in use, "
                       f"{want.memory_mb} MB requested.")
    if capacity.cpu_units is not None and usage.cpu_units + want.cpu_units > capacity.cpu_units:
        reasons.append(f"{cpu}: {cpu_percent(usage.cpu_units):g}% of {cpu_percent(capacity.cpu_units):g}% "
                       f"in use, {cpu_percent(want.cpu_units):g}% requested.")
    if usage.instances + want.instances > capacity.instances:
        reasons.append(f"{instances}: all {capacity.instances} in use.")
    if dedicated and capacity.dedicated:
        if want.dedicated and usage.instances:
            reasons.append(f"{label}: a dedicated allocation needs it to itself, {usage.instances} allocation(s) "
                           "active.")
        if usage.dedicated:
            reasons.append(f"{label}: held by a dedicated allocation.")
    return reasons


_CAPS_NAMES = ("global memory cap", "global CPU cap", "global instance cap")


def fits(want: Usage, usage: Usage, capacity: Capacity) -> bool:
    """Does ``want`` fit beside ``usage`` in a pool of ``capacity``? (The queue's question.)"""
    return not shortfalls("", usage, want, capacity, dedicated=True)


def lowest_free(taken: Collection[int], instances: int) -> int | None:
    """The lowest index in 0..instances-1 not in ``taken``; None when all are taken. A
    compact set that can say it itself (see :class:`netra_rm.ledger.base.SlotBitmap`) is
    asked."""
    ask = getattr(taken, "lowest_free", None)
    if ask is not None:
        found: int | None = ask(instances)
        return found
    for index in range(instances):
        if index not in taken:
            return index
    return None


def admit(request: Request, charges: Sequence[Charge], *, capacity: Mapping[str, Capacity],
          usage: Mapping[str, Usage], taken: Mapping[str, Collection[int]] | None = None,
          drained: Collection[str] = (), machine_free_mb: float | None = None) -> Decision:
    """Decide whether ``request`` fits now.

    :param charges: the pools it counts against (:func:`netra_rm.core.accounting.charges`).
    :param capacity: per key, what the pool may hold (this host's configuration for a
        host key, the ledger's for a central one).
    :param usage: per key, what active allocations hold.
    :param taken: per key, the instance indices held.
    :param drained: the keys whose pools are draining (nothing new is granted).
    :param machine_free_mb: memory the machine can still give to new reservations; None
        skips the machine check.
    """
    if not valid_amounts(request):
        return Decision(admitted=False, reasons=("the request's amounts are not finite numbers of zero or more.",))
    want = request.usage
    reasons: list[str] = []
    is_drained = False
    for charge in charges:
        cap = capacity.get(charge.key)
        if cap is None:
            reasons.append(f"{charge.label}: its capacity is unknown.")
            continue
        if charge.key in drained:
            is_drained = True
            reasons.append(f"{charge.label} is draining: it grants nothing new until `netra-rm pool resume "
                           f"{charge.name}`.")
        used = usage.get(charge.key, Usage())
        names = _CAPS_NAMES if charge.kind == "caps" else None
        reasons.extend(shortfalls(charge.label, used, want, cap, dedicated=charge.kind == "layer", names=names))
    if machine_free_mb is not None and (not math.isfinite(machine_free_mb) or request.memory_mb > machine_free_mb):
        reasons.append(f"machine memory: only {max(machine_free_mb, 0):.0f} MB can still be reserved, "
                       f"{request.memory_mb} MB requested.")
    if reasons:
        return Decision(admitted=False, reasons=tuple(reasons), drained=is_drained)
    slots: dict[str, int] = {}
    for charge in charges:
        if charge.slots:
            index = lowest_free((taken or {}).get(charge.key, ()), capacity[charge.key].instances)
            if index is None:  # every index held though the count has room: the ledger is inconsistent
                return Decision(admitted=False, reasons=(f"{charge.label} instances: every instance is held.",))
            slots[charge.key] = index
    return Decision(admitted=True, slots=slots)


def never_fits(request: Request, charges: Sequence[Charge], capacity: Mapping[str, Capacity]) -> None:
    """Refuse, as bad input, a request no amount of waiting could satisfy (exit 2, naming
    the dimension and the maximum)."""
    if request.memory_mb < 0:
        raise UsageError(f"--memory-mb must be zero or more, got {request.memory_mb}.")
    if request.cpu_units < 0:
        raise UsageError(f"--cpu-percent must be zero or more, got {request.cpu_percent:g}.")
    if not valid_amounts(request):
        raise UsageError(f"--duration-minutes must be a finite number above zero, got {request.duration_minutes!r}.")
    for charge in charges:
        cap = capacity.get(charge.key)
        if cap is None:
            continue
        where = ("the global cap (MAX_MEMORY_ALLOCATION_MB)", "the global cap (MAX_CPU_ALLOCATION_PERCENT)") \
            if charge.kind == "caps" else (f"{charge.label}'s pool" if charge.kind == "layer" else charge.label,) * 2
        for dimension, wanted, maximum, unit, place in (
                ("memory", request.memory_mb, cap.memory_mb, "MB", where[0]),
                ("CPU", request.cpu_units, cap.cpu_units, "%", where[1])):
            if maximum is None or wanted <= maximum:
                continue
            shown_want = wanted if unit == "MB" else cpu_percent(wanted)
            shown_max = maximum if unit == "MB" else cpu_percent(maximum)
            raise RequestTooLargeError(
                f"the request for {shown_want:g}{unit} of {dimension} can never fit: {place} holds at most "
                f"{shown_max:g}{unit}.",
                remediation=[f"Ask for at most {shown_max:g}{unit}, or raise the limit in the configuration."])
        if cap.instances < 1:
            raise RequestTooLargeError(f"{charge.label} has no instances, so nothing can ever be granted from it.",
                                       remediation=[f"Give it instances: netra-rm pool set {charge.name} "
                                                    "--instances N."])
