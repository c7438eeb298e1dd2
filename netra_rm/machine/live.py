"""Live use of the allocations held on this host: what each owner's process tree uses now,
beside what it reserved (``status``, ``monitor``, conflicts, OpenMetrics)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from netra_rm.machine.measure import tree_usage


def enforcement_of(pid: int, *, proc: str = "/proc") -> str | None:
    """The mechanism ``run --enforce`` holds process ``pid`` with (``NETRA_RM_ENFORCEMENT``
    in its environment), or None."""
    try:
        with open(f"{proc}/{pid}/environ", "rb") as f:
            data = f.read()
    except OSError:
        return None
    for entry in data.split(b"\0"):
        if entry.startswith(b"NETRA_RM_ENFORCEMENT="):
            return entry.split(b"=", 1)[1].decode(errors="replace") or None
    return None


def annotate(allocations: Iterable[MutableMapping[str, Any]], host: str, *, proc: str = "/proc") -> None:
    """Add ``used_memory_mb``, ``used_cpu_seconds`` and ``enforcement`` to each allocation
    (as :func:`~netra_rm.core.engine.allocation_view` shows it) whose owner is a process of
    this host. An owner holding several allocations is measured once; each of them shows
    the owner's use, and ``owner_reserved_mb`` the owner's reservations together."""
    by_owner: dict[int, list[MutableMapping[str, Any]]] = {}
    for a in allocations:
        owner = a.get("owner") or {}
        if owner.get("host") == host and isinstance(owner.get("pid"), int):
            by_owner.setdefault(owner["pid"], []).append(a)
    for pid, held in by_owner.items():
        usage = tree_usage(pid, proc=proc)
        if usage is None:
            continue
        mechanism = enforcement_of(pid, proc=proc)
        reserved = sum(int(a.get("memory_mb") or 0) for a in held)
        for a in held:
            a["used_memory_mb"] = round(usage.memory_mb, 1)
            a["used_cpu_seconds"] = round(usage.cpu_seconds, 2)
            a["owner_reserved_mb"] = reserved
            if mechanism is not None:
                a["enforcement"] = mechanism


def over_use(allocations: Iterable[Mapping[str, Any]]) -> list[str]:
    """A sentence for each owner using more memory than it reserved (see :func:`annotate`)."""
    found: list[str] = []
    seen: set[Any] = set()
    for a in allocations:
        used, reserved = a.get("used_memory_mb"), a.get("owner_reserved_mb")
        if used is None or reserved is None or used <= reserved:
            continue
        owner = (a.get("owner") or {}).get("pid")
        if owner in seen:
            continue
        seen.add(owner)
        found.append(f"allocation {a['id']} ({a['layer']}/{a['category']}) uses {used:.0f} MB, more than the "
                     f"{reserved} MB it reserved (owner pid {owner}).")
    return found
