"""The dependency graph: startup levels, cycles, and who is blocked when a real server is down."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netra_rm.config.graph import (
    DependencyCycleError,
    blocked_by,
    find_cycle,
    startup_levels,
    transitive_dependencies,
)
from netra_rm.errors import UnknownNameError
from netra_rm.services import ServiceSpec, check_services

from servers import DEFAULT_DEPENDS_ON, PASSWORDS, Server, closed_port

# --------------------------------------------------------------------------- pure graph


def test_default_graph_starts_in_four_levels() -> None:
    assert startup_levels(DEFAULT_DEPENDS_ON) == [
        ["clickhouse", "postgresql", "redis"], ["auth"], ["backend"], ["frontend", "websocket"],
    ]


def test_transitive_dependencies_in_startup_order() -> None:
    assert transitive_dependencies(DEFAULT_DEPENDS_ON, ["frontend"]) == [
        "postgresql", "redis", "auth", "backend", "frontend"]
    assert transitive_dependencies(DEFAULT_DEPENDS_ON, ["clickhouse"]) == ["clickhouse"]


def test_a_cycle_is_named() -> None:
    deps = {"a": ["b"], "b": ["c"], "c": ["a"], "d": []}
    assert find_cycle(deps) == ["a", "b", "c", "a"]
    with pytest.raises(DependencyCycleError) as caught:
        startup_levels(deps)
    assert "a -> b -> c -> a" in str(caught.value)
    assert find_cycle(DEFAULT_DEPENDS_ON) is None


def _dfs_cycle(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """The depth-first search netra-rm used before graphlib: the reference."""
    colour = dict.fromkeys(deps, 0)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for dep in deps.get(node, ()):
            if dep not in colour:
                continue
            if colour[dep] == 1:
                return stack[stack.index(dep):] + [dep]
            if colour[dep] == 0:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        colour[node] = 2
        return None

    for node in sorted(deps):
        if colour[node] == 0:
            found = visit(node)
            if found:
                return found
    return None


def _depth_levels(deps: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """The levels netra-rm computed before graphlib (longest path to a root): the reference."""
    level: dict[str, int] = {}

    def depth(node: str) -> int:
        if node not in level:
            level[node] = 1 + max((depth(d) for d in deps.get(node, ()) if d in deps), default=-1)
        return level[node]

    for node in deps:
        depth(node)
    levels: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for node in sorted(level):
        levels[level[node]].append(node)
    return levels


NAMES = st.sampled_from([f"s{i}" for i in range(9)])
# services and their dependencies, some on names that are not services (left out), some cyclic
GRAPHS = st.dictionaries(NAMES, st.lists(st.one_of(NAMES, st.just("elsewhere")), max_size=4), max_size=9)


@settings(max_examples=500, deadline=None, database=None)
@given(GRAPHS)
def test_graphlib_gives_the_same_levels_and_cycle_verdicts_as_the_search_it_replaced(
        deps: dict[str, list[str]]) -> None:
    reference = _dfs_cycle(deps)
    cycle = find_cycle(deps)
    assert (cycle is None) == (reference is None)
    if cycle is None:
        assert startup_levels(deps) == _depth_levels(deps)
        return
    # the cycle named is one: each service depends on the next, the first repeated last
    assert cycle[0] == cycle[-1] and len(set(cycle[:-1])) == len(cycle) - 1
    assert all(after in deps[before] for before, after in zip(cycle, cycle[1:]))
    with pytest.raises(DependencyCycleError) as caught:
        startup_levels(deps)
    assert caught.value.cycle == cycle


def test_blocked_by_names_the_root_causes() -> None:
    assert blocked_by(DEFAULT_DEPENDS_ON, ["redis"]) == {
        "auth": ["redis"], "backend": ["redis"], "frontend": ["redis"], "websocket": ["redis"]}
    # auth is down because of redis, so backend is blocked by redis, not by auth
    assert blocked_by(DEFAULT_DEPENDS_ON, ["redis", "auth"])["backend"] == ["redis"]
    assert blocked_by(DEFAULT_DEPENDS_ON, ["backend"]) == {
        "frontend": ["backend"], "websocket": ["backend"]}


def test_check_services_refuses_a_cycle_and_unknown_names() -> None:
    def spec(name: str, *deps: str) -> ServiceSpec:
        return ServiceSpec(name=name, kind="tcp", url="tcp://127.0.0.1:1", depends_on=deps)

    with pytest.raises(DependencyCycleError):
        check_services({"a": spec("a", "b"), "b": spec("b", "a")})
    with pytest.raises(UnknownNameError, match="unknown service 'nope'"):
        check_services({"a": spec("a")}, ["nope"])


# --------------------------------------------------------------------------- real servers


def test_redis_stopped_blocks_its_dependents(redis_server: Server,
                                             service_specs: dict[str, ServiceSpec]) -> None:
    with redis_server.stopped():
        results = check_services(service_specs)

        assert results["redis"].status == "unhealthy"
        assert results["redis"].reason == "refused"
        for name in ("auth", "backend", "frontend", "websocket"):
            assert results[name].status == "blocked", name
            assert results[name].blocked_by == ("redis",), name
            assert results[name].to_dict()["blocked_by"] == ["redis"]
            assert "Fix redis first" in results[name].remediation[0]
            assert not results[name].terminal  # redis may come back: worth waiting
        assert results["postgresql"].healthy and results["clickhouse"].healthy
        text = json.dumps({n: r.to_dict() for n, r in results.items()})
        assert not any(secret in text for secret in PASSWORDS)

    again = check_services(service_specs)
    assert all(r.healthy for r in again.values()), {n: r.error for n, r in again.items()}


def test_a_blocked_service_keeps_its_own_check(service_specs: dict[str, ServiceSpec]) -> None:
    specs = dict(service_specs)
    specs["redis"] = dataclasses.replace(specs["redis"], url=f"redis://127.0.0.1:{closed_port()}/0")
    results = check_services(specs, ["backend"])

    backend = results["backend"]
    assert list(results) == ["postgresql", "redis", "auth", "backend"]
    assert backend.status == "blocked" and backend.reason == "blocked"
    assert backend.version == "1.4.2"  # its own check ran and succeeded
    assert "blocked by redis (redis: refused)" in (backend.error or "")


def test_two_roots_are_both_named(service_specs: dict[str, ServiceSpec]) -> None:
    specs = dict(service_specs)
    specs["postgresql"] = dataclasses.replace(
        specs["postgresql"], url=f"postgresql://u:p@127.0.0.1:{closed_port()}/db")
    specs["redis"] = dataclasses.replace(specs["redis"], url=f"redis://127.0.0.1:{closed_port()}/0")
    results = check_services(specs)

    assert results["backend"].blocked_by == ("postgresql", "redis")
    assert results["frontend"].blocked_by == ("postgresql", "redis")
    assert results["clickhouse"].healthy


def test_terminal_root_makes_dependents_terminal(pg_server: Server,
                                                 service_specs: dict[str, ServiceSpec]) -> None:
    specs = dict(service_specs)
    specs["postgresql"] = dataclasses.replace(specs["postgresql"],
                                              url=pg_server.url_with(password="not-the-password"))
    results = check_services(specs, ["auth"])

    assert results["postgresql"].reason == "auth" and results["postgresql"].terminal
    assert results["auth"].status == "blocked" and results["auth"].terminal
    assert list(results) == ["postgresql", "redis", "auth"]


def test_names_select_only_what_they_need(service_specs: dict[str, ServiceSpec]) -> None:
    results = check_services(service_specs, ["websocket"])
    assert list(results) == ["postgresql", "redis", "auth", "backend", "websocket"]
    assert all(r.healthy for r in results.values())
    assert list(check_services(service_specs, [])) == []
