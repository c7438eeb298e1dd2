"""Admission: does a request fit these pools, given these allocations?

A pure function over plain data, so it can be tested without files, clocks or sockets.
The engine gathers the inputs (ledger, configuration, machine) and calls :func:`admit`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from netra_rm.config.model import Limits, Pool, SharedPool
from netra_rm.core.model import Allocation, Request
from netra_rm.errors import RequestTooLargeError, UsageError


@dataclass(frozen=True)
class Usage:
    """What a set of allocations holds: memory, CPU and instances."""

    memory_mb: int = 0
    cpu_percent: float = 0.0
    instances: int = 0
    dedicated: bool = False

    @classmethod
    def of(cls, allocations: Iterable[Allocation]) -> Usage:
        memory, cpu, count, dedicated = 0, 0.0, 0, False
        for a in allocations:
            memory += a.memory_mb
            cpu += a.cpu_percent
            count += 1
            dedicated = dedicated or a.dedicated
        return cls(memory, round(cpu, 6), count, dedicated)


@dataclass(frozen=True)
class Decision:
    """The verdict: admitted with a slot, or refused with one sentence per reason."""

    admitted: bool
    slot: int | None = None
    reasons: tuple[str, ...] = ()


def validate_request(request: Request, pool: Pool, limits: Limits) -> None:
    """Refuse, as bad input, a request no amount of waiting could satisfy."""
    if request.memory_mb < 0:
        raise UsageError(f"--memory-mb must be zero or more, got {request.memory_mb}.")
    if request.cpu_percent < 0:
        raise UsageError(f"--cpu-percent must be zero or more, got {request.cpu_percent:g}.")
    if not request.duration_minutes > 0:
        raise UsageError(f"--duration-minutes must be greater than zero, got {request.duration_minutes:g}.")
    checks = (
        ("memory", request.memory_mb, pool.memory_mb, f"layer {request.layer}'s pool", "MB"),
        ("memory", request.memory_mb, limits.max_memory_mb, "the global cap (MAX_MEMORY_ALLOCATION_MB)", "MB"),
        ("CPU", request.cpu_percent, pool.cpu_percent, f"layer {request.layer}'s pool", "%"),
        ("CPU", request.cpu_percent, limits.max_cpu_percent, "the global cap (MAX_CPU_ALLOCATION_PERCENT)", "%"),
    )
    for dimension, wanted, maximum, where, unit in checks:
        if wanted > maximum:
            raise RequestTooLargeError(
                f"the request for {wanted:g}{unit} of {dimension} can never fit: {where} holds at most "
                f"{maximum:g}{unit}.",
                remediation=[f"Ask for at most {maximum:g}{unit}, or raise the limit in the configuration."])


def admit(request: Request, *, pool: Pool, limits: Limits, layer_allocations: Iterable[Allocation],
          all_usage: Usage, machine_free_mb: float | None = None) -> Decision:
    """Decide whether ``request`` fits now.

    :param pool: the request's layer pool.
    :param layer_allocations: active allocations in that layer.
    :param all_usage: what all active allocations hold, across every layer.
    :param machine_free_mb: memory the machine can still give to new reservations (its
        available memory, less the reserve, less what allocations reserved but do not
        use yet); None skips the machine check.
    """
    in_layer = list(layer_allocations)
    layer = Usage.of(in_layer)
    reasons: list[str] = []
    name = request.layer

    if layer.memory_mb + request.memory_mb > pool.memory_mb:
        reasons.append(f"layer {name} memory: {layer.memory_mb} of {pool.memory_mb} MB in use, "
                       f"{request.memory_mb} MB requested.")
    if layer.cpu_percent + request.cpu_percent > pool.cpu_percent + 1e-9:
        reasons.append(f"layer {name} CPU: {layer.cpu_percent:g}% of {pool.cpu_percent:g}% in use, "
                       f"{request.cpu_percent:g}% requested.")
    if layer.instances + 1 > pool.instances:
        reasons.append(f"layer {name} instances: all {pool.instances} in use.")
    if request.dedicated and layer.instances:
        reasons.append(f"layer {name}: a dedicated allocation needs the layer to itself, "
                       f"{layer.instances} allocation(s) active.")
    if layer.dedicated:
        reasons.append(f"layer {name}: held by a dedicated allocation.")

    if all_usage.memory_mb + request.memory_mb > limits.max_memory_mb:
        reasons.append(f"global memory cap: {all_usage.memory_mb} of {limits.max_memory_mb} MB in use, "
                       f"{request.memory_mb} MB requested.")
    if all_usage.cpu_percent + request.cpu_percent > limits.max_cpu_percent + 1e-9:
        reasons.append(f"global CPU cap: {all_usage.cpu_percent:g}% of {limits.max_cpu_percent:g}% in use, "
                       f"{request.cpu_percent:g}% requested.")
    if all_usage.instances + 1 > limits.max_parallel_instances:
        reasons.append(f"global instance cap: all {limits.max_parallel_instances} in use.")

    if machine_free_mb is not None and request.memory_mb > machine_free_mb:
        reasons.append(f"machine memory: only {max(machine_free_mb, 0):.0f} MB can still be reserved, "
                       f"{request.memory_mb} MB requested.")

    if reasons:
        return Decision(admitted=False, reasons=tuple(reasons))
    return Decision(admitted=True, slot=lowest_free_slot(in_layer, pool.instances))


def admit_shared(request: Request, *, pools: Mapping[str, SharedPool],
                 holders: Mapping[str, Iterable[Allocation]]) -> tuple[str, ...]:
    """The reasons ``request`` does not fit the shared pools it draws from (none: it fits).

    :param pools: the configuration's shared pools, by name.
    :param holders: per pool name, the active allocations that count against it (for a
        host-scoped pool, those of the requesting host only).
    """
    reasons: list[str] = []
    for name in request.pools:
        pool = pools.get(name)
        if pool is None:
            reasons.append(f"pool {name}: not in the configuration.")
            continue
        used = Usage.of(holders.get(name, ()))
        where = f"pool {name} ({pool.scope})"
        if used.instances + 1 > pool.instances:
            reasons.append(f"{where}: all {pool.instances} in use.")
        if pool.memory_mb is not None and used.memory_mb + request.memory_mb > pool.memory_mb:
            reasons.append(f"{where} memory: {used.memory_mb} of {pool.memory_mb} MB in use, "
                           f"{request.memory_mb} MB requested.")
        if pool.cpu_percent is not None and used.cpu_percent + request.cpu_percent > pool.cpu_percent + 1e-9:
            reasons.append(f"{where} CPU: {used.cpu_percent:g}% of {pool.cpu_percent:g}% in use, "
                           f"{request.cpu_percent:g}% requested.")
    return tuple(reasons)


def lowest_free_slot(allocations: Iterable[Allocation], instances: int) -> int:
    """The lowest slot index in 0..instances-1 that no allocation holds."""
    taken = {a.slot for a in allocations}
    for slot in range(max(instances, len(taken) + 1)):
        if slot not in taken:
            return slot
    return len(taken)


def usage_by_layer(allocations: Iterable[Allocation]) -> Mapping[str, list[Allocation]]:
    """Group allocations by layer."""
    grouped: dict[str, list[Allocation]] = {}
    for a in allocations:
        grouped.setdefault(a.layer, []).append(a)
    return grouped
