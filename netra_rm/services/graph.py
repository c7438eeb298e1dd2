"""The service dependency graph: startup order in levels, cycles, and who blocks whom."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence


class DependencyCycleError(ValueError):
    """The dependencies contain a cycle; ``cycle`` lists it, first name repeated last."""

    def __init__(self, cycle: Sequence[str]) -> None:
        self.cycle = list(cycle)
        super().__init__("dependency cycle: " + " -> ".join(self.cycle))


def find_cycle(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """Return one cycle in ``deps`` (``[a, b, a]``) or None when the graph is acyclic."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(deps, white)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = grey
        stack.append(node)
        for dep in deps.get(node, ()):
            if dep not in colour:
                continue  # unknown names are reported elsewhere
            if colour[dep] == grey:
                return stack[stack.index(dep):] + [dep]
            if colour[dep] == white:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        colour[node] = black
        return None

    for node in sorted(deps):
        if colour[node] == white:
            found = visit(node)
            if found:
                return found
    return None


def startup_levels(deps: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Topological order in levels: level 0 has no dependencies, level n needs only < n.

    Raises :class:`DependencyCycleError` when there is a cycle.
    """
    cycle = find_cycle(deps)
    if cycle:
        raise DependencyCycleError(cycle)
    level: dict[str, int] = {}

    def depth(node: str) -> int:
        if node not in level:
            known = [d for d in deps.get(node, ()) if d in deps]
            level[node] = 1 + max((depth(d) for d in known), default=-1)
        return level[node]

    for node in deps:
        depth(node)
    levels: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for node in sorted(level):
        levels[level[node]].append(node)
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
