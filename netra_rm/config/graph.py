"""The service dependency graph: startup order in levels, cycles, and who blocks whom.

Order and cycles come from the standard library's :mod:`graphlib`; a test compares it
with the depth-first search netra-rm used before, on random graphs. A dependency on a name
that is not in the graph is left out here: the configuration reports it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from graphlib import CycleError, TopologicalSorter


class DependencyCycleError(ValueError):
    """The dependencies contain a cycle; ``cycle`` lists it, first name repeated last."""

    def __init__(self, cycle: Sequence[str]) -> None:
        self.cycle = list(cycle)
        super().__init__("dependency cycle: " + " -> ".join(self.cycle))


def _sorter(deps: Mapping[str, Sequence[str]]) -> TopologicalSorter[str]:
    sorter: TopologicalSorter[str] = TopologicalSorter()
    for node, needs in deps.items():
        sorter.add(node, *(dep for dep in needs if dep in deps))
    return sorter


def _as_read(found: Sequence[str]) -> list[str]:
    """graphlib's cycle (each name a dependency of the next, first repeated last) as
    people read it: each service followed by one it depends on, from the first name in
    alphabetical order (``auth -> redis -> auth``), so the same cycle is named alike."""
    ring = list(reversed(found))[:-1]
    first = ring.index(min(ring))
    ring = ring[first:] + ring[:first]
    return [*ring, ring[0]]


def find_cycle(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """Return one cycle in ``deps`` (``[a, b, a]``) or None when the graph is acyclic."""
    try:
        _sorter(deps).prepare()
    except CycleError as exc:
        return _as_read(exc.args[1])
    return None


def startup_levels(deps: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Topological order in levels: level 0 has no dependencies, level n needs only < n
    (and something at n - 1); names sorted within a level.

    Raises :class:`DependencyCycleError` when there is a cycle.
    """
    sorter = _sorter(deps)
    try:
        sorter.prepare()
    except CycleError as exc:
        raise DependencyCycleError(_as_read(exc.args[1])) from None
    levels: list[list[str]] = []
    while sorter.is_active():
        level = sorted(sorter.get_ready())
        levels.append(level)
        sorter.done(*level)
    return levels


def transitive_dependencies(deps: Mapping[str, Sequence[str]], roots: Iterable[str]) -> list[str]:
    """``roots`` and everything they depend on, in startup order."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        todo.extend(deps.get(node, ()))
    return [n for lvl in startup_levels(deps) for n in lvl if n in seen]


def blocked_by(deps: Mapping[str, Sequence[str]], unhealthy: Iterable[str]) -> dict[str, list[str]]:
    """For each service that cannot work because a dependency is down, the root causes.

    A root cause is an unhealthy service none of whose own dependencies is down, so
    ``backend`` with ``redis`` down is blocked by ``redis`` (through ``auth`` too), not by
    ``auth``. Services that are themselves unhealthy but whose dependencies are fine do
    not appear.
    """
    down = set(unhealthy)
    memo: dict[str, frozenset[str]] = {}

    def roots_of(node: str) -> frozenset[str]:
        # root causes among node's dependencies (not including node itself)
        if node in memo:
            return memo[node]
        memo[node] = frozenset()  # guards against cycles
        found: set[str] = set()
        for dep in deps.get(node, ()):
            dep_roots = roots_of(dep)
            if dep_roots:
                found |= dep_roots
            elif dep in down:
                found.add(dep)
        memo[node] = frozenset(found)
        return memo[node]

    result: dict[str, list[str]] = {}
    for node in deps:
        roots = roots_of(node)
        if roots:
            result[node] = sorted(roots)
    return result
